"""Asynchronous successive halving (ASHA): promote as soon as a trial is good enough.

Li, Jamieson, Rostamizadeh, Gonina, Ben-Tzur, Hardt, Recht & Talwalkar, "A System for
Massively Parallel Hyperparameter Tuning", MLSys 2020, Algorithm 2. The promotion rule is
:func:`~hippo_dask.tuners._rungs.asha_next_promotion`.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from hippo_dask.trial import Trial
from hippo_dask.tuners._common import StoppingTuner, attempt, draw_trials
from hippo_dask.tuners._rungs import Decision, asha_next_promotion, check_whole, rung_steps, top_k

if TYPE_CHECKING:
    from hippo_dask.tuners._base import StudyLike

__all__ = ["ASHA"]


class ASHA(StoppingTuner):
    """Asynchronous successive halving (Li et al., MLSys 2020, Algorithm 2).

    Whenever a slot is free, ``get_job`` looks for a promotion, from the rung just below the
    top down to the bottom: a trial is promoted from rung ``k`` when it is among the best
    ``floor(|rung k| / eta)`` results rung ``k`` holds *so far* and was not promoted yet. No rung
    ever waits to fill. Without a promotion, the next of ``n_trials`` new trials starts at the
    bottom rung. A promotion is a request for the next rung's steps, resumed from the trial's
    checkpoint.

    Order of events. The paper acts on results in the order they arrive, so its decisions depend
    on timing; a rerun would then promote other trials and train steps nobody asked for before.
    Here results are acted on in the order they would arrive if every step took the same time
    on ``max_concurrent`` workers, one per trial without a cap (a job costs the steps it adds;
    ties go to the job started first). The requests themselves run concurrently as usual, but
    the decisions depend only on the metrics and the seed: a rerun, or a resumed crashed run,
    makes exactly the same requests and trains nothing again. When the real order differs, a finished result waits
    in memory for the ones the order puts before it.

    Requests in flight. With ``max_concurrent=None`` (the default) there is no cap: every
    trial starts at the bottom rung at once, and the decisions are those of ASHA with a worker
    per trial (promotions still happen the moment a trial is in the top ``1 / eta`` of what its
    rung holds, and no rung waits to fill). Which work runs on the workers is then the
    engine's choice (critical paths first), not the tuner's. A cap counted in requests does
    not measure the work when trials share prefixes: requests that share one are one chain of
    stages, and a finished result held back for the order above still takes a slot. A cap of
    about one request per worker therefore leaves most workers idle under sharing (the
    requests in flight wait on a few chains); without a cap they stay busy
    (``benchmarks/RESULTS.md``, "Paper replay", has the measurements).

    End of a finite run. Once every trial has started and nothing is running, a rung with
    results but fewer than ``eta`` of them could never promote; if no trial has reached
    ``max_steps`` yet, the best finite-scored unpromoted trial of the highest such rung is
    promoted (successive halving's "at least one"), until one reaches ``max_steps``.

    Parameters
    ----------
    space
        A :class:`~hippo_dask.RandomSpace` (``space.sample(n_trials)``), or a
        :class:`~hippo_dask.GridSpace` / iterable of :class:`~hippo_dask.Trial` (``n_trials``
        drawn without replacement with ``seed``; ``None``: all of them).
    metric, mode
        What trials are ranked by; NaN, infinities and failed trials rank worst, and a failed
        trial is never promoted.
    min_steps, max_steps
        Steps of the bottom and the top rung; rungs sit at ``min_steps * reduction**k``, with
        ``max_steps`` as the top rung.
    reduction
        ``eta`` (an int >= 2).
    n_trials
        How many trials to start in all.
    max_concurrent
        ``None`` (default): no cap, see "Requests in flight". The decisions then depend only
        on the metrics, the seed and ``n_trials``, never on the cluster, so the same script
        decides the same on a laptop and on a cluster. Keep it with sharing (the default of
        :class:`~hippo_dask.Study`). A number caps the requests in flight and is the number of
        workers the order of events assumes, so it shapes the decisions too. About the number
        of GPU workers suits a run where every request is its own work, a trial-by-trial
        baseline (``Study(..., sharing=False)``, where such a cap is as fast as none), or a study
        that must not queue more than that on a shared cluster (every decision of the engine
        plans all pending requests, so its cost grows with them; ``benchmarks/RESULTS.md``,
        "Planner scale").
    seed
        Seed of this tuner's own ``numpy`` generator.

    Attributes
    ----------
    rungs
        The rung steps.
    decisions
        After ``run``: every ``PROMOTE`` in the order made, then a ``STOP`` for each trial
        left below the top rung.

    See Also
    --------
    SHA, Hyperband

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> space = hd.RandomSpace(lr=seq.Constant(hd.loguniform(1e-3, 1)), random_state=0)
    >>> tuner = hd.tuners.ASHA(space, "val_acc", min_steps=25, max_steps=200, reduction=2,
    ...                        n_trials=16)
    >>> tuner.rungs
    [25, 50, 100, 200]
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
        n_trials: int | None,
        max_concurrent: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(metric, mode)
        self.min_steps = check_whole("ASHA", "min_steps", min_steps, 1)
        self.max_steps = check_whole(
            "ASHA",
            "max_steps",
            max_steps,
            self.min_steps,
            f"it must be at least min_steps={self.min_steps}",
        )
        self.reduction = check_whole("ASHA", "reduction", reduction, 2, "e.g. reduction=3")
        self.n_trials = None if n_trials is None else check_whole("ASHA", "n_trials", n_trials, 1)
        self.max_concurrent = (
            None
            if max_concurrent is None
            else check_whole(
                "ASHA",
                "max_concurrent",
                max_concurrent,
                1,
                "use None (no cap, the default) with sharing, or about the number of GPU workers "
                "for a trial-by-trial run, e.g. max_concurrent=8",
            )
        )
        self.seed = check_whole("ASHA", "seed", seed, 0)
        self.space = space
        self.rungs = rung_steps(self.min_steps, self.max_steps, self.reduction)

    async def run(self, study: StudyLike) -> None:
        self._start()
        rng = np.random.default_rng(self.seed)
        trials = draw_trials("ASHA", self.space, self.n_trials, rng)
        top = len(self.rungs) - 1
        # No cap: a slot per trial (one request per trial is ever in flight).
        limit = len(trials) if self.max_concurrent is None else self.max_concurrent
        # Per rung: (trial index, score) in the order acted on; trials promoted out of it.
        results: list[list[tuple[int, float]]] = [[] for _ in self.rungs]
        promoted: list[set[int]] = [set() for _ in self.rungs]
        failed: set[int] = set()
        started = 0
        launched = 0
        now = 0
        flight: list[tuple[int, int, int, int]] = []  # (virtual end, order, trial, rung)
        running: dict[int, asyncio.Future[dict[str, float] | None]] = {}

        def promote(i: int, k: int) -> tuple[int, int]:
            promoted[k].add(i)
            self._decide(trials[i], self.rungs[k], Decision.PROMOTE)
            return i, k + 1

        def get_job() -> tuple[int, int] | None:
            nonlocal started
            excluded = [done | failed for done in promoted]
            found = asha_next_promotion(results, excluded, self.reduction)
            if found is not None:
                return promote(*found)
            if started < len(trials):
                started += 1
                return started - 1, 0
            return None

        def finishing_job() -> tuple[int, int] | None:
            if any(i not in failed for i, _ in results[top]):
                return None
            for k in range(top - 1, -1, -1):
                candidates = [
                    (i, s)
                    for i, s in results[k]
                    if i not in promoted[k] and i not in failed and math.isfinite(s)
                ]
                if candidates:
                    best = top_k([s for _, s in candidates], 1)[0]
                    return promote(candidates[best][0], k)
            return None

        def launch(i: int, k: int) -> None:
            nonlocal launched
            cost = self.rungs[k] - (self.rungs[k - 1] if k else 0)
            heapq.heappush(flight, (now + cost, launched, i, k))
            running[launched] = asyncio.ensure_future(attempt(study, trials[i], self.rungs[k]))
            launched += 1

        try:
            while True:
                while len(flight) < limit:
                    job = get_job()
                    if job is None:
                        break
                    launch(*job)
                if not flight:
                    job = finishing_job()
                    if job is None:
                        break
                    launch(*job)
                now, order, i, k = heapq.heappop(flight)
                metrics = await running.pop(order)
                results[k].append((i, self.score(metrics)))
                if metrics is None:
                    failed.add(i)
                elif k == top:
                    self._finish(trials[i])
        finally:  # only after an error: cancel what still runs, and collect it
            for future in running.values():
                future.cancel()
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)
        for k in range(top):
            for i, _ in results[k]:
                if i not in promoted[k] and i not in failed:
                    self._decide(trials[i], self.rungs[k], Decision.STOP)
