"""Hyperband: successive halving over several trade-offs between many trials and long training.

Li, Jamieson, DeSalvo, Rostamizadeh & Talwalkar, "Hyperband: A Novel Bandit-Based Approach to
Hyperparameter Optimization", JMLR 18 (2018), Algorithm 1. The bracket arithmetic is
:func:`~hippo_dask.tuners._rungs.hyperband_brackets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import TYPE_CHECKING

import numpy as np

from hippo_dask.errors import InvalidSpaceError
from hippo_dask.space import RandomSpace
from hippo_dask.trial import Trial
from hippo_dask.tuners._base import wait_all
from hippo_dask.tuners._common import DecisionRecord, StoppingTuner, draw_trials
from hippo_dask.tuners._rungs import check_whole, hyperband_brackets
from hippo_dask.tuners._sha import successive_halving

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike

__all__ = ["Hyperband"]


class Hyperband(StoppingTuner):
    """Hyperband (Li et al., JMLR 2018): successive halving in brackets from aggressive to none.

    With ``R = max_steps / min_steps`` and ``s_max = floor(log_eta(R))``, bracket ``s``
    (``s_max`` down to 0) starts ``n = ceil((s_max + 1) / (s + 1) * eta^s)`` new trials at
    ``max_steps * eta^-s`` steps and runs successive halving on them; the last bracket is plain
    random search at ``max_steps``. For ``max_steps=81, reduction=3`` the brackets start 81, 34,
    15, 8 and 5 trials (the paper's Table 1; see :attr:`brackets`).

    All brackets run at once: they are independent (each decides only on its own trials'
    results), so running them side by side changes no decision and keeps the workers busy, and
    a trial drawn into two brackets trains its shared steps once.

    Parameters
    ----------
    space
        A :class:`~hippo_dask.RandomSpace` (one ``space.sample(total)``, split into brackets in
        order), or a :class:`~hippo_dask.GridSpace` / iterable of :class:`~hippo_dask.Trial`
        (each bracket draws its ``n`` without replacement with ``seed``; the same trial may be
        drawn into several brackets). The space must hold at least as many trials as the
        largest bracket.
    metric, mode
        What trials are ranked by; NaN, infinities and failed trials rank worst.
    max_steps
        ``R`` in steps: what the surviving trials of every bracket train to.
    reduction
        ``eta`` (an int >= 2).
    min_steps
        The fewest steps a trial trains (the unit of ``R``).
    seed
        Seed of this tuner's own ``numpy`` generator.

    Attributes
    ----------
    brackets
        Per bracket, its rungs ``[(n_i, steps_i), ...]``.
    decisions
        After ``run``: every ``PROMOTE`` / ``STOP`` decision, bracket by bracket.

    See Also
    --------
    SHA, ASHA

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.RandomSpace(lr=seq.Constant(hd.loguniform(1e-3, 1)), random_state=0)
    >>> tuner = hd.tuners.Hyperband(space, "val_acc", max_steps=81, reduction=3)
    >>> [bracket[0] for bracket in tuner.brackets]
    [(81, 1), (34, 3), (15, 9), (8, 27), (5, 81)]
    """

    def __init__(
        self,
        space: Iterable[Trial],
        metric: str,
        mode: str = "max",
        *,
        max_steps: int,
        reduction: int = 3,
        min_steps: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode)
        self.min_steps = check_whole("Hyperband", "min_steps", min_steps, 1)
        self.max_steps = check_whole(
            "Hyperband",
            "max_steps",
            max_steps,
            self.min_steps,
            f"it must be at least min_steps={self.min_steps}",
        )
        self.reduction = check_whole("Hyperband", "reduction", reduction, 2, "e.g. reduction=3")
        self.seed = check_whole("Hyperband", "seed", seed, 0)
        self.space = space
        self.brackets = hyperband_brackets(self.max_steps, self.reduction, self.min_steps)
        if not isinstance(space, RandomSpace) and isinstance(space, Sized):
            self._check_size(len(space))

    def _check_size(self, size: int) -> None:
        largest = max(bracket[0][0] for bracket in self.brackets)
        if size < largest:
            raise InvalidSpaceError(
                f"Hyperband: the first bracket starts {largest} trials, but the space has only "
                f"{size}; use a RandomSpace or a larger space, or fewer brackets (a smaller "
                f"max_steps/min_steps = {self.max_steps}/{self.min_steps}, or a larger "
                f"reduction than {self.reduction})"
            )

    async def run(self, study: StudyLike) -> None:
        self._start()
        rng = np.random.default_rng(self.seed)
        sizes = [bracket[0][0] for bracket in self.brackets]
        if isinstance(self.space, RandomSpace):
            pool = draw_trials("Hyperband", self.space, sum(sizes), rng)
            starts = np.cumsum([0, *sizes]).tolist()
            drawn = [pool[a:b] for a, b in zip(starts, starts[1:])]
        else:
            space = draw_trials("Hyperband", self.space, None, rng)
            self._check_size(len(space))
            drawn = [draw_trials("Hyperband", space, n, rng) for n in sizes]
        outcomes = await wait_all(
            successive_halving(self, study, trials, bracket)
            for trials, bracket in zip(drawn, self.brackets)
        )
        per_bracket: list[tuple[list[DecisionRecord], list[Trial]]] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            per_bracket.append(outcome)
        for decisions, finished in per_bracket:
            for record in decisions:
                self._decide(*record)
            for trial in finished:
                self._finish(trial)
