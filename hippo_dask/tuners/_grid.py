"""Grid search: every configuration of a space, trained to the same number of steps."""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import TYPE_CHECKING

from hippo_dask.errors import InvalidSpaceError
from hippo_dask.trial import Trial
from hippo_dask.tuners._base import Tuner, wait_all

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike

__all__ = ["Grid"]


class Grid(Tuner):
    """Train every trial of ``space`` for ``steps`` steps.

    With sharing, the cost is the space's unique steps, not trials x steps: this is where a
    stage tree saves the most (the merge rate of the grid).

    Parameters
    ----------
    space
        A :class:`~hippo_dask.GridSpace`, a finite :class:`~hippo_dask.RandomSpace`, or any
        iterable of :class:`~hippo_dask.Trial`.
    metric, mode
        What ``result.best`` ranks by.
    steps
        Steps every trial trains.
    """

    def __init__(
        self, space: Iterable[Trial], metric: str, mode: str = "max", *, steps: int
    ) -> None:
        super().__init__(metric, mode)
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise InvalidSpaceError(f"Grid: `steps` must be a whole number >= 1, got {steps!r}")
        self.space = space
        self.steps = int(steps)

    async def run(self, study: StudyLike) -> None:
        trials = list(self.space)
        if not trials:
            raise InvalidSpaceError(
                "Grid: the space has no trials (is `where` filtering out everything?)"
            )
        await wait_all(study.train(trial, self.steps) for trial in trials)
