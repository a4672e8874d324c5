"""A trial: fixed values plus one sequence per sequential hyper-parameter.

``Trial(lr=seq.StepLR(0.1, 0.1, [30, 45]), optimizer="sgd", seed=0)``: a plain value is fixed
for the whole run and goes to the trainer's constructor; a sequence is sequential and its values
go to ``Trainer.setup`` as they change. Fixed values are normalised to their JSON form when the
trial is built (tuples become lists, numpy scalars Python scalars), because that is what the
search plan's journal stores and what a resumed study hands back to the trainer.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import numpy as np

from hippo_dask._settings import setting
from hippo_dask.errors import HippoError, InvalidSpaceError, InvalidTrialError
from hippo_dask.seq import Sampleable, Sequence, SequenceTemplate, from_dict

__all__ = ["ENGINE_PREFIX", "Trial", "check_steps", "check_user_names"]

ENGINE_PREFIX: Final = "_hippo_"
"""Hyper-parameter names starting with this are the engine's own values (the trainer's code
fingerprint, the isolation key of ``Study(sharing=False)``): the trainer never sees them, and
spaces and studies refuse them from users."""


def check_user_names(
    names: Iterable[str], who: str, error: type[HippoError] = InvalidTrialError
) -> None:
    """Refuse hyper-parameter names the engine keeps for itself (``_hippo_*``).

    Raises
    ------
    InvalidTrialError
        (or ``error``) naming ``who``, the name and the fix.
    """
    for name in names:
        if isinstance(name, str) and name.startswith(ENGINE_PREFIX):
            rest = name[len(ENGINE_PREFIX) :].lstrip("_") or "value"
            raise error(
                f"{who}: hyper-parameter `{name}` starts with {ENGINE_PREFIX!r}, which hippo_dask "
                f"keeps for its own values (the trainer would never see it); rename it, e.g. "
                f"`{rest}`"
            )


def check_steps(steps: Any, who: str, argument: str = "steps") -> int:
    """``steps`` as an ``int`` if it is a whole number from 1 to ``hippo.max-steps``.

    Raises
    ------
    InvalidSpaceError
        Naming ``who``, the argument, the value and the bound, and how to raise the bound.
    """
    from hippo_dask._constants import MAX_STEPS  # what every journal reader applies

    bound = min(int(setting("max-steps")), MAX_STEPS)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or int(steps) < 1:
        raise InvalidSpaceError(
            f"{who}: `{argument}` must be a whole number of steps >= 1, got {steps!r}"
        )
    if int(steps) > bound:
        raise InvalidSpaceError(
            f"{who}: `{argument}` is {steps!r}, more than the {bound:,} steps a request may ask "
            f"for (planning cost grows with a request's steps, so this is almost surely a "
            f"typo); ask for fewer, or raise the bound with "
            f"dask.config.set({{'hippo.max-steps': {int(steps)}}})"
        )
    return int(steps)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _non_str_key(value: Any) -> Any:
    """A dict key that JSON would silently turn into a string, if ``value`` holds one."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return key
            found = _non_str_key(item)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for item in value:
            found = _non_str_key(item)
            if found is not None:
                return found
    return None


def _normalise_fixed(name: str, value: Any) -> Any:
    if isinstance(value, (Sampleable, SequenceTemplate)):
        raise InvalidTrialError(
            f"Trial: `{name}` = {value!r} is still a distribution; draw trials from a "
            "RandomSpace (or pass a plain value) instead of building a Trial with it"
        )
    bad_key = _non_str_key(value)
    if bad_key is not None:
        raise InvalidTrialError(
            f"Trial: fixed value `{name}` = {value!r} cannot be stored in the search plan: dict "
            f"key {bad_key!r} is not a str (JSON would turn it into {str(bad_key)!r}); use str keys"
        )
    try:
        text = json.dumps(value, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        if isinstance(value, float) and not math.isfinite(value):
            why = "NaN and inf cannot be compared or stored"
        else:
            why = f"{exc}"
        raise InvalidTrialError(
            f"Trial: fixed value `{name}` = {value!r} cannot be stored in the search plan "
            f"({why}); use str, int, float, bool, None, or lists and dicts of them, and build "
            "objects inside the trainer from such a value"
        ) from None
    return json.loads(text)


def _freeze_json(value: Any) -> Any:
    """A hashable twin of a JSON value (lists become tuples, dicts sorted item tuples)."""
    if isinstance(value, list):
        return ("__list__", tuple(_freeze_json(v) for v in value))
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((k, _freeze_json(v)) for k, v in value.items())))
    if isinstance(value, bool) or value is None:
        return ("__const__", value)
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, int):
        return ("int", value)
    return value


class Trial:
    """Fixed values and sequences of one configuration; immutable and hashable.

    Parameters
    ----------
    **values
        Hyper-parameters by name: a :class:`hippo_dask.seq.Sequence` is sequential, anything else
        is fixed (and must be JSON-serialisable).

    Examples
    --------
    >>> from hippo_dask import Trial, seq
    >>> t = Trial(lr=seq.StepLR(0.1, 0.1, [30]), optimizer="sgd")
    >>> t.values_at(30)
    {'lr': 0.010000000000000002}
    """

    __slots__ = ("fixed", "sequences", "names", "kinds", "id", "fixed_key", "_hash")
    fixed: Mapping[str, Any]
    sequences: Mapping[str, Sequence]
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    id: str
    fixed_key: tuple[Any, ...]

    def __init__(self, **values: Any) -> None:
        fixed: dict[str, Any] = {}
        sequences: dict[str, Sequence] = {}
        for name in sorted(values):
            value = values[name]
            if isinstance(value, Sequence):
                sequences[name] = value
            else:
                fixed[name] = _normalise_fixed(name, value)
        names = tuple(sequences)
        set_ = object.__setattr__
        set_(self, "fixed", MappingProxyType(fixed))
        set_(self, "sequences", MappingProxyType(sequences))
        set_(self, "names", names)
        set_(self, "kinds", tuple(sequences[n].kind for n in names))
        set_(self, "fixed_key", tuple((k, _freeze_json(v)) for k, v in fixed.items()))
        body = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        set_(self, "id", hashlib.sha256(body.encode()).hexdigest()[:20])
        set_(self, "_hash", hash(self.id))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Trial is immutable; build a new one")

    @property
    def config(self) -> dict[str, Any]:
        """Every hyper-parameter by name: fixed values and sequence objects."""
        return {**self.fixed, **self.sequences}

    def values_at(self, step: int) -> dict[str, Any]:
        """The sequential values used to train step ``step``."""
        return {name: seq(step) for name, seq in self.sequences.items()}

    def value_key(self, step: int) -> tuple[Any, ...]:
        """The sequential values at ``step`` as a tuple in ``names`` order (for indexing)."""
        return tuple(self.sequences[name](step) for name in self.names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible description; :meth:`from_dict` rebuilds an equal trial."""
        return {
            "fixed": dict(self.fixed),
            "sequences": {name: seq.to_dict() for name, seq in self.sequences.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        """Rebuild a trial from :meth:`to_dict` output."""
        sequences = {name: from_dict(spec) for name, spec in data.get("sequences", {}).items()}
        return cls(**data.get("fixed", {}), **sequences)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trial):
            return NotImplemented
        return self.id == other.id

    def __hash__(self) -> int:
        return self._hash  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.config.items()]
        return f"Trial({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Trial.from_dict, (self.to_dict(),))
