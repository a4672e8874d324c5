"""Temporary files that writers killed mid-write leave in a study root, for gc to collect.

Every writer in a study root writes whole files under temporary names and renames them into
place (object stores need no temporaries: one PUT). A writer killed between the two leaves the
temporary behind. These are their names, and only these are collected:

==============================================  ===============================================
``ckpt/.<name>.ckpt.<16 hex>.tmp``              a checkpoint being written
``ckpt/.leases/.<owner>.json.<16 hex>.tmp``     a driver's lease being written
``plan/.<segment>.tmp``                         a journal segment being written
``plan/.probe-<session>``                       the write probe of a study being opened
``metrics.zarr/**/<name>.<32 hex>.partial``     a zarr chunk or ``zarr.json`` being written by
                                                zarr's local store
==============================================  ===============================================

A temporary is collected once it is older than the threshold (modification time, storage's
clock): a live writer holds one for the time one file takes to write.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final

from hippo_dask._fs import STORAGE_NAME
from hippo_dask.storage._leases import modification_time

__all__ = ["Temporary", "find_temporaries"]

_CHECKPOINT_TMP: Final = re.compile(rf"\.{STORAGE_NAME.pattern}\.ckpt\.[0-9a-f]{{16}}\.tmp")
_LEASE_TMP: Final = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.json\.[0-9a-f]{16}\.tmp")
_JOURNAL_TMP: Final = re.compile(
    r"\.[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.tmp|\.probe-[A-Za-z0-9_-]{1,100}"
)
_ZARR_TMP: Final = re.compile(r"[^/]*\.[0-9a-f]{32}\.partial")


@dataclass(frozen=True)
class Temporary:
    """A temporary file: its path on the filesystem, size and age in seconds."""

    path: str
    size: int
    age: float


def _entries(fs: Any, folder: str, *, recursive: bool = False) -> list[dict[str, Any]]:
    try:
        if recursive:
            found = fs.find(folder, detail=True, withdirs=False)
            return list(found.values()) if isinstance(found, dict) else []
        entries: list[dict[str, Any]] = fs.ls(folder, detail=True, refresh=True)
        return entries
    except (FileNotFoundError, NotADirectoryError):
        return []


def find_temporaries(fs: Any, root: str, *, now: float | None = None) -> list[Temporary]:
    """Temporaries a killed writer may have left under study root ``root`` (a path on ``fs``).

    Lists ``ckpt/``, ``ckpt/.leases/``, ``plan/`` and, recursively, ``metrics.zarr/``; returns
    files whose names are a writer's temporary names (see the module's documentation), with
    their ages. Creates nothing.
    """
    now = time.time() if now is None else now
    root = root.rstrip("/")
    places = (
        (f"{root}/ckpt", _CHECKPOINT_TMP, False),
        (f"{root}/ckpt/.leases", _LEASE_TMP, False),
        (f"{root}/plan", _JOURNAL_TMP, False),
        (f"{root}/plan/snapshots", _JOURNAL_TMP, False),
        (f"{root}/metrics.zarr", _ZARR_TMP, True),
    )
    found: list[Temporary] = []
    for folder, pattern, recursive in places:
        for entry in _entries(fs, folder, recursive=recursive):
            path = str(entry["name"])
            if entry.get("type") != "file" or not pattern.fullmatch(path.rsplit("/", 1)[-1]):
                continue
            age = now - modification_time(entry)
            found.append(Temporary(path, int(entry.get("size") or 0), age))
    return found
