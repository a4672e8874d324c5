"""What a ``tune`` run returns (:class:`Result`: every trial, the best one, the savings) and how
:class:`~hippo_dask.Study` gathers it while the tuner runs (``_Run``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hippo_dask.plan import saved_fraction
from hippo_dask.progress import TuneProgress
from hippo_dask.trial import Trial

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    from hippo_dask.tuners import Tuner

__all__ = ["Result", "StudyStats", "TrialResult"]


@dataclass
class TrialResult:
    """One trial of a run: its configuration, the steps it reached, metrics or error."""

    trial: Trial
    steps: int
    status: str
    metrics: dict[str, float] | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        """Fixed values and sequences, by name."""
        return self.trial.config


@dataclass(frozen=True)
class StudyStats:
    """What one ``tune`` run asked for, what it trained, and what sharing saved.

    ``requested_steps`` is what a trial-by-trial run would train (each trial's longest
    request); ``unique_steps`` what remains after merging shared prefixes; ``executed_steps``
    what this run actually trained (less when an earlier run left checkpoints, more if a lost
    worker or a bad checkpoint forced retraining). ``worker_seconds`` is the time of every stage
    on its worker, all included; ``trial_by_trial_seconds`` estimates a trial-by-trial run of the
    same requests at the same all-inclusive price per step: ``requested_steps x worker_seconds /
    executed_steps`` (:func:`hippo_dask.plan.trial_by_trial_seconds`; when this run trained
    nothing, the plan's mean measured seconds per step, and 0.0 if nothing was ever measured).
    The dashboard shows the same figures for the same requests.
    ``train_seconds`` is the part of ``worker_seconds`` spent inside ``Trainer.train``; the rest
    is loading, evaluating, checkpointing and task overhead. The ``stages_*`` counts say where
    stages got their starting state: from the previous stage of their chain in the worker's
    memory, from a checkpoint, or from scratch.
    """

    trials: int
    requested_steps: int
    unique_steps: int
    merge_rate: float
    executed_steps: int
    stages: int
    worker_seconds: float
    trial_by_trial_seconds: float
    wall_seconds: float
    train_seconds: float = 0.0
    stages_resumed_in_memory: int = 0
    stages_resumed_from_checkpoint: int = 0
    stages_from_scratch: int = 0

    @property
    def saved_seconds(self) -> float:
        """Worker-seconds a trial-by-trial run would have spent beyond this one."""
        return self.trial_by_trial_seconds - self.worker_seconds

    @property
    def saved_fraction(self) -> float | None:
        """Share of the trial-by-trial worker time this run did not spend (``None`` without an
        estimate); the dashboard's "saved"."""
        return saved_fraction(self.worker_seconds, self.trial_by_trial_seconds)


@dataclass
class Result:
    """The outcome of ``study.tune``: every trial, the best one, and the savings."""

    trials: pd.DataFrame
    best: TrialResult | None
    stats: StudyStats
    records: list[TrialResult] = field(repr=False, default_factory=list)


class _Run:
    """The requests of one ``tune`` call, for its result and statistics."""

    def __init__(self, tuner: Tuner | None, progress: TuneProgress) -> None:
        self.tuner = tuner
        self.progress = progress
        self.records: dict[str, TrialResult] = {}
        self.started = time.time()
        self.fatal: BaseException | None = None

    def record(
        self,
        trial: Trial,
        steps: int,
        metrics: dict[str, float] | None,
        error: BaseException | None,
    ) -> None:
        old = self.records.get(trial.id)
        if old is not None and old.steps > steps:
            return  # an earlier rung of a longer request does not replace it
        result = TrialResult(trial, steps, "done" if error is None else "failed", metrics)
        if error is not None:
            result.error = str(error)
            result.error_type = getattr(error, "exc_type", type(error).__name__)
            result.traceback = getattr(error, "worker_traceback", None)
            if isinstance(error, asyncio.CancelledError):
                result.status = "cancelled"
        self.records[trial.id] = result
