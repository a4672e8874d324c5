"""Helpers every tuner in this package shares.

:func:`draw_trials` picks the trials a tuner works on from its own seed; :func:`attempt` and
:func:`attempt_all` turn a failed trial into a result (``None``, ranked worst) instead of an
exception; :class:`StoppingTuner` keeps the decisions of a tuner that stops trials early and
reports those trials as ``"stopped"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from hippo_dask.errors import InvalidSpaceError, TrialFailedError
from hippo_dask.space import RandomSpace
from hippo_dask.trial import Trial
from hippo_dask.tuners._base import Tuner, wait_all
from hippo_dask.tuners._rungs import Decision, check_whole

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike

__all__ = ["DecisionRecord", "StoppingTuner", "attempt", "attempt_all", "draw_trials"]


def draw_trials(
    who: str, space: Iterable[Trial], n_trials: int | None, rng: np.random.Generator
) -> list[Trial]:
    """The trials a tuner works on, in the order it starts them.

    A :class:`~hippo_dask.RandomSpace` gives ``space.sample(n_trials)`` (its ``random_state``
    decides the draws; ``n_trials=None`` takes the space's own ``n_trials``). Any other finite
    iterable (a :class:`~hippo_dask.GridSpace`, a list of trials) gives all its trials when
    ``n_trials`` is ``None``, else ``n_trials`` of them drawn without replacement by ``rng``,
    kept in the space's order.
    """
    if n_trials is not None:
        n_trials = check_whole(who, "n_trials", n_trials, 1)
    if isinstance(space, RandomSpace):
        count = n_trials if n_trials is not None else space.n_trials
        if count is None:
            raise InvalidSpaceError(
                f"{who}: `n_trials` is None and the RandomSpace has no fixed size; pass "
                f"n_trials=... (e.g. n_trials=32)"
            )
        return space.sample(count)
    if isinstance(space, (str, bytes)) or not isinstance(space, Iterable):
        raise InvalidSpaceError(
            f"{who}: `space` must be a GridSpace, a RandomSpace or an iterable of Trial, "
            f"got {space!r}"
        )
    trials = list(space)
    for trial in trials:
        if not isinstance(trial, Trial):
            raise InvalidSpaceError(
                f"{who}: `space` yielded {trial!r}, not a hippo_dask.Trial; build trials with "
                "hd.Trial(...) or use a GridSpace / RandomSpace"
            )
    if not trials:
        raise InvalidSpaceError(
            f"{who}: the space has no trials (is `where` filtering out everything?)"
        )
    if n_trials is None:
        return trials
    if n_trials > len(trials):
        raise InvalidSpaceError(
            f"{who}: `n_trials` is {n_trials}, but the space has only {len(trials)} trials; "
            f"pass n_trials <= {len(trials)}, or n_trials=None to use them all"
        )
    chosen = rng.choice(len(trials), size=n_trials, replace=False)
    return [trials[int(i)] for i in sorted(chosen)]


async def attempt(study: StudyLike, trial: Trial, steps: int) -> dict[str, float] | None:
    """``await study.train(trial, steps)``, with ``None`` for a trial that failed.

    A failed trial is a result (the worst one), not a reason to stop tuning. Errors that stop
    the whole study (storage gone, a metric the trainer does not report) propagate.
    """
    try:
        return await study.train(trial, steps)
    except TrialFailedError:
        return None


async def attempt_all(
    study: StudyLike, requests: Iterable[tuple[Trial, int]]
) -> list[dict[str, float] | None]:
    """:func:`attempt` for every ``(trial, steps)`` at once; results in order.

    Every request runs to its end even if one raises an error that stops the study; the first
    such error is then raised.
    """
    outcomes = await wait_all(attempt(study, trial, steps) for trial, steps in requests)
    results: list[dict[str, float] | None] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        results.append(outcome)
    return results


class DecisionRecord(NamedTuple):
    """One decision: about ``trial``, after ``steps`` steps."""

    trial: Trial
    steps: int
    decision: Decision


class StoppingTuner(Tuner):
    """A tuner that stops trials early: keeps its decisions in :attr:`decisions`.

    A trial with a ``STOP`` decision that never reached the tuner's final steps shows as
    ``"stopped"`` in ``result.trials``. The decisions start afresh with each ``run``.
    """

    def __init__(self, metric: str, mode: str = "max") -> None:
        super().__init__(metric, mode)
        #: Every decision of the last run, in the order made (per bracket for Hyperband).
        self.decisions: list[DecisionRecord] = []
        self._stopped: set[str] = set()
        self._finished: set[str] = set()

    def _start(self) -> None:
        self.decisions = []
        self._stopped = set()
        self._finished = set()

    def _decide(self, trial: Trial, steps: int, decision: Decision) -> None:
        self.decisions.append(DecisionRecord(trial, steps, decision))
        if decision is Decision.STOP:
            self._stopped.add(trial.id)

    def _finish(self, trial: Trial) -> None:
        """``trial`` reached the final steps: it was not stopped, whatever a bracket said."""
        self._finished.add(trial.id)

    def stopped(self) -> set[str]:
        """Ids of the trials this tuner stopped early in its last run."""
        return self._stopped - self._finished

    def trial_status(self, trial: Trial) -> str | None:
        if trial.id in self._stopped and trial.id not in self._finished:
            return "stopped"
        return None
