"""The rows of the metrics store: :class:`MetricRow` (metrics measured) and :class:`StageRecord`.

Plain, validated value objects; :mod:`hippo_dask.storage._metrics` lays them out in zarr.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final

import numpy as np

from hippo_dask._constants import (
    BASE_COLUMNS,
    CANCELLED,
    DONE,
    ENDED,
    FAILED,
    LOST,
    RETRIED,
    STAGE_STATUSES,
    SUBMITTED,
)

__all__ = [
    "BASE_COLUMNS",
    "CANCELLED",
    "DONE",
    "ENDED",
    "FAILED",
    "LOST",
    "RETRIED",
    "STAGE_COLUMNS",
    "STAGE_STATUSES",
    "SUBMITTED",
    "MetricRow",
    "StageRecord",
]

STAGE_COLUMNS: Final = (
    "node",
    "start_step",
    "step",
    "started",
    "finished",
    "worker",
    "status",
    "error",
    "writer",
)
"""Columns of :meth:`MetricsStore.read_stages`."""


def _check_text(owner: str, name: str, value: object, *, empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{owner}.{name} must be a str, not {type(value).__name__}")
    if not empty and not value:
        raise ValueError(f"{owner}.{name} must not be empty")


def _check_step(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}.{name} must be an int, not {type(value).__name__}")
    step = int(value)
    if step < 0:
        raise ValueError(f"{owner}.{name} must be >= 0, got {step}")
    return step


def _check_time(owner: str, name: str, value: object, *, unknown: bool = False) -> float:
    """``value`` as unix seconds; NaN passes where ``unknown`` (a time nobody measured)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}.{name} must be a number, not {type(value).__name__}")
    seconds = float(value)
    if unknown and math.isnan(seconds):
        return seconds
    if not math.isfinite(seconds):
        raise ValueError(f"{owner}.{name} must be finite, got {seconds}")
    return seconds


@dataclass(frozen=True)
class MetricRow:
    """Metrics measured at one step of one state, reported for one trial through it.

    Parameters
    ----------
    trial
        Id of a trial whose path passes through the measured state (a state shared by several
        trials is reported once per trial that asks for it).
    step
        The step the state was trained to (>= 0).
    values
        Metric name -> value. NaN and infinities are kept as they are. A name must not be one
        of :data:`BASE_COLUMNS`.
    wall_time
        Unix seconds when the values were measured.
    worker
        Address or name of the worker that measured them.
    kind
        A label for the row (``"metrics"``; a caller may use e.g. ``"train"`` / ``"eval"``).
        Stage timings are :class:`StageRecord` objects, not rows of this kind.

    Raises
    ------
    TypeError, ValueError
        For a field of the wrong type or out of range.
    """

    trial: str
    step: int
    values: Mapping[str, float]
    wall_time: float
    worker: str
    kind: str = "metrics"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_text(owner, "trial", self.trial)
        _check_text(owner, "worker", self.worker, empty=True)
        _check_text(owner, "kind", self.kind)
        object.__setattr__(self, "step", _check_step(owner, "step", self.step))
        object.__setattr__(self, "wall_time", _check_time(owner, "wall_time", self.wall_time))
        if not isinstance(self.values, Mapping):
            raise TypeError(f"{owner}.values must be a mapping, not {type(self.values).__name__}")
        values: dict[str, float] = {}
        for name, value in self.values.items():
            _check_text(owner, "values key", name)
            if name in BASE_COLUMNS:
                raise ValueError(f"{owner}.values: metric name {name!r} is reserved")
            if isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise TypeError(
                    f"{owner}.values[{name!r}] must be a number, not {type(value).__name__}"
                )
            values[name] = float(value)
        object.__setattr__(self, "values", MappingProxyType(values))


@dataclass(frozen=True)
class StageRecord:
    """One event in the life of a stage: a bar of the Gantt chart of worker lanes, or its start.

    The driver writes two records per stage it submits, both naming the worker it is pinned
    to: ``"submitted"`` when it hands the stage to that worker, and one of the other statuses
    of :data:`STAGE_STATUSES` when the stage ends. A stage without an ending record is in
    flight: running if every stage submitted to that worker before it ended, else queued
    behind them (the worker runs its stages one at a time, in the order they were submitted).
    Writers older than these statuses wrote only ``"done"`` records.

    Parameters
    ----------
    node
        Id of the plan node the stage trained (the id of the trial owning that node).
    start_step
        The step the stage started from (0 when trained from scratch).
    step
        The step it stops at (>= ``start_step``); the planned end, whatever happened.
    started
        Unix seconds: when the worker started it (the worker's clock); in a ``"submitted"``
        record, when the driver submitted it (the driver's clock). NaN in an ending record
        when no worker reported a start (``"lost"``, ``"cancelled"``, a failure outside the
        trainer).
    finished
        Unix seconds when it ended (the worker's clock when the worker reported it, else the
        driver's); NaN in a ``"submitted"`` record.
    worker
        Address or name of the worker it ran (or runs) on.
    status
        One of :data:`STAGE_STATUSES`, or another label a caller chooses.
    error
        The exception type a ``"failed"`` or ``"retried"`` stage ended with (``"WorkerLost"``
        when its workers kept dying), else ``""``.

    Raises
    ------
    TypeError, ValueError
        For a field of the wrong type or out of range.
    """

    kind: ClassVar[str] = "stage"

    node: str
    start_step: int
    step: int
    started: float
    finished: float
    worker: str
    status: str = "done"
    error: str = ""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_text(owner, "node", self.node)
        _check_text(owner, "worker", self.worker, empty=True)
        _check_text(owner, "status", self.status)
        _check_text(owner, "error", self.error, empty=True)
        start = _check_step(owner, "start_step", self.start_step)
        stop = _check_step(owner, "step", self.step)
        if stop < start:
            raise ValueError(f"{owner}: step {stop} is before start_step {start}")
        object.__setattr__(self, "start_step", start)
        object.__setattr__(self, "step", stop)
        object.__setattr__(
            self, "started", _check_time(owner, "started", self.started, unknown=True)
        )
        object.__setattr__(
            self, "finished", _check_time(owner, "finished", self.finished, unknown=True)
        )
        if math.isnan(self.started) and self.status in (SUBMITTED, DONE):
            raise ValueError(f"{owner}.started must be finite in a {self.status!r} record")
        if math.isnan(self.finished) != (self.status == SUBMITTED):
            need = "NaN" if self.status == SUBMITTED else "finite"
            raise ValueError(
                f"{owner}.finished must be {need} in a {self.status!r} record, got {self.finished}"
            )
