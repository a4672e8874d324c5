"""Journal records, checked like any input before the plan applies them.

A line of a journal segment passed its checksum: it is what some writer wrote. That does not make
it applicable. A newer hippo_dask may write a record type or a sequence type this version does not
know, a user's own sequence class may not be importable here, and a buggy or hostile writer can put
any JSON in a line (wrong field types, a NaN or negative profile, a value nested thousands of levels
deep). :func:`parse` turns one decoded line into a typed record or raises :class:`BadRecord` with
the reason, so that the plan skips exactly that record, warns naming the segment and the line, and
applies the rest.

Records name the states they are about by a trial passing through them and a step, never by node
numbers (see :mod:`hippo_dask.plan._plan`). Besides the fields every version wrote, this version
adds two, which older readers ignore:

``at`` (metrics, profile)
    The writer's clock in nanoseconds: the newest measurement of a state wins, whatever order a
    reader finds the records in (:data:`Stamp`).
``id`` (checkpoint) and ``ids`` (forget)
    A checkpoint record's unique id, and the ids a ``forget`` removes: a forget is a tombstone of
    those records, so it wins whichever of the two a reader finds first, and a checkpoint written
    again later under a new id is not hidden by it.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hippo_dask._constants import MAX_STEPS
from hippo_dask.seq import Sequence, from_dict
from hippo_dask.trial import Trial

__all__ = [
    "MAX_DEPTH",
    "MAX_STEPS",
    "BadRecord",
    "CheckpointRecord",
    "ForgetRecord",
    "MetricsRecord",
    "Position",
    "ProfileRecord",
    "RequestRecord",
    "Stamp",
    "StateRecord",
    "TrialBuilder",
    "parse",
    "to_raw",
]

#: Deepest nesting of lists and dicts a record may hold (a trial's fixed values are far shallower).
MAX_DEPTH = 64

Position = tuple[str, int]
"""Where a record was read: (segment name, line number); ``("", 0)`` for a record not read from a
segment (this process's own, or one without a place)."""

Stamp = tuple[int, str, int]
"""Order of two measurements of one state: the writer's clock (``at``, ns), or for records of
older versions, which carry none, ``(0, segment, line)`` (the order that version's readers applied
them in). Equal stamps fall back to the values themselves."""

NOWHERE: Position = ("", 0)


class BadRecord(ValueError):
    """A journal record that passed its checksum but cannot be applied; the message says why."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """``trial`` (journaled as ``id``) was asked for ``steps`` steps under ``tag``."""

    id: str
    trial: Trial
    steps: int
    tag: str


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """The state after ``step`` steps of ``trial`` is saved at ``uri``; ``id`` names this record
    (records of older versions have none and are named by their ``position``)."""

    trial: str
    step: int
    uri: str
    id: str | None
    position: Position


@dataclass(frozen=True, slots=True)
class ForgetRecord:
    """The checkpoint records ``ids`` of that state are gone; ``ids`` is ``None`` in records of
    older versions, which forget the state's checkpoints found before them (by position)."""

    trial: str
    step: int
    ids: tuple[str, ...] | None
    position: Position


@dataclass(frozen=True, slots=True)
class MetricsRecord:
    """Metrics measured at the state after ``step`` steps of ``trial``."""

    trial: str
    step: int
    values: dict[str, float]
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """Seconds per step measured on the node holding ``trial``'s step ``step - 1``."""

    trial: str
    step: int
    seconds: float
    stamp: Stamp


StateRecord = CheckpointRecord | ForgetRecord | MetricsRecord | ProfileRecord
Record = RequestRecord | StateRecord


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and dicts in ``value`` nest deeper than ``limit`` (without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _text(raw: dict[str, Any], field: str, *, empty: bool = False) -> str:
    value = raw.get(field)
    if not isinstance(value, str):
        raise BadRecord(f"`{field}` must be a string, got {type(value).__name__}")
    if not empty and not value:
        raise BadRecord(f"`{field}` must not be empty")
    return value


def _step(raw: dict[str, Any], field: str, low: int) -> int:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRecord(f"`{field}` must be a whole number, got {value!r:.60}")
    if not low <= value <= MAX_STEPS:
        raise BadRecord(f"`{field}` must be in {low}..{MAX_STEPS}, got {value}")
    return value


def _at(raw: dict[str, Any]) -> int:
    value = raw.get("at", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRecord(f"`at` must be a whole number of nanoseconds >= 0, got {value!r:.60}")
    return value


def _stamp(raw: dict[str, Any], position: Position) -> Stamp:
    at = _at(raw)
    # A clocked record's stamp must not depend on where it is read (its writer applied it before
    # it had a position); only older versions' records, which carry no clock, use the position.
    return (at, "", 0) if at else (0, *position)


class TrialBuilder:
    """:meth:`Trial.from_dict <hippo_dask.Trial.from_dict>` that builds each distinct sequence
    once: the trials of a search space share a few sequences, and building (and validating) a
    sequence costs more than looking up its JSON."""

    def __init__(self) -> None:
        self._sequences: dict[str, Sequence] = {}

    def __call__(self, spec: dict[str, Any]) -> Trial:
        fixed, sequences = spec.get("fixed", {}), spec.get("sequences", {})
        if not isinstance(fixed, dict) or not isinstance(sequences, dict):
            raise TypeError("a trial's `fixed` and `sequences` must be objects")
        built: dict[str, Sequence] = {}
        for name, description in sequences.items():
            key = json.dumps(description, sort_keys=True)
            sequence = self._sequences.get(key)
            if sequence is None:
                if not isinstance(description, dict):
                    raise TypeError(f"sequence {name!r} must be an object")
                sequence = self._sequences[key] = from_dict(description)
            built[name] = sequence
        return Trial(**fixed, **built)


def _request(
    raw: dict[str, Any],
    trials: Callable[[str], Trial | None],
    build: Callable[[dict[str, Any]], Trial],
) -> RequestRecord:
    trial_id = _text(raw, "id")
    steps = _step(raw, "steps", 1)
    tag = _text(raw, "tag", empty=True)
    trial = trials(trial_id)
    if trial is None:
        spec = raw.get("trial")
        if not isinstance(spec, dict):
            raise BadRecord(f"`trial` must be an object, got {type(spec).__name__}")
        try:
            trial = build(spec)
        except RecursionError:
            raise BadRecord("its trial is nested too deeply to rebuild") from None
        except Exception as exc:  # noqa: BLE001 - whatever a rebuilt sequence raises
            raise BadRecord(f"its trial cannot be rebuilt: {type(exc).__name__}: {exc}") from None
    return RequestRecord(trial_id, trial, steps, tag)


def _values(raw: dict[str, Any]) -> dict[str, float]:
    values = raw.get("values")
    if not isinstance(values, dict):
        raise BadRecord(f"`values` must be an object, got {type(values).__name__}")
    out: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise BadRecord(f"metric {name!r:.60} must be a number, got {type(value).__name__}")
        out[name] = float(value)  # NaN and infinities are measurements too
    return out


def _seconds(raw: dict[str, Any]) -> float:
    value = raw.get("seconds")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadRecord(f"`seconds` must be a number, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRecord(f"`seconds` must be finite and >= 0, got {seconds}")
    return seconds


def _ids(raw: dict[str, Any]) -> tuple[str, ...] | None:
    if "ids" not in raw:
        return None
    ids = raw["ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise BadRecord("`ids` must be a list of non-empty strings")
    return tuple(ids)


def parse(
    raw: Any,
    position: Position,
    trials: Callable[[str], Trial | None] = lambda _: None,
    build: Callable[[dict[str, Any]], Trial] = Trial.from_dict,
) -> Record:
    """The typed record of one decoded journal line.

    Parameters
    ----------
    raw
        The line's JSON value.
    position
        Where it was read (segment, line), or :data:`NOWHERE`.
    trials
        Looks up an already known trial by id, so a request for it is not rebuilt.
    build
        Builds a trial from its journal form (default :meth:`Trial.from_dict`).

    Raises
    ------
    BadRecord
        If the record cannot be applied; the message says why, not where.
    """
    if not isinstance(raw, dict):
        raise BadRecord(f"a record must be an object, got {type(raw).__name__}")
    if _depth_exceeds(raw, MAX_DEPTH):
        raise BadRecord(f"it nests lists or objects deeper than {MAX_DEPTH} levels")
    op = raw.get("op")
    if op == "request":
        return _request(raw, trials, build)
    if op not in ("checkpoint", "forget", "metrics", "profile"):
        raise BadRecord(
            f"unknown record type {op!r:.60} (written by a newer hippo_dask? upgrade to read it)"
        )
    trial = _text(raw, "trial")
    if op == "profile":
        return ProfileRecord(trial, _step(raw, "step", 1), _seconds(raw), _stamp(raw, position))
    step = _step(raw, "step", 1)
    if op == "checkpoint":
        record_id = raw.get("id")
        if record_id is not None and (not isinstance(record_id, str) or not record_id):
            raise BadRecord("`id` must be a non-empty string")
        return CheckpointRecord(trial, step, _text(raw, "uri"), record_id, position)
    if op == "forget":
        return ForgetRecord(trial, step, _ids(raw), position)
    return MetricsRecord(trial, step, _values(raw), _stamp(raw, position))


def to_raw(record: StateRecord) -> dict[str, Any]:
    """The journal form of ``record``: :func:`parse` of it (at the same position) gives it back."""
    raw: dict[str, Any] = {"trial": record.trial, "step": record.step}
    if isinstance(record, CheckpointRecord):
        raw.update(op="checkpoint", uri=record.uri)
        if record.id is not None:
            raw["id"] = record.id
    elif isinstance(record, ForgetRecord):
        raw["op"] = "forget"
        if record.ids is not None:
            raw["ids"] = list(record.ids)
    elif isinstance(record, MetricsRecord):
        raw.update(op="metrics", values=dict(record.values))
    else:
        raw.update(op="profile", seconds=record.seconds)
    if isinstance(record, (MetricsRecord, ProfileRecord)) and record.stamp[0]:
        raw["at"] = record.stamp[0]
    return raw
