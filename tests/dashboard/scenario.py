"""A real study for the dashboard tests: a 12-trial grid plus two trials a gate holds.

The simulated trainer's gate blocks the two held trials (they share a root of their own) at
step 20, so a test can look at a study that is known to be live and half done, without
sleeping, then open the gate and look at the finished study.
"""

from __future__ import annotations

import threading
from pathlib import Path

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer, read_log

STEPS = 60
GATE_STEP = 20


def trials(log: str, gate: str, seconds_per_step: float = 0.0) -> list[hd.Trial]:
    """The grid's 12 trials and the 2 held ones."""
    grid = hd.GridSpace(
        lr=[
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 50]),
            seq.Warmup(5, 0.1, then=seq.Exponential(0.1, gamma=0.95)),
        ],
        batch_size=[seq.Constant(128), seq.MultiStep([128, 256], milestones=[25])],
        optimizer=["sgd", "adam"],
        log=[log],
        seconds_per_step=[seconds_per_step],
    )
    held = [  # their batch size changes at the gate's step, where setup() waits for the gate
        hd.Trial(
            lr=lr,
            batch_size=seq.MultiStep([128, 256], milestones=[GATE_STEP]),
            optimizer="adam",
            log=log,
            seconds_per_step=seconds_per_step,
            gate=[GATE_STEP, gate],
        )
        for lr in (
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 50]),
        )
    ]
    return [*grid, *held]


class Listed(hd.Tuner):
    """Trains a given list of trials to ``steps`` steps (a grid over a list)."""

    def __init__(self, trials: list[hd.Trial], steps: int) -> None:
        super().__init__(metric="score", mode="max")
        self.trials = trials
        self.steps = steps

    async def run(self, study: hd.Study) -> None:
        await hd.wait_all([study.train(t, self.steps) for t in self.trials])


class Background:
    """``study.tune`` on a thread of its own; :meth:`result` joins it."""

    def __init__(self, study: hd.Study, tuner: hd.Tuner, **kwargs: object) -> None:
        self._outcome: dict[str, object] = {}

        def go() -> None:
            try:
                self._outcome["result"] = study.tune(tuner, **kwargs)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - re-raised in result()
                self._outcome["error"] = exc

        self._thread = threading.Thread(target=go, name="study-tune", daemon=True)
        self._thread.start()

    def result(self, timeout: float = 120.0) -> hd.Result:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the study did not finish within {timeout} s")
        if "error" in self._outcome:
            raise self._outcome["error"]  # type: ignore[misc]
        return self._outcome["result"]  # type: ignore[return-value]


def gate_is_waiting(log: str) -> bool:
    """Whether a held stage is blocked at the gate."""
    return any(entry.get("waiting") == GATE_STEP for entry in read_log(log))


def prepare(
    storage: Path,
    client: object,
    name: str = "grid",
    seconds_per_step: float = 0.0,
    eval_every: int | None = 10,
) -> tuple[hd.Study, str, str, list[hd.Trial]]:
    """The study (its storage exists from here on), its log, its gate and its trials."""
    log, gate = str(storage / "train.log"), str(storage / "gate")
    chosen = trials(log, gate, seconds_per_step)
    study = hd.Study(
        name,
        SimulatedTrainer,
        storage=str(storage / "runs"),
        client=client,  # type: ignore[arg-type]
        eval_every=eval_every,
    )
    return study, log, gate, chosen


def start(
    storage: Path,
    client: object,
    name: str = "grid",
    seconds_per_step: float = 0.0,
    eval_every: int | None = 10,
) -> tuple[hd.Study, Background, str, str, list[hd.Trial]]:
    """Start the study on ``client``; returns it, its run, the log, the gate and the trials."""
    study, log, gate, chosen = prepare(storage, client, name, seconds_per_step, eval_every)
    return study, Background(study, Listed(chosen, STEPS), progress=False), log, gate, chosen
