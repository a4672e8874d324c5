"""Random search: draw trials, train each to the same number of steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from hippo_dask.trial import Trial
from hippo_dask.tuners._base import Tuner
from hippo_dask.tuners._common import attempt_all, draw_trials
from hippo_dask.tuners._rungs import check_whole

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike

__all__ = ["Random"]


class Random(Tuner):
    """Random search (Bergstra & Bengio, JMLR 2012): ``n_trials`` trials, each trained to
    ``steps``.

    With sharing, trials drawn from schedules that agree on a prefix train it once.

    Parameters
    ----------
    space
        A :class:`~hippo_dask.RandomSpace` (trials are ``space.sample(n_trials)``, so its
        ``random_state`` decides them), or a :class:`~hippo_dask.GridSpace` or any finite
        iterable of :class:`~hippo_dask.Trial` (``n_trials`` of them are drawn without
        replacement with ``seed``; ``None`` takes all).
    n_trials
        How many trials to train.
    metric, mode
        What ``result.best`` ranks by.
    steps
        Steps every trial trains.
    seed
        Seed of this tuner's own ``numpy`` generator.

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.RandomSpace(lr=seq.Constant(hd.loguniform(1e-3, 1)), random_state=0)
    >>> tuner = hd.tuners.Random(space, 16, metric="val_acc", steps=100)
    """

    def __init__(
        self,
        space: Iterable[Trial],
        n_trials: int | None,
        metric: str,
        mode: str = "max",
        *,
        steps: int,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode)
        self.space = space
        self.n_trials = None if n_trials is None else check_whole("Random", "n_trials", n_trials, 1)
        self.steps = check_whole("Random", "steps", steps, 1)
        self.seed = check_whole("Random", "seed", seed, 0)
        self.trials: list[Trial] = []

    async def run(self, study: StudyLike) -> None:
        rng = np.random.default_rng(self.seed)
        self.trials = draw_trials("Random", self.space, self.n_trials, rng)
        await attempt_all(study, ((trial, self.steps) for trial in self.trials))
