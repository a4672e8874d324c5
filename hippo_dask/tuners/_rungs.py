"""Rung, bracket and stopping arithmetic: pure functions, no Dask, no study.

The tuners in this package are coroutines over ``study.train``; every number they decide by
(where the rungs sit, how many trials a rung keeps, which trial is promoted next, whether a trial
is below the median) comes from this module, so it can be checked against the papers' tables
without a cluster:

- successive halving: Jamieson & Talwalkar, "Non-stochastic Best Arm Identification and
  Hyperparameter Optimization", AISTATS 2016;
- Hyperband: Li et al., "Hyperband: A Novel Bandit-Based Approach to Hyperparameter
  Optimization", JMLR 18 (2018), Algorithm 1 and Table 1;
- asynchronous successive halving (ASHA): Li et al., "A System for Massively Parallel
  Hyperparameter Tuning", MLSys 2020, Algorithm 2;
- the median stopping rule: Golovin et al., "Google Vizier: A Service for Black-Box
  Optimization", KDD 2017, section 3.2.2.

Scores are "higher is better" (:meth:`hippo_dask.Tuner.score`); anything not finite counts as
``-inf``. Ties are broken by arrival order: of two equal scores, the one listed first wins.
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Collection, Hashable, Sequence
from typing import TypeVar

from hippo_dask.errors import InvalidSpaceError

__all__ = [
    "Decision",
    "asha_next_promotion",
    "asha_promotable",
    "check_whole",
    "hyperband_brackets",
    "median_stop",
    "rung_steps",
    "sha_rung_sizes",
    "top_k",
]

K = TypeVar("K", bound=Hashable)


class Decision(enum.Enum):
    """What a tuner decided about a trial at a rung or evaluation step."""

    #: Train it to the next rung (successive halving, ASHA, Hyperband).
    PROMOTE = "promote"
    #: Let it go on to the next evaluation step (median stopping).
    CONTINUE = "continue"
    #: Train it no further; ``result.trials`` shows it as ``"stopped"``.
    STOP = "stop"


def check_whole(who: str, name: str, value: object, minimum: int, fix: str = "") -> int:
    """``value`` as an ``int`` if it is a whole number ``>= minimum``; else an
    :class:`~hippo_dask.InvalidSpaceError` naming ``who``, the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        hint = f"; {fix}" if fix else ""
        raise InvalidSpaceError(
            f"{who}: `{name}` must be a whole number >= {minimum}, got {value!r}{hint}"
        )
    return int(value)


def _clean(score: float) -> float:
    return float(score) if math.isfinite(score) else -math.inf


def rung_steps(min_steps: int, max_steps: int, reduction: int) -> list[int]:
    """The steps at which successive halving compares trials.

    ``min_steps * reduction**k`` for every ``k`` while below ``max_steps``, then ``max_steps``
    itself: when ``max_steps`` is ``min_steps`` times a power of ``reduction`` these are the
    published rungs ``r, r*eta, ..., R``; otherwise the last geometric rung is followed by
    ``max_steps`` (a shorter last step up, as Ray Tune's ASHA does with ``max_t``).

    Examples
    --------
    >>> rung_steps(1, 81, 3)
    [1, 3, 9, 27, 81]
    >>> rung_steps(25, 200, 2)
    [25, 50, 100, 200]
    >>> rung_steps(10, 100, 3)
    [10, 30, 90, 100]
    """
    low = check_whole("rung_steps", "min_steps", min_steps, 1)
    high = check_whole(
        "rung_steps", "max_steps", max_steps, low, f"max_steps must be at least min_steps={low}"
    )
    eta = check_whole("rung_steps", "reduction", reduction, 2)
    rungs = []
    steps = low
    while steps < high:
        rungs.append(steps)
        steps *= eta
    rungs.append(high)
    return rungs


def sha_rung_sizes(n: int, reduction: int, rungs: int) -> list[int]:
    """How many trials each rung of successive halving trains: ``n, n/eta, n/eta^2, ...``.

    Each rung keeps the best ``floor(n_k / eta)`` trials of the rung below, but at least one
    (Jamieson & Talwalkar 2016; Li et al. 2018 write ``n_i = floor(n * eta^-i)``, which is the
    same number since ``floor(floor(n/a)/b) == floor(n/(a*b))``).

    Examples
    --------
    >>> sha_rung_sizes(81, 3, 5)
    [81, 27, 9, 3, 1]
    >>> sha_rung_sizes(34, 3, 4)
    [34, 11, 3, 1]
    >>> sha_rung_sizes(5, 4, 3)
    [5, 1, 1]
    """
    size = check_whole("sha_rung_sizes", "n", n, 1)
    eta = check_whole("sha_rung_sizes", "reduction", reduction, 2)
    count = check_whole("sha_rung_sizes", "rungs", rungs, 1)
    return [max(1, size // eta**k) for k in range(count)]


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` highest ``scores``, best first.

    Ties go to the lower index (the earlier arrival): the sort is stable. Scores that are not
    finite rank as ``-inf``, below every finite score, and tie with each other.

    Examples
    --------
    >>> top_k([0.5, 0.9, 0.9, float("nan"), 0.1], 3)
    [1, 2, 0]
    """
    if k <= 0:
        return []
    order = sorted(range(len(scores)), key=lambda i: -_clean(scores[i]))
    return order[:k]


def asha_promotable(
    rung_results: Sequence[tuple[K, float]], promoted: Collection[K], reduction: int
) -> list[K]:
    """Trials of one rung that ASHA may promote now, best first.

    Li et al. (2020), Algorithm 2, ``get_job``: the candidates are the top
    ``floor(|rung| / eta)`` of the results the rung holds *so far*; those not promoted already are
    promotable. A rung never waits to fill.

    Parameters
    ----------
    rung_results
        ``(trial, score)`` in the order the results arrived (ties go to the earlier one).
    promoted
        Trials of this rung already promoted, or that must never be (failed ones).
    reduction
        ``eta``.

    Examples
    --------
    >>> asha_promotable([("a", 0.1), ("b", 0.7), ("c", 0.4)], set(), 3)
    ['b']
    >>> asha_promotable([("a", 0.1), ("b", 0.7), ("c", 0.4)], {"b"}, 3)
    []
    """
    eta = check_whole("asha_promotable", "reduction", reduction, 2)
    best = top_k([score for _, score in rung_results], len(rung_results) // eta)
    return [rung_results[i][0] for i in best if rung_results[i][0] not in promoted]


def asha_next_promotion(
    rungs: Sequence[Sequence[tuple[K, float]]],
    promoted: Sequence[Collection[K]],
    reduction: int,
) -> tuple[K, int] | None:
    """The promotion ASHA's ``get_job`` hands out next: ``(trial, rung it leaves)`` or ``None``.

    Rungs are scanned from the one below the top down to the bottom (Li et al. 2020,
    Algorithm 2: ``for k = floor(log_eta(R/r)) - 1, ..., 1, 0``); the first promotable trial
    wins, so promotions towards the top come first. ``None`` means "grow the bottom rung": start
    a new trial. The top rung (``rungs[-1]``) never promotes.

    Parameters
    ----------
    rungs
        Per rung, ``(trial, score)`` in arrival order; the last is the top rung.
    promoted
        Per rung, the trials already promoted from it (or never to be).
    reduction
        ``eta``.
    """
    for k in range(len(rungs) - 2, -1, -1):
        promotable = asha_promotable(rungs[k], promoted[k], reduction)
        if promotable:
            return promotable[0], k
    return None


def hyperband_brackets(
    max_steps: int, reduction: int = 3, min_steps: int = 1
) -> list[list[tuple[int, int]]]:
    """Hyperband's brackets: per bracket ``s = s_max, ..., 0``, the rungs ``[(n_i, r_i), ...]``.

    Li et al. (2018), Algorithm 1, with the maximum resource ``R = max_steps / min_steps`` in
    units of ``min_steps``: ``s_max = floor(log_eta(R))``; bracket ``s`` starts
    ``n = ceil((s_max + 1) / (s + 1) * eta^s)`` trials at ``r = R * eta^-s`` and runs successive
    halving: rung ``i`` trains ``n_i = floor(n * eta^-i)`` trials to ``r_i = r * eta^i`` steps.
    Steps are whole numbers here: ``r_i = floor(max_steps * eta^(i - s))``, exact whenever
    ``max_steps / min_steps`` is a power of ``eta``. All arithmetic is on integers.

    Examples
    --------
    Table 1 of the paper (``R = 81``, ``eta = 3``):

    >>> for bracket in hyperband_brackets(81, 3):
    ...     print(bracket)
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]
    [(34, 3), (11, 9), (3, 27), (1, 81)]
    [(15, 9), (5, 27), (1, 81)]
    [(8, 27), (2, 81)]
    [(5, 81)]
    """
    low = check_whole("hyperband_brackets", "min_steps", min_steps, 1)
    high = check_whole(
        "hyperband_brackets",
        "max_steps",
        max_steps,
        low,
        f"max_steps must be at least min_steps={low}",
    )
    eta = check_whole("hyperband_brackets", "reduction", reduction, 2)
    s_max = 0
    while low * eta ** (s_max + 1) <= high:
        s_max += 1
    brackets = []
    for s in range(s_max, -1, -1):
        n = -(-(s_max + 1) * eta**s // (s + 1))  # ceil, in integers
        brackets.append([(n // eta**i, high // eta ** (s - i)) for i in range(s + 1)])
    return brackets


def median_stop(
    history: Sequence[float], others: Sequence[Sequence[float]], min_trials: int = 3
) -> Decision:
    """Vizier's median stopping rule for one trial at one step.

    Golovin et al. (2017), section 3.2.2: stop a trial at step ``s`` if its *best* score up to
    ``s`` is strictly worse than the median of the other trials' *running averages* up to ``s``.
    Comparing a best value against averages makes the rule lenient with noisy curves and with
    curves still rising.

    Parameters
    ----------
    history
        The trial's scores at the evaluation steps up to and including ``s``.
    others
        For each other trial that reached ``s``, its scores at the same evaluation steps.
    min_trials
        Decide only when at least this many other trials reached ``s``; before, continue.

    Returns
    -------
    Decision
        ``Decision.STOP`` or ``Decision.CONTINUE``.

    Examples
    --------
    >>> median_stop([0.2, 0.3], [[0.4, 0.6], [0.5, 0.7], [0.1, 0.2]])
    <Decision.STOP: 'stop'>
    >>> median_stop([0.2, 0.55], [[0.4, 0.6], [0.5, 0.7], [0.1, 0.2]])
    <Decision.CONTINUE: 'continue'>
    """
    if not history or len(others) < min_trials:
        return Decision.CONTINUE
    best = max(_clean(v) for v in history)
    averages = sorted(
        -math.inf if any(not math.isfinite(v) for v in h) else math.fsum(h) / len(h)
        for h in others
        if h
    )
    if len(averages) < min_trials:
        return Decision.CONTINUE
    middle = len(averages) // 2
    if len(averages) % 2:
        median = averages[middle]
    else:  # -inf stays -inf: no +inf can reach here
        median = (averages[middle - 1] + averages[middle]) / 2
    return Decision.STOP if best < median else Decision.CONTINUE
