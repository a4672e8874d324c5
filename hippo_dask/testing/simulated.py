"""A simulated trainer: no model, exact bookkeeping, optional fixed seconds per step.

Its "weights" are a hash chain over the sequential values of every step trained, so two runs
agree exactly when they trained the same values in the same order, however the engine split,
paused, moved and resumed them. It can also append every ``train(steps)`` call to a log file
(``config["log"]``), which lets tests count executed steps across worker processes, and sleep a
fixed time per step (``config["seconds_per_step"]``) to stand in for compute in benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from hippo_dask.trainer import Trainer

__all__ = ["SimulatedTrainer", "chain_digest", "read_log"]


def chain_digest(previous: str, hp: Mapping[str, Any]) -> str:
    """The simulated weights after one more step trained at values ``hp``."""
    body = json.dumps(sorted(hp.items()), default=repr)
    return hashlib.sha256(f"{previous}|{body}".encode()).hexdigest()


def read_log(path: str) -> list[dict[str, Any]]:
    """What a :class:`SimulatedTrainer` logged (one JSON object per line): ``train`` calls
    (``{"pid", "steps", "start"}``) and gate waits (``{"pid", "waiting"}``)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class SimulatedTrainer(Trainer):
    """Stands in for a model: ``evaluate()`` gives ``{"score", "steps"}`` from the hash chain.

    Config keys (all optional): ``seconds_per_step`` (sleep per step), ``log`` (file to append
    ``{"pid", "steps", "start"}`` per ``train`` call), ``fail_at`` (raise ``RuntimeError`` when
    asked to train past this step), ``fail_in`` (``[method, step]``: raise ``ValueError`` in
    ``__init__``, ``setup``, ``train``, ``evaluate`` or ``state_dict`` once the trainer has
    trained ``step`` steps), ``fail_once`` (a marker path: the first ``fail_in`` failure creates
    it, later calls pass, to test retries), ``nan`` (``evaluate`` reports a NaN score; a string such as ``"inf"``: that score), ``gate``
    (``[step, path]``: ``setup`` at that step logs ``{"waiting": step}`` and blocks until
    ``path`` exists, so a test can act while a stage is known to be mid-way, without sleeping).
    Every other fixed value just takes part in the seed.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        ignored = ("log", "gate", "seconds_per_step", "fail_in", "fail_once", "nan", "crash_at")
        seed = json.dumps(
            sorted((k, v) for k, v in self.config.items() if k not in ignored), default=repr
        )
        self.digest = hashlib.sha256(seed.encode()).hexdigest()
        self.steps = 0
        self.hp: dict[str, Any] = {}
        self._maybe_fail("__init__")

    def _maybe_fail(self, method: str) -> None:
        fail = self.config.get("fail_in")
        if fail is None or fail[0] != method or self.steps < fail[1]:
            return
        marker = self.config.get("fail_once")
        if marker is not None:
            if os.path.exists(marker):
                return
            with open(marker, "w", encoding="utf-8"):
                pass
        raise ValueError(f"simulated failure in {method} at step {self.steps}")

    def setup(self, hp: Mapping[str, Any]) -> None:
        self._maybe_fail("setup")
        self.hp.update(hp)
        gate = self.config.get("gate")
        if gate is not None and self.steps == gate[0]:
            self._log({"pid": os.getpid(), "waiting": self.steps})
            deadline = time.monotonic() + 120
            while not os.path.exists(gate[1]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gate {gate[1]} never opened")
                time.sleep(0.005)

    def _log(self, entry: Mapping[str, Any]) -> None:
        log = self.config.get("log")
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(dict(entry)) + "\n")

    def train(self, steps: int) -> None:
        self._maybe_fail("train")
        crash_at = self.config.get("crash_at")
        if crash_at is not None and self.steps + steps > crash_at:
            os._exit(17)
        fail_at = self.config.get("fail_at")
        if fail_at is not None and self.steps + steps > fail_at:
            raise RuntimeError(f"simulated failure past step {fail_at}")
        self._log({"pid": os.getpid(), "steps": steps, "start": self.steps})
        for _ in range(steps):
            self.digest = chain_digest(self.digest, self.hp)
        self.steps += steps
        seconds = float(self.config.get("seconds_per_step", 0.0))
        if seconds:
            time.sleep(seconds * steps)

    def evaluate(self) -> dict[str, float]:
        self._maybe_fail("evaluate")
        odd = self.config.get("nan")
        score = int(self.digest[:12], 16) / float(16**12)
        if odd is True:
            score = float("nan")
        elif isinstance(odd, str):
            score = float(odd)
        return {"score": score, "steps": float(self.steps)}

    def state_dict(self) -> dict[str, Any]:
        self._maybe_fail("state_dict")
        return {"digest": self.digest, "steps": self.steps, "hp": dict(self.hp)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.digest = str(state["digest"])
        self.steps = int(state["steps"])
        self.hp = dict(state["hp"])
