"""A fake study for tuner decision tests: metrics from a table, every request logged.

Tuners see only ``await study.train(trial, steps)``, so a small class with that coroutine is
all a decision test needs (like distributed's tests of ``AdaptiveCore`` with a fake subclass).
``shuffle=seed`` answers pending requests in a random order instead of at once, to show that
a tuner's decisions do not depend on which request happens to finish first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

import hippo_dask as hd

Value = float | dict[str, float] | BaseException
Table = Callable[[hd.Trial, int], Value]


def failure(message: str = "simulated failure") -> hd.TrialFailedError:
    """What ``study.train`` raises when a stage the trial needs failed."""
    return hd.TrialFailedError(
        message, exc_type="RuntimeError", stage="stage-x", worker_traceback="Traceback: simulated"
    )


def name(trial: hd.Trial) -> Any:
    """The fixed value ``x`` that names a test trial (else its id)."""
    return trial.fixed.get("x", trial.id)


class FakeStudy:
    """``train`` answers from ``table(trial, steps)``: a score, a metrics dict, or an exception
    to raise; ``requests`` lists ``(name, steps)`` in the order the tuner asked."""

    def __init__(self, table: Table, *, shuffle: int | None = None) -> None:
        self.table = table
        self.requests: list[tuple[Any, int]] = []
        self.answered: list[tuple[Any, int]] = []
        self.in_flight = 0
        self.peak = 0  # most requests in flight at once
        self._rng = None if shuffle is None else np.random.default_rng(shuffle)
        self._pending: list[asyncio.Future[None]] = []
        self._answerer: asyncio.Task[None] | None = None

    async def train(self, trial: hd.Trial, steps: int) -> dict[str, float]:
        self.requests.append((name(trial), steps))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self._rng is not None:
                gate = asyncio.get_running_loop().create_future()
                self._pending.append(gate)
                if self._answerer is None or self._answerer.done():
                    self._answerer = asyncio.ensure_future(self._answer())
                await gate
        finally:
            self.in_flight -= 1
        self.answered.append((name(trial), steps))
        value = self.table(trial, steps)
        if isinstance(value, BaseException):
            raise value
        return value if isinstance(value, dict) else {"score": float(value)}

    async def _answer(self) -> None:
        """Open pending requests one at a time, picked at random, yielding to the loop between."""
        assert self._rng is not None
        while self._pending:
            for _ in range(int(self._rng.integers(1, 4))):  # let more requests arrive
                await asyncio.sleep(0)
            gate = self._pending.pop(int(self._rng.integers(len(self._pending))))
            gate.set_result(None)


def run(tuner: hd.Tuner, study: FakeStudy) -> FakeStudy:
    """Run ``tuner`` against ``study`` to the end; the study, for its request log."""
    asyncio.run(tuner.run(study))  # type: ignore[arg-type]
    return study


def trials(n: int, **extra: Any) -> list[hd.Trial]:
    """``n`` trials named ``x=0..n-1`` (a constant lr, so each has a sequence too)."""
    return [hd.Trial(x=i, lr=hd.seq.Constant(0.1), **extra) for i in range(n)]


def decisions(tuner: Any) -> list[tuple[Any, int, str]]:
    """A tuner's decisions as ``(name, steps, decision value)``."""
    return [(name(r.trial), r.steps, r.decision.value) for r in tuner.decisions]
