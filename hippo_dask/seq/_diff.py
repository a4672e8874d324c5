"""Where do two sequences first take different values? The core of the sharing rule.

Two trials share step ``s`` only if every sequential hyper-parameter has equal values at every
step up to ``s``. The check must stay cheap for thousands of trials: equal sequences are
recognised by equality, piecewise-constant ones are compared at their change points only, and
everything else is evaluated a vectorised chunk at a time, growing until a difference or the
horizon is reached. Values of different kinds (``128`` against ``128.0``) never match.
"""

from __future__ import annotations

import numpy as np

from hippo_dask.seq._base import PiecewiseConstant, Sequence

__all__ = ["DifferenceCache", "first_difference"]

_FIRST_CHUNK = 64
_MAX_CHUNK = 1 << 16


def _change_points(seq: Sequence, stop: int) -> np.ndarray | None:
    if isinstance(seq, PiecewiseConstant):
        return seq.change_points(stop)
    return None


def first_difference(a: Sequence, b: Sequence, stop: int, start: int = 0) -> int | None:
    """The first step in ``[start, stop)`` where ``a`` and ``b`` differ, or ``None``."""
    if start >= stop or a == b:
        return None
    if a.kind != b.kind:
        return start
    points_a = _change_points(a, stop)
    points_b = _change_points(b, stop) if points_a is not None else None
    if points_a is not None and points_b is not None:
        candidates = np.union1d(points_a, points_b)
        candidates = candidates[candidates > start]
        for step in (start, *candidates.tolist()):
            if a(step) != b(step):
                return int(step)
        return None
    lo, chunk = start, _FIRST_CHUNK
    while lo < stop:
        hi = min(stop, lo + chunk)
        differs = np.flatnonzero(a.values(lo, hi) != b.values(lo, hi))
        if differs.size:
            return lo + int(differs[0])
        lo, chunk = hi, min(chunk * 2, _MAX_CHUNK)
    return None


class DifferenceCache:
    """Memoised :func:`first_difference` from step 0, for pairs met again and again.

    In a grid, the same few learning-rate sequences are compared across thousands of trials; a
    pair's answer is kept along with the horizon it was computed to, and extended on demand.
    """

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[tuple[Sequence, Sequence], tuple[int | None, int]] = {}

    def __call__(self, a: Sequence, b: Sequence, stop: int) -> int | None:
        """The first step in ``[0, stop)`` where ``a`` and ``b`` differ, or ``None``."""
        if a is b or a == b:
            return None
        key = (a, b)
        known = self._known.get(key)
        if known is not None:
            step, checked = known
            if step is not None:
                return step if step < stop else None
            if checked >= stop:
                return None
            step = first_difference(a, b, stop, start=checked)
        else:
            step = first_difference(a, b, stop)
        self._known[key] = (step, stop if step is None else step + 1)
        return step
