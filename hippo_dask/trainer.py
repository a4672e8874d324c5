"""The Trainer: what users write so the engine can train, pause, branch and resume their model.

The engine calls, on a worker:

1. ``Trainer(config)`` with the trial's fixed values (optimizer name, seed, width, ...);
2. ``load_state_dict(state)`` when the stage resumes from a checkpoint;
3. ``setup(hp)`` with every sequential value right after (1) or (2), and later with only the
   values that changed before the next step;
4. ``train(steps)`` to train that many steps at the current values (``train(2); train(3)`` must
   give the same weights as ``train(5)``, which a resumable data order makes true);
5. ``evaluate()`` where a request ends, and ``state_dict()`` where a checkpoint is due.

This follows Hippo's client library (section 5.2, Figure 9), where ``setup`` receives the
updated sequential values.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Final

from hippo_dask._constants import BASE_COLUMNS
from hippo_dask.errors import InvalidMetricsError

__all__ = ["RESERVED_METRICS", "Trainer", "check_metrics"]

RESERVED_METRICS: Final = frozenset(BASE_COLUMNS) | {"trial_id", "status", "error", "error_type"}
"""Names ``evaluate()`` may not use: the metrics store's own columns (``trial``, ``step``,
``wall_time``, ``worker``, ``writer``, ``kind``) and those of ``Result.trials`` and
``Study.curves`` (``trial_id``, ``status``, ``error``, ``error_type``)."""


class Trainer(ABC):
    """Base class of a user's training code.

    Parameters
    ----------
    config
        The trial's fixed values, by name, in their JSON form (lists, not tuples).

    Notes
    -----
    ``state_dict`` must hold everything needed to resume bit for bit: model and optimizer state,
    data order position, random generator states, and any counters. Values may be tensors, numpy
    arrays, Python scalars and strings, and nested dicts, lists and tuples of them; checkpoints
    carry them exactly and load them with ``torch.load(weights_only=True)``, so no code runs on
    load. :mod:`hippo_dask.torch` has a resumable data order and RNG capture to help.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    @abstractmethod
    def setup(self, hp: Mapping[str, Any]) -> None:
        """Apply sequential hyper-parameter values (all of them first, then only changes)."""

    @abstractmethod
    def train(self, steps: int) -> None:
        """Train ``steps`` steps at the current values."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Metrics of the current model, e.g. ``{"val_acc": 0.93, "val_loss": 0.21}``.

        Names are non-empty ``str`` other than :data:`RESERVED_METRICS`; values are real
        numbers (Python or numpy scalars, 0-d tensors), NaN and infinities included. A
        ``bool`` is refused (return ``float(flag)``), so is anything else: the trial then
        fails with :class:`~hippo_dask.InvalidMetricsError` and nothing it returned is kept.
        """

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly where training is now."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` (possibly in another process)."""


def check_metrics(metrics: Any, where: str) -> dict[str, float]:
    """``metrics`` as ``{name: float}`` if ``evaluate()`` may return it, else an error.

    Parameters
    ----------
    metrics
        What a trainer's ``evaluate()`` returned (or what a worker reported it returned).
    where
        Who returned it, for the message: ``"DigitsTrainer.evaluate()"``.

    Raises
    ------
    InvalidMetricsError
        Naming ``where``, the offending key and the fix: a result that is not a mapping, a
        name that is not a non-empty ``str`` or is one of :data:`RESERVED_METRICS`, a value
        that is not a real number (a ``bool``, a string, ``None``, a tensor of several
        elements, an int too large for a float).
    """
    if not isinstance(metrics, Mapping):
        raise InvalidMetricsError(
            f"{where} must return a dict of metric name to number, e.g. {{'val_acc': 0.93}}; "
            f"it returned a {type(metrics).__name__}"
        )
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidMetricsError(
                f"{where} returned the metric name {name!r} ({type(name).__name__}); metric "
                "names must be non-empty str, e.g. 'val_acc': use str keys"
            )
        if name in RESERVED_METRICS:
            raise InvalidMetricsError(
                f"{where} returned a metric named {name!r}, which the engine uses for its own "
                f"column; rename it (e.g. 'val_{name}'). Reserved names: "
                f"{', '.join(sorted(RESERVED_METRICS))}"
            )
        out[str(name)] = _number(value, where, name)
    return out


def _number(value: Any, where: str, name: str) -> float:
    """``value`` as a float if it is a real number (NaN and infinities included)."""
    raw = value
    if not isinstance(value, (bool, numbers.Real)) and callable(getattr(value, "item", None)):
        try:
            value = value.item()  # a 0-d tensor, a numpy scalar or 1-element array
        except Exception:  # noqa: BLE001 - e.g. "only one element tensors can be converted"
            raise InvalidMetricsError(
                f"{where} returned {name!r}: a {type(raw).__name__} of shape "
                f"{tuple(getattr(raw, 'shape', ()))}, not one number; return a single number, "
                "e.g. float(x.mean())"
            ) from None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise InvalidMetricsError(
            f"{where} returned {name!r}: {value!r}, a bool; metrics are numbers: return "
            f"float({value!r}) to record it as {float(value)!r}"
        )
    if not isinstance(value, numbers.Real):
        raise InvalidMetricsError(
            f"{where} returned {name!r}: {value!r:.80} ({type(raw).__name__}), not a real "
            "number; return a float (NaN and inf are allowed)"
        )
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        raise InvalidMetricsError(
            f"{where} returned {name!r}: {value!r:.80}, which does not fit a float64; return a "
            "float"
        ) from None
    return number
