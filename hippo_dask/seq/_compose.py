"""Sequences made of other sequences: a warm-up ramp, and pieces glued end to end."""

from __future__ import annotations

from typing import Any

import numpy as np

from hippo_dask.errors import InvalidSequenceError
from hippo_dask.seq._base import (
    _DTYPES,
    PiecewiseConstant,
    Sequence,
    check_range,
    finite_float,
    positive_int,
)
from hippo_dask.seq._schedules import Constant

__all__ = ["Piecewise", "Warmup"]


class Warmup(Sequence):
    """A linear ramp to ``target`` over ``steps`` steps, then ``then`` counted from the ramp's end.

    Step ``s < steps`` trains at ``target * (s + 1) / steps``, so the last ramp step reaches
    ``target`` and no step trains at zero. ``then`` (default ``Constant(target)``) sees step 0 at
    the first step after the ramp: ``Warmup(5, 0.1, then=Exponential(0.1, 0.95))`` trains step 5
    at 0.1 and step 6 at 0.095.
    """

    __slots__ = ("steps", "target", "then", "kind")
    steps: int
    target: float
    then: Sequence

    def __init__(self, steps: int, target: float, then: Sequence | None = None) -> None:
        steps = positive_int(steps, family="Warmup", argument="steps")
        target = finite_float(target, family="Warmup", argument="target")
        if then is None:
            then = Constant(target)
        if not isinstance(then, Sequence):
            raise InvalidSequenceError(
                f"Warmup: `then` must be a sequence such as Constant({target}) or "
                f"Exponential({target}, 0.95), got {then!r}"
            )
        if then.kind != "float":
            raise InvalidSequenceError(
                f"Warmup: `then` must hold floats after a float ramp, got {then!r} ({then.kind})"
            )
        self._freeze(steps=steps, target=target, then=then, kind="float")

    def _params(self) -> dict[str, Any]:
        return {"steps": self.steps, "target": self.target, "then": self.then}

    def values(self, start: int, stop: int) -> np.ndarray:
        check_range(start, stop)
        out = np.empty(stop - start, dtype=np.float64)
        cut = min(max(self.steps, start), stop)
        ramp = np.arange(start, cut, dtype=np.float64)
        out[: cut - start] = self.target * (ramp + 1.0) / self.steps
        if stop > cut:
            out[cut - start :] = self.then.values(cut - self.steps, stop - self.steps)
        return out


class Piecewise(Sequence):
    """Sequences one after another: ``Piecewise((seq_a, n_a), (seq_b, n_b), ..., last)``.

    Each piece counts its own steps from 0 when it starts; ``last`` runs for ever after the finite
    pieces. ``Piecewise((Constant(0.1), 50), Cosine(0.1, 100))`` holds 0.1 for 50 steps, then
    anneals over the next 100.
    """

    __slots__ = ("pieces", "last", "kind", "_bounds")
    pieces: tuple[tuple[Sequence, int], ...]
    last: Sequence

    def __init__(self, *pieces: Any) -> None:
        if not pieces:
            raise InvalidSequenceError(
                "Piecewise: needs at least one sequence, e.g. "
                "Piecewise((Constant(0.1), 50), Constant(0.01))"
            )
        *finite, last = pieces
        if not isinstance(last, Sequence):
            raise InvalidSequenceError(
                f"Piecewise: the last argument must be a sequence without a length, to say what "
                f"comes after the finite pieces; got {last!r}. Add one, e.g. "
                f"Piecewise(..., Constant(0.01))"
            )
        checked: list[tuple[Sequence, int]] = []
        for position, piece in enumerate(finite):
            if (
                not isinstance(piece, (tuple, list))
                or len(piece) != 2
                or not isinstance(piece[0], Sequence)
            ):
                raise InvalidSequenceError(
                    f"Piecewise: argument {position} must be a (sequence, n_steps) pair, got "
                    f"{piece!r}; only the last argument goes without a length"
                )
            n = positive_int(piece[1], family="Piecewise", argument=f"pieces[{position}] length")
            checked.append((piece[0], n))
        kinds = {seq.kind for seq, _ in checked} | {last.kind}
        if len(kinds) != 1:
            raise InvalidSequenceError(
                f"Piecewise: pieces hold different kinds of value {sorted(kinds)}; use one type "
                "so the trainer always receives the same kind of value"
            )
        bounds = np.cumsum([0] + [n for _, n in checked]).astype(np.int64)
        self._freeze(pieces=tuple(checked), last=last, kind=kinds.pop(), _bounds=bounds)

    def _params(self) -> dict[str, Any]:
        return {"pieces": [[seq, n] for seq, n in self.pieces], "last": self.last}

    def to_dict(self) -> dict[str, Any]:
        args: list[Any] = [[seq.to_dict(), n] for seq, n in self.pieces] + [self.last.to_dict()]
        return {"type": "Piecewise", "*args": args}

    def __repr__(self) -> str:
        parts = [f"({seq!r}, {n})" for seq, n in self.pieces] + [repr(self.last)]
        return f"Piecewise({', '.join(parts)})"

    def _segments(self) -> list[tuple[Sequence, int, int | None]]:
        bounds = self._bounds
        parts: list[tuple[Sequence, int, int | None]] = [
            (seq, int(bounds[i]), int(bounds[i + 1])) for i, (seq, _) in enumerate(self.pieces)
        ]
        parts.append((self.last, int(bounds[-1]), None))
        return parts

    def values(self, start: int, stop: int) -> np.ndarray:
        check_range(start, stop)
        out = np.empty(stop - start, dtype=_DTYPES[self.kind])
        for seq, begin, end in self._segments():
            lo = max(start, begin)
            hi = stop if end is None else min(stop, end)
            if lo < hi:
                out[lo - start : hi - start] = seq.values(lo - begin, hi - begin)
        return out

    def is_piecewise_constant(self) -> bool:
        """True when every piece only changes at known change points."""
        return all(isinstance(seq, PiecewiseConstant) for seq, _, _ in self._segments())

    def change_points(self, stop: int) -> np.ndarray | None:
        if not self.is_piecewise_constant():
            return None
        points: list[np.ndarray] = []
        for seq, begin, end in self._segments():
            if begin >= stop:
                break
            if begin > 0:
                points.append(np.array([begin], dtype=np.int64))
            local_stop = stop - begin if end is None else min(stop, end) - begin
            assert isinstance(seq, PiecewiseConstant)
            inner = seq.change_points(local_stop)
            if inner is None:
                return None
            points.append(inner + begin)
        return np.concatenate(points) if points else np.empty(0, dtype=np.int64)
