"""The sequence abstraction: a hyper-parameter's value as a pure function of the training step.

A sequence is immutable and hashable, validated when it is built, and evaluates either one step
(``s(step)``) or a whole range at once (``s.values(start, stop)``, a numpy array). Sharing between
trials is decided on the values a sequence produces, never on how it was written, so every family
only has to say what value it takes at each step.

Families that are constant between a few change points (``Constant``, ``MultiStep``, ``StepLR``)
also implement :class:`PiecewiseConstant`, which lets the sharing check compare two sequences by
their change points instead of evaluating every step.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from hippo_dask.errors import InvalidSequenceError

__all__ = [
    "Kind",
    "PiecewiseConstant",
    "Sampleable",
    "Sequence",
    "SequenceTemplate",
    "from_dict",
]

#: The kinds of value a sequence may hold. Two sequences of different kinds never share a step,
#: so a trainer never sees ``128.0`` where it asked for ``128``.
Kind = str
_DTYPES: dict[Kind, Any] = {"float": np.float64, "int": np.int64, "bool": np.bool_, "str": object}

_REGISTRY: dict[str, type[Sequence]] = {}


class Sampleable(ABC):
    """Something that stands for a value until a random space draws it (a distribution)."""

    __slots__ = ()

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any:
        """Draw one value."""


@runtime_checkable
class PiecewiseConstant(Protocol):
    """A sequence that only changes value at a known, finite set of steps."""

    def change_points(self, stop: int) -> np.ndarray | None:
        """Steps ``0 < s < stop`` where the value may differ from the value at ``s - 1``.

        A superset is allowed (a change point where the value stays the same); a missing change
        point is a bug, because the sharing check trusts the value to be constant in between.
        ``None`` means "not piecewise constant after all" (a composite with a smooth piece).
        """
        ...


def value_kind(value: Any, *, family: str, argument: str) -> Kind:
    """Classify one value a sequence holds, rejecting what a schedule cannot carry."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise InvalidSequenceError(
                f"{family}: `{argument}` must be finite, got {value!r}; NaN and inf cannot be "
                "trained with or compared"
            )
        return "float"
    if isinstance(value, str):
        return "str"
    raise InvalidSequenceError(
        f"{family}: `{argument}` holds {value!r} of type {type(value).__name__}; sequence values "
        "must be float, int, bool or str (put other objects in the trainer and select them by name)"
    )


def native(value: Any, kind: Kind) -> Any:
    """Turn a numpy scalar back into the Python type the trainer should receive."""
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    return value


def finite_float(value: Any, *, family: str, argument: str) -> float:
    """Validate a numeric argument and return it as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidSequenceError(
            f"{family}: `{argument}` must be a number, got {value!r} ({type(value).__name__})"
        )
    result = float(value)
    if not math.isfinite(result):
        raise InvalidSequenceError(
            f"{family}: `{argument}` must be finite, got {value!r}; NaN and inf cannot be trained "
            "with or compared"
        )
    return result


def positive_int(value: Any, *, family: str, argument: str) -> int:
    """Validate a count of steps (>= 1) and return it as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        hint = f"; use {int(value)}" if isinstance(value, float) and value.is_integer() else ""
        raise InvalidSequenceError(
            f"{family}: `{argument}` must be a whole number of steps, got {value!r}{hint}"
        )
    if int(value) < 1:
        raise InvalidSequenceError(f"{family}: `{argument}` must be at least 1 step, got {value!r}")
    return int(value)


def milestones_tuple(value: Any, *, family: str) -> tuple[int, ...]:
    """Validate milestones: positive whole steps in strictly increasing order."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidSequenceError(f"{family}: `milestones` must be a list of steps, got {value!r}")
    items = list(value)
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise InvalidSequenceError(
                f"{family}: `milestones` must hold whole steps, got {item!r} in {items!r}"
            )
        if int(item) < 1:
            raise InvalidSequenceError(
                f"{family}: `milestones` must be steps >= 1 (a change at step 0 is just a "
                f"different start value), got {item!r} in {items!r}"
            )
    steps = [int(i) for i in items]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        fixed = sorted(set(steps))
        raise InvalidSequenceError(
            f"{family}: `milestones` must be strictly increasing, got {steps!r}; "
            f"did you mean milestones={fixed!r}?"
        )
    return tuple(steps)


def check_range(start: int, stop: int) -> None:
    """Reject a step range a sequence cannot be evaluated on."""
    if start < 0 or stop < start:
        raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")


def _holds_random(value: Any) -> bool:
    if isinstance(value, (Sampleable, SequenceTemplate)):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_random(v) for v in value)
    if isinstance(value, Mapping):
        return any(_holds_random(v) for v in value.values())
    return False


class Sequence(ABC):
    """A hyper-parameter's value as a function of the step: immutable, hashable, validated.

    Subclasses set their attributes in ``__init__`` through ``_freeze`` and describe themselves
    with ``_params()`` (the constructor's arguments, in order), which gives equality, hashing,
    ``repr`` and the JSON form used by the search plan's journal.

    Building a sequence with a distribution among its arguments (``StepLR(hd.loguniform(1e-3,
    1), ...)``) returns a :class:`SequenceTemplate` that a random space samples later.
    """

    __slots__ = ("_hash",)
    kind: Kind
    _type_name: ClassVar[str]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if _holds_random(args) or _holds_random(kwargs):
            return SequenceTemplate(cls, args, kwargs)
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._type_name = cls.__name__
        _REGISTRY[cls.__name__] = cls

    def _freeze(self, **attributes: Any) -> None:
        for name, value in attributes.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_hash", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new sequence instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new sequence instead")

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """The constructor's arguments, in order, as stored."""

    @abstractmethod
    def values(self, start: int, stop: int) -> np.ndarray:
        """Values at steps ``start, ..., stop - 1`` as a numpy array (float, int, bool or object)."""

    def __call__(self, step: int) -> Any:
        """The value used to train step ``step`` (0-based), as a Python scalar."""
        step = int(step)
        check_range(step, step + 1)
        return native(self.values(step, step + 1)[0], self.kind)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Sequence)
        # Kinds first: 128 == 128.0 and 1 == True in Python, but never between sequences.
        return self.kind == other.kind and self._params() == other._params()

    def __hash__(self) -> int:
        cached: int | None = self._hash
        if cached is None:
            params = tuple(_hashable(v) for v in self._params().values())
            cached = hash((type(self).__name__, self.kind, params))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (from_dict, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description; :func:`from_dict` rebuilds an equal sequence."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for name, value in self._params().items():
            out[name] = _encode(value)
        return out


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Sequence):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "type" in value:
        return from_dict(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def from_dict(data: Mapping[str, Any]) -> Sequence:
    """Rebuild a sequence from :meth:`Sequence.to_dict` output."""
    data = dict(data)
    name = data.pop("type", None)
    cls = _REGISTRY.get(str(name))
    if cls is None:
        raise InvalidSequenceError(f"unknown sequence type {name!r}; known: {sorted(_REGISTRY)}")
    args = data.pop("*args", None)
    decoded = {k: _decode(v) for k, v in data.items()}
    if args is not None:
        result = cls(*_decode(args), **decoded)
    else:
        result = cls(**decoded)
    assert isinstance(result, Sequence)
    return result


class SequenceTemplate:
    """A sequence whose arguments still hold distributions; a random space samples it.

    Built automatically when a sequence constructor receives a distribution, e.g.
    ``StepLR(hd.loguniform(1e-3, 1), gamma=0.1, milestones=hd.choice([[30, 45], [40, 60]]))``.
    """

    __slots__ = ("family", "args", "kwargs")

    def __init__(self, family: type[Sequence], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.family = family
        self.args = args
        self.kwargs = dict(kwargs)

    def sample(self, rng: np.random.Generator) -> Sequence:
        """Draw every distribution in the arguments, then build (and validate) the sequence."""
        args = resolve(self.args, rng)
        kwargs = {k: resolve(v, rng) for k, v in self.kwargs.items()}
        result = self.family(*args, **kwargs)
        assert isinstance(result, Sequence)
        return result

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.family.__name__}({', '.join(parts)})"


def resolve(value: Any, rng: np.random.Generator) -> Any:
    """Draw every :class:`Sampleable` and :class:`SequenceTemplate` in ``value``, through tuples,
    lists and mappings; anything else is returned as it is."""
    if isinstance(value, (Sampleable, SequenceTemplate)):
        return value.sample(rng)
    if isinstance(value, tuple):
        return tuple(resolve(v, rng) for v in value)
    if isinstance(value, list):
        return [resolve(v, rng) for v in value]
    if isinstance(value, Mapping):
        return {k: resolve(v, rng) for k, v in value.items()}
    return value
