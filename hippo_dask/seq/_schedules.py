"""The schedule families users know from ``torch.optim.lr_scheduler``.

The value at step ``s`` is what the matching torch scheduler gives after ``s`` calls of
``scheduler.step()`` (its closed form; torch's chained form can differ in the last bits). Step
``s`` is 0-based: ``values(0, n)`` are the values used to train the first ``n`` steps.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

import numpy as np

from hippo_dask.errors import InvalidSequenceError
from hippo_dask.seq._base import (
    _DTYPES,
    Sequence,
    check_range,
    finite_float,
    milestones_tuple,
    native,
    positive_int,
    value_kind,
)

__all__ = [
    "Constant",
    "Cosine",
    "CosineWarmRestarts",
    "Cyclic",
    "Exponential",
    "Linear",
    "MultiStep",
    "StepLR",
]


def _steps(start: int, stop: int) -> np.ndarray:
    check_range(start, stop)
    return np.arange(start, stop, dtype=np.int64)


class Constant(Sequence):
    """The same value at every step: ``Constant(0.1)``, ``Constant(128)``, ``Constant("sgd")``."""

    __slots__ = ("value", "kind")
    value: Any

    def __init__(self, value: Any) -> None:
        kind = value_kind(value, family="Constant", argument="value")
        self._freeze(value=native(value, kind), kind=kind)

    def _params(self) -> dict[str, Any]:
        return {"value": self.value}

    def __call__(self, step: int) -> Any:
        check_range(int(step), int(step) + 1)
        return self.value

    def values(self, start: int, stop: int) -> np.ndarray:
        check_range(start, stop)
        return np.full(stop - start, self.value, dtype=_DTYPES[self.kind])

    def change_points(self, stop: int) -> np.ndarray:
        return np.empty(0, dtype=np.int64)


class MultiStep(Sequence):
    """Piecewise constant: ``values[i]`` from ``milestones[i - 1]`` on (any value type).

    ``MultiStep([128, 256], milestones=[70])`` is a batch size of 128 for steps 0..69 and 256
    after; ``MultiStep(["sgd", "adam"], [50])`` switches optimizer at step 50.
    """

    __slots__ = ("levels", "milestones", "kind", "_array")
    levels: tuple[Any, ...]
    milestones: tuple[int, ...]

    def __init__(self, values: Iterable[Any], milestones: Iterable[int]) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise InvalidSequenceError(f"MultiStep: `values` must be a list, got {values!r}")
        items = list(values)
        marks = milestones_tuple(milestones, family="MultiStep")
        if len(items) != len(marks) + 1:
            raise InvalidSequenceError(
                f"MultiStep: needs one more value than milestones (a value before the first "
                f"milestone and one after each), got {len(items)} values {items!r} and "
                f"{len(marks)} milestones {list(marks)!r}"
            )
        kinds = {value_kind(v, family="MultiStep", argument="values") for v in items}
        if kinds == {"int", "float"}:
            kinds = {"float"}
        if len(kinds) != 1:
            raise InvalidSequenceError(
                f"MultiStep: `values` mix {sorted(kinds)} in {items!r}; use one type so the "
                "trainer always receives the same kind of value"
            )
        kind = kinds.pop()
        stored = tuple(native(v, kind) for v in items)
        array = np.array(stored, dtype=_DTYPES[kind])
        self._freeze(levels=stored, milestones=marks, kind=kind, _array=array)

    def _params(self) -> dict[str, Any]:
        return {"values": list(self.levels), "milestones": list(self.milestones)}

    def __call__(self, step: int) -> Any:
        check_range(int(step), int(step) + 1)
        return self.levels[bisect.bisect_right(self.milestones, int(step))]

    def values(self, start: int, stop: int) -> np.ndarray:
        index = np.searchsorted(
            np.asarray(self.milestones, dtype=np.int64), _steps(start, stop), side="right"
        )
        result: np.ndarray = self._array[index]
        return result

    def change_points(self, stop: int) -> np.ndarray:
        marks = np.asarray(self.milestones, dtype=np.int64)
        return marks[marks < stop]


class StepLR(Sequence):
    """``v0 * gamma ** k`` after the k-th milestone (torch's ``MultiStepLR``)."""

    __slots__ = ("v0", "gamma", "milestones", "kind")
    v0: float
    gamma: float
    milestones: tuple[int, ...]

    def __init__(self, v0: float, gamma: float, milestones: Iterable[int]) -> None:
        v0 = finite_float(v0, family="StepLR", argument="v0")
        gamma = finite_float(gamma, family="StepLR", argument="gamma")
        if gamma <= 0:
            raise InvalidSequenceError(
                f"StepLR: `gamma` must be > 0 (the factor applied at each milestone), got {gamma!r}"
            )
        marks = milestones_tuple(milestones, family="StepLR")
        self._freeze(v0=v0, gamma=gamma, milestones=marks, kind="float")

    def _params(self) -> dict[str, Any]:
        return {"v0": self.v0, "gamma": self.gamma, "milestones": list(self.milestones)}

    def values(self, start: int, stop: int) -> np.ndarray:
        k = np.searchsorted(
            np.asarray(self.milestones, dtype=np.int64), _steps(start, stop), side="right"
        )
        result: np.ndarray = self.v0 * self.gamma ** k.astype(np.float64)
        return result

    def change_points(self, stop: int) -> np.ndarray:
        marks = np.asarray(self.milestones, dtype=np.int64)
        return marks[marks < stop]


class Exponential(Sequence):
    """``v0 * gamma ** step`` (torch's ``ExponentialLR``)."""

    __slots__ = ("v0", "gamma", "kind")
    v0: float
    gamma: float

    def __init__(self, v0: float, gamma: float) -> None:
        v0 = finite_float(v0, family="Exponential", argument="v0")
        gamma = finite_float(gamma, family="Exponential", argument="gamma")
        if gamma <= 0:
            raise InvalidSequenceError(
                f"Exponential: `gamma` must be > 0 (the factor applied every step), got {gamma!r}"
            )
        self._freeze(v0=v0, gamma=gamma, kind="float")

    def _params(self) -> dict[str, Any]:
        return {"v0": self.v0, "gamma": self.gamma}

    def values(self, start: int, stop: int) -> np.ndarray:
        result: np.ndarray = self.v0 * self.gamma ** _steps(start, stop).astype(np.float64)
        return result


class Linear(Sequence):
    """From ``start`` to ``end`` linearly over ``steps`` steps, then ``end`` (torch's ``LinearLR``)."""

    __slots__ = ("start", "end", "steps", "kind")
    start: float
    end: float
    steps: int

    def __init__(self, start: float, end: float, steps: int) -> None:
        self._freeze(
            start=finite_float(start, family="Linear", argument="start"),
            end=finite_float(end, family="Linear", argument="end"),
            steps=positive_int(steps, family="Linear", argument="steps"),
            kind="float",
        )

    def _params(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "steps": self.steps}

    def values(self, start: int, stop: int) -> np.ndarray:
        progress = np.minimum(_steps(start, stop), self.steps) / self.steps
        result: np.ndarray = self.start + (self.end - self.start) * progress
        return result


def _cosine(
    v0: float, eta_min: float, position: np.ndarray, period: np.ndarray | int
) -> np.ndarray:
    result: np.ndarray = eta_min + (v0 - eta_min) * (1.0 + np.cos(np.pi * position / period)) / 2.0
    return result


class Cosine(Sequence):
    """Cosine annealing from ``v0`` to ``eta_min`` over ``t_max`` steps (``CosineAnnealingLR``).

    Past ``t_max`` the cosine goes on (back up), as torch's closed form does.
    """

    __slots__ = ("v0", "t_max", "eta_min", "kind")
    v0: float
    t_max: int
    eta_min: float

    def __init__(self, v0: float, t_max: int, eta_min: float = 0.0) -> None:
        self._freeze(
            v0=finite_float(v0, family="Cosine", argument="v0"),
            t_max=positive_int(t_max, family="Cosine", argument="t_max"),
            eta_min=finite_float(eta_min, family="Cosine", argument="eta_min"),
            kind="float",
        )

    def _params(self) -> dict[str, Any]:
        return {"v0": self.v0, "t_max": self.t_max, "eta_min": self.eta_min}

    def values(self, start: int, stop: int) -> np.ndarray:
        return _cosine(self.v0, self.eta_min, _steps(start, stop).astype(np.float64), self.t_max)


class CosineWarmRestarts(Sequence):
    """Cosine annealing restarted every ``t_0 * t_mult ** i`` steps (``CosineAnnealingWarmRestarts``)."""

    __slots__ = ("v0", "t_0", "t_mult", "eta_min", "kind")
    v0: float
    t_0: int
    t_mult: int
    eta_min: float

    def __init__(self, v0: float, t_0: int, t_mult: int = 1, eta_min: float = 0.0) -> None:
        self._freeze(
            v0=finite_float(v0, family="CosineWarmRestarts", argument="v0"),
            t_0=positive_int(t_0, family="CosineWarmRestarts", argument="t_0"),
            t_mult=positive_int(t_mult, family="CosineWarmRestarts", argument="t_mult"),
            eta_min=finite_float(eta_min, family="CosineWarmRestarts", argument="eta_min"),
            kind="float",
        )

    def _params(self) -> dict[str, Any]:
        return {"v0": self.v0, "t_0": self.t_0, "t_mult": self.t_mult, "eta_min": self.eta_min}

    def values(self, start: int, stop: int) -> np.ndarray:
        steps = _steps(start, stop)
        if self.t_mult == 1:
            position = steps % self.t_0
            period: np.ndarray | int = self.t_0
        else:
            # Cycle i starts at t_0 * (t_mult**i - 1) / (t_mult - 1); integer arithmetic, so
            # restarts fall exactly where torch's step-by-step counter puts them.
            bounds = [0]
            length = self.t_0
            last = int(steps[-1]) if len(steps) else 0
            while bounds[-1] <= last:
                bounds.append(bounds[-1] + length)
                length *= self.t_mult
            edges = np.asarray(bounds, dtype=np.int64)
            cycle = np.searchsorted(edges, steps, side="right") - 1
            position = steps - edges[cycle]
            period = edges[cycle + 1] - edges[cycle]
        return _cosine(self.v0, self.eta_min, position.astype(np.float64), period)


class Cyclic(Sequence):
    """Triangular cycles between ``base`` and ``max`` (torch's ``CyclicLR``, ``mode="triangular"``).

    Rises for ``step_size_up`` steps, falls for ``step_size_down`` (default: the same).
    """

    __slots__ = ("base", "max", "step_size_up", "step_size_down", "kind")
    base: float
    max: float
    step_size_up: int
    step_size_down: int

    def __init__(
        self, base: float, max: float, step_size_up: int, step_size_down: int | None = None
    ) -> None:
        up = positive_int(step_size_up, family="Cyclic", argument="step_size_up")
        down = (
            up
            if step_size_down is None
            else positive_int(step_size_down, family="Cyclic", argument="step_size_down")
        )
        self._freeze(
            base=finite_float(base, family="Cyclic", argument="base"),
            max=finite_float(max, family="Cyclic", argument="max"),
            step_size_up=up,
            step_size_down=down,
            kind="float",
        )

    def _params(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "max": self.max,
            "step_size_up": self.step_size_up,
            "step_size_down": self.step_size_down,
        }

    def values(self, start: int, stop: int) -> np.ndarray:
        # Same float arithmetic as torch's CyclicLR.get_lr.
        steps = _steps(start, stop).astype(np.float64)
        total = float(self.step_size_up + self.step_size_down)
        ratio = self.step_size_up / total
        cycle = np.floor(1 + steps / total)
        x = 1.0 + steps / total - cycle
        scale = np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        result: np.ndarray = self.base + (self.max - self.base) * scale
        return result
