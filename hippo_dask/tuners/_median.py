"""Median stopping: stop a trial whose best result trails the median of its peers' averages.

Golovin, Solnik, Moitra, Kochanski, Karro & Sculley, "Google Vizier: A Service for Black-Box
Optimization", KDD 2017, section 3.2.2. The rule itself is
:func:`~hippo_dask.tuners._rungs.median_stop`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from hippo_dask.errors import InvalidSpaceError
from hippo_dask.trial import Trial
from hippo_dask.tuners._common import StoppingTuner, attempt_all, draw_trials
from hippo_dask.tuners._rungs import Decision, check_whole, median_stop

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike

__all__ = ["MedianStopping"]


class MedianStopping(StoppingTuner):
    """Vizier's median stopping rule (Golovin et al., KDD 2017).

    All trials train in increments of ``interval`` steps, each increment one more request
    (resumed from the last, so it costs only the new steps), until ``steps``. At every
    evaluation step ``s >= grace_steps`` before the last, a trial stops when its *best* score so
    far is strictly worse than the median of the *running averages* (over the evaluation steps
    up to ``s``) of the other trials that reached ``s``, as Vizier states the rule; with fewer
    than ``min_trials`` such trials it continues.

    The trials advance together, one increment at a time, and all of an increment's decisions
    use the same results, so they depend on neither timing nor the order of trials. Vizier
    compares against *completed* trials; with every trial advancing together the peers are
    the trials still running at ``s`` (and those stopped or failed at ``s`` itself).

    Parameters
    ----------
    space
        A :class:`~hippo_dask.RandomSpace` (``space.sample(n_trials)``), or a
        :class:`~hippo_dask.GridSpace` / iterable of :class:`~hippo_dask.Trial` (``n_trials``
        drawn without replacement with ``seed``; ``None``: all of them).
    metric, mode
        What trials are ranked by; NaN, infinities and a failure count as the worst score.
    steps
        Steps a trial that is never stopped trains.
    grace_steps
        No trial is stopped before it has trained this many steps.
    interval
        Steps between evaluations (the last increment may be shorter, to end at ``steps``).
    n_trials
        How many trials.
    min_trials
        Fewest peers at a step for the rule to stop anything.
    seed
        Seed of this tuner's own ``numpy`` generator.

    Attributes
    ----------
    points
        The evaluation steps.
    decisions
        After ``run``: per evaluation step from ``grace_steps`` on, a ``CONTINUE`` or ``STOP``
        for each trial still running, in the trials' order.

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.RandomSpace(lr=seq.Constant(hd.loguniform(1e-3, 1)), random_state=0)
    >>> tuner = hd.tuners.MedianStopping(space, "val_acc", steps=100, grace_steps=20,
    ...                                  interval=20, n_trials=16)
    >>> tuner.points
    [20, 40, 60, 80, 100]
    """

    def __init__(
        self,
        space: Iterable[Trial],
        metric: str,
        mode: str = "max",
        *,
        steps: int,
        grace_steps: int,
        interval: int,
        n_trials: int | None = None,
        min_trials: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode)
        self.steps = check_whole("MedianStopping", "steps", steps, 1)
        self.interval = check_whole("MedianStopping", "interval", interval, 1)
        if self.interval > self.steps:
            raise InvalidSpaceError(
                f"MedianStopping: `interval` is {interval}, more than steps={steps}, so no trial "
                f"would be evaluated before its end; pass interval <= {steps}"
            )
        self.grace_steps = check_whole("MedianStopping", "grace_steps", grace_steps, 0)
        if self.grace_steps >= self.steps:
            raise InvalidSpaceError(
                f"MedianStopping: `grace_steps` is {grace_steps}, but trials end at steps={steps}, "
                f"so none could ever be stopped; pass grace_steps < {steps}"
            )
        self.n_trials = (
            None if n_trials is None else check_whole("MedianStopping", "n_trials", n_trials, 1)
        )
        self.min_trials = check_whole("MedianStopping", "min_trials", min_trials, 1)
        self.seed = check_whole("MedianStopping", "seed", seed, 0)
        self.space = space
        self.points = [*range(self.interval, self.steps, self.interval), self.steps]

    async def run(self, study: StudyLike) -> None:
        self._start()
        rng = np.random.default_rng(self.seed)
        trials = draw_trials("MedianStopping", self.space, self.n_trials, rng)
        history: list[list[float]] = [[] for _ in trials]
        running = list(range(len(trials)))
        for steps in self.points:
            results = await attempt_all(study, ((trials[i], steps) for i in running))
            for i, metrics in zip(running, results):
                history[i].append(self.score(metrics))
            alive = [i for i, metrics in zip(running, results) if metrics is not None]
            if steps == self.steps:
                for i in alive:
                    self._finish(trials[i])
                break
            if steps >= self.grace_steps:
                decided = {
                    i: median_stop(
                        history[i], [history[j] for j in running if j != i], self.min_trials
                    )
                    for i in alive
                }
                for i in alive:
                    self._decide(trials[i], steps, decided[i])
                alive = [i for i in alive if decided[i] is Decision.CONTINUE]
            running = alive
            if not running:
                break
