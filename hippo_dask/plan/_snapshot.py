"""Snapshots of a replayed plan: reopening costs what was journaled since, not the whole history.

A journal only grows, so replaying it from the first segment costs more every day a study runs.
A snapshot is the plan as a reader holds it after applying a known set of segments: its trials,
its nodes with their checkpoints, metrics, profiles and requests, the merge bookkeeping of
:mod:`hippo_dask.plan._merge` (checkpoint record ids, tombstones, measurement stamps) and the
records still waiting for their request. Because records merge the same in any order, a reader
may start from a snapshot and apply every segment the snapshot does not list, in whatever order
it finds them, and end with the plan a full replay gives.

Layout and format. ``<root>/plan/snapshots/<20-digit ns clock>-<session>.snap``, written whole or
not at all (like segments), never changed. The file is a header line
``hippo-plan-snapshot <format> <crc32 of the body, 8 hex> <body length>`` and a zlib-compressed
JSON body. A snapshot is storage input like any other: a wrong checksum, length, format or
content makes the reader warn (:class:`~hippo_dask.errors.HippoWarning`, naming the file) and
try the next older one, and without a valid one it replays the segments.

Who writes them. :meth:`SearchPlan.compact <hippo_dask.plan.SearchPlan.compact>`; a ``Study`` calls it
when it closes once ``hippo.snapshot-every`` records were applied or written since the snapshot
it opened from; ``hippo-dask compact`` does it on demand.

What is deleted. Nothing, by default: segments stay, so every reader (one that opened before the
snapshot, one of an older version) still finds every record. ``hippo-dask compact --prune``
deletes the segments and older snapshots the new snapshot holds, after reading the new snapshot
back and checking it; do that only while no study or dashboard has the plan open, since a reader
that opened before it and has not read a pruned segment yet would miss its records.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from hippo_dask._fs import list_folder
from hippo_dask.errors import JournalError
from hippo_dask.plan._journal import Journal
from hippo_dask.seq import from_dict
from hippo_dask.trial import Trial

__all__ = [
    "FORMAT",
    "SnapshotError",
    "decode",
    "decode_trials",
    "encode",
    "encode_trials",
    "list_snapshots",
    "prune",
    "read",
    "write",
]

logger = logging.getLogger(__name__)

FORMAT = 1
_MAGIC = b"hippo-plan-snapshot"


class SnapshotError(ValueError):
    """A snapshot that fails its checks; the message says which."""


def folder(journal: Journal) -> str:
    """Where ``journal``'s snapshots live: ``<root>/plan/snapshots``."""
    return f"{journal.folder}/snapshots"


def encode(payload: dict[str, Any]) -> bytes:
    """The bytes of a snapshot holding ``payload`` (a JSON-able dict)."""
    body = zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 6)
    return b"%s %d %08x %d\n" % (_MAGIC, FORMAT, zlib.crc32(body), len(body)) + body


def decode(data: bytes) -> dict[str, Any]:
    """The payload of a snapshot's bytes; :class:`SnapshotError` if any check fails."""
    head, _, body = data.partition(b"\n")
    parts = head.split(b" ")
    if len(parts) != 4 or parts[0] != _MAGIC:
        raise SnapshotError("it does not start with a snapshot header")
    try:
        version, crc, length = int(parts[1]), int(parts[2], 16), int(parts[3])
    except ValueError:
        raise SnapshotError("its header is damaged") from None
    if version != FORMAT:
        raise SnapshotError(f"it has format {version}; this hippo_dask reads format {FORMAT}")
    if len(body) != length or zlib.crc32(body) != crc:
        raise SnapshotError("it is torn or corrupt (length or checksum do not match)")
    try:
        payload = json.loads(zlib.decompress(body))
    except (ValueError, zlib.error, RecursionError) as exc:
        raise SnapshotError(f"its body cannot be read: {exc}") from None
    if not isinstance(payload, dict):
        raise SnapshotError("its body is not an object")
    return payload


def list_snapshots(journal: Journal) -> list[str]:
    """Paths of the journal's snapshots, newest first."""
    try:
        entries = list_folder(journal.fs, folder(journal), detail=False)
    except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
        raise JournalError(f"cannot list {folder(journal)}: {type(exc).__name__}: {exc}") from None
    names = [str(e).rsplit("/", 1)[-1] for e in entries]
    return [
        f"{folder(journal)}/{n}"
        for n in sorted(names, reverse=True)
        if n.endswith(".snap") and not n.startswith(".")
    ]


def read(journal: Journal) -> Iterator[tuple[str, bytes]]:
    """Each snapshot's path and bytes, newest first."""
    for path in list_snapshots(journal):
        try:
            yield path, journal.fs.cat_file(path)
        except FileNotFoundError:
            continue  # pruned meanwhile
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def write(journal: Journal, payload: dict[str, Any]) -> str:
    """Write a new snapshot of ``payload``; returns its path."""
    path = f"{folder(journal)}/{time.time_ns():020d}-{journal.session}.snap"
    try:
        journal.write_object(path, encode(payload))
    except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
        raise JournalError(f"cannot write snapshot {path}: {type(exc).__name__}: {exc}") from None
    return path


def prune(journal: Journal, path: str, segments: Iterable[str]) -> None:
    """Delete ``segments`` and the snapshots older than ``path`` (which holds them)."""
    doomed = [f"{journal.folder}/{name}" for name in segments]
    doomed += [p for p in list_snapshots(journal) if p < path]
    for item in doomed:
        try:
            journal.fs.rm_file(item)
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(f"cannot delete {item}: {type(exc).__name__}: {exc}") from None
    logger.info("compact: pruned %d segments and snapshots under %s", len(doomed), journal.folder)


def encode_trials(trials: Mapping[str, Trial]) -> tuple[list[Any], dict[str, Any]]:
    """The distinct sequences of ``trials`` and each trial as ``[fixed, {name: index}]``: the
    trials of a search space share a few sequences, stored (and rebuilt) once each."""
    table: dict[str, int] = {}
    out: dict[str, Any] = {}
    for trial_id, trial in trials.items():
        refs = {}
        for name, sequence in trial.to_dict()["sequences"].items():
            refs[name] = table.setdefault(json.dumps(sequence, sort_keys=True), len(table))
        out[trial_id] = [dict(trial.fixed), refs]
    return [json.loads(text) for text in table], out


def decode_trials(sequences: list[Any], trials: Mapping[str, Any]) -> dict[str, Trial]:
    """The trials :func:`encode_trials` wrote, by id; ``ValueError`` if one rebuilds differently."""
    built = [from_dict(spec) for spec in sequences]
    out = {}
    for trial_id, (fixed, refs) in trials.items():
        trial = Trial(**fixed, **{name: built[i] for name, i in refs.items()})
        if trial.id != trial_id:
            raise ValueError(f"trial {trial_id} rebuilds as {trial.id}")
        out[trial_id] = trial
    return out
