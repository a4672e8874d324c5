"""Synchronous successive halving (SHA): train many trials briefly, keep the best, repeat.

Jamieson & Talwalkar, "Non-stochastic Best Arm Identification and Hyperparameter
Optimization", AISTATS 2016; the rung sizes ``n_i = floor(n * eta^-i)`` as in Li et al.,
"Hyperband", JMLR 2018. A promoted trial is simply requested again at the next rung's steps:
the plan resumes it from its checkpoint, so a promotion costs only the new steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hippo_dask.trial import Trial
from hippo_dask.tuners._common import DecisionRecord, StoppingTuner, attempt_all, draw_trials
from hippo_dask.tuners._rungs import Decision, check_whole, rung_steps, sha_rung_sizes, top_k

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike, Tuner

__all__ = ["SHA", "successive_halving"]


async def successive_halving(
    tuner: Tuner, study: StudyLike, trials: Sequence[Trial], rungs: Sequence[tuple[int, int]]
) -> tuple[list[DecisionRecord], list[Trial]]:
    """Run one bracket of successive halving; its decisions and the trials that finished.

    Parameters
    ----------
    tuner
        Scores the metrics (:meth:`~hippo_dask.Tuner.score`).
    study
        Where ``train`` is awaited.
    trials
        The first rung, in order: ties go to the trial listed first.
    rungs
        ``[(n_i, steps_i), ...]``: rung ``i`` trains ``n_i`` trials to ``steps_i``
        (``n_0 == len(trials)``); after rung ``i`` the best ``n_{i+1}`` are promoted.

    Notes
    -----
    Each rung waits for all of its trials (synchronous SHA). A trial whose training failed
    ranks worst and is never promoted (nor recorded as stopped: the study reports it as
    failed), so a rung after failures may hold fewer than ``n_i`` trials. Later rungs list
    their trials best first, so ties there go to the better trial of the rung below.
    """
    decisions: list[DecisionRecord] = []
    rung = list(trials)
    for i, (_, steps) in enumerate(rungs):
        results = await attempt_all(study, ((trial, steps) for trial in rung))
        if i == len(rungs) - 1:
            return decisions, [t for t, m in zip(rung, results) if m is not None]
        alive = [j for j, metrics in enumerate(results) if metrics is not None]
        ranked = top_k([tuner.score(results[j]) for j in alive], rungs[i + 1][0])
        keep = [alive[j] for j in ranked]
        for j in keep:
            decisions.append(DecisionRecord(rung[j], steps, Decision.PROMOTE))
        kept = set(keep)
        for j in alive:
            if j not in kept:
                decisions.append(DecisionRecord(rung[j], steps, Decision.STOP))
        rung = [rung[j] for j in keep]
        if not rung:
            break
    return decisions, []


class SHA(StoppingTuner):
    """Synchronous successive halving (Jamieson & Talwalkar, AISTATS 2016).

    Trains ``n`` trials to ``min_steps``, keeps the best ``floor(n / reduction)`` (at least
    one), trains those to ``min_steps * reduction``, and so on up to ``max_steps``: rungs of
    ``n, n/eta, n/eta^2, ...`` trials at ``r, r*eta, r*eta^2, ..., max_steps`` steps. Each rung
    waits for all its trials; :class:`ASHA` does not.

    A promoted trial is requested again at the next rung's steps and resumes from its
    checkpoint; trials sharing a schedule prefix train it once, so a study costs less than the
    sum of its rungs.

    Parameters
    ----------
    space
        A :class:`~hippo_dask.GridSpace` or iterable of :class:`~hippo_dask.Trial`
        (``n_trials=None``: all of them; else ``n_trials`` drawn without replacement with
        ``seed``), or a :class:`~hippo_dask.RandomSpace` (``space.sample(n_trials)``).
    metric, mode
        What trials are ranked by; NaN, infinities and failed trials rank worst.
    min_steps, max_steps
        Steps of the first and the last rung. Rungs sit at ``min_steps * reduction**k``; if
        ``max_steps`` is not on that ladder it becomes an extra last rung.
    reduction
        ``eta``: each rung keeps ``1/eta`` of the one below (an int >= 2).
    n_trials
        Size of the first rung.
    seed
        Seed of this tuner's own ``numpy`` generator (drawing from a finite space).

    Attributes
    ----------
    rungs
        The rung steps.
    decisions
        After ``run``: every ``PROMOTE`` / ``STOP`` decision, rung by rung, best first.

    See Also
    --------
    ASHA, Hyperband

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.GridSpace(lr=[seq.Constant(0.1), seq.Constant(0.01)], seed=[0, 1, 2, 3])
    >>> tuner = hd.tuners.SHA(space, "val_acc", min_steps=10, max_steps=160, reduction=2)
    >>> tuner.rungs
    [10, 20, 40, 80, 160]
    """

    def __init__(
        self,
        space: Iterable[Trial],
        metric: str,
        mode: str = "max",
        *,
        min_steps: int,
        max_steps: int,
        reduction: int = 4,
        n_trials: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode)
        self.min_steps = check_whole("SHA", "min_steps", min_steps, 1)
        self.max_steps = check_whole(
            "SHA",
            "max_steps",
            max_steps,
            self.min_steps,
            f"it must be at least min_steps={self.min_steps}",
        )
        self.reduction = check_whole("SHA", "reduction", reduction, 2, "e.g. reduction=3")
        self.n_trials = None if n_trials is None else check_whole("SHA", "n_trials", n_trials, 1)
        self.seed = check_whole("SHA", "seed", seed, 0)
        self.space = space
        self.rungs = rung_steps(self.min_steps, self.max_steps, self.reduction)

    async def run(self, study: StudyLike) -> None:
        self._start()
        rng = np.random.default_rng(self.seed)
        trials = draw_trials("SHA", self.space, self.n_trials, rng)
        sizes = sha_rung_sizes(len(trials), self.reduction, len(self.rungs))
        decisions, finished = await successive_halving(
            self, study, trials, list(zip(sizes, self.rungs))
        )
        for record in decisions:
            self._decide(*record)
        for trial in finished:
            self._finish(trial)
