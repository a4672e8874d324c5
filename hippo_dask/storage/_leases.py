"""Leases: which checkpoint files belong to stages still running, for gc.

A stage saves periodic checkpoints (``hippo.checkpoint-interval``) long before it reports, and
the plan journals them only when it reports. Until then such a file looks like one a killed run
left behind. The driver that submitted the stage knows better, so it *holds a lease*: one small
JSON object per driver, ``<root>/ckpt/.leases/<owner>.json``::

    {"format": 1, "interval": 60.0, "checkpoints": ["<name>", ...]}

naming every checkpoint its stages in flight save or will save (their points, also those
added while they run) and, during a journal outage, those whose records are not journaled
yet. The driver rewrites it when that set changes and at least every ``interval`` seconds
(``hippo.lease-interval``) while it has any, and removes it when it closes.

gc keeps the files a *fresh* lease names: one modified less than :data:`LIFETIMES` intervals
ago, by the storage's clock (the same clock as the files' ages). A killed driver stops
refreshing its lease; Dask cancels its stages when its client goes; a lease that old names
nothing any more, and gc removes it. A pre-empted worker does not end its driver's lease: the
driver records what the lost stage saved (found by name) and plans it again from there.

Leases are read as untrusted input: a lease that cannot be read or parsed is reported, and
while it is younger than gc's orphan age gc deletes no unreferenced files at all, since it
cannot tell what it protects.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from hippo_dask._fs import STORAGE_NAME, list_folder, remove_file

if TYPE_CHECKING:
    from hippo_dask.storage._study_store import StudyCheckpointStore

__all__ = ["LIFETIMES", "Lease", "lease_folder", "read_leases", "remove_lease", "write_lease"]

LIFETIMES: Final = 3
"""A lease is fresh for this many of its intervals after it was last written."""

FORMAT: Final = 1
_FOLDER: Final = ".leases"
_OWNER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: A lease larger than this is not read (a driver's lease names a few thousand files at most).
MAX_BYTES: Final = 16 * 2**20
#: The longest lease interval accepted (a day): a longer one would protect files for ever.
MAX_INTERVAL: Final = 86400.0


@dataclass(frozen=True)
class Lease:
    """One driver's lease as gc read it.

    ``checkpoints`` holds file names (``<name>.ckpt``); ``problem`` says why the lease could
    not be used (then ``checkpoints`` is empty), else it is ``None``.
    """

    path: str
    modified: float
    interval: float
    checkpoints: frozenset[str]
    problem: str | None = None

    def fresh(self, now: float) -> bool:
        """Whether the driver that wrote it may still be running at ``now`` (unix seconds)."""
        return now - self.modified < LIFETIMES * self.interval


def lease_folder(store: StudyCheckpointStore) -> str:
    """The folder that holds ``store``'s leases."""
    return f"{store.folder}/{_FOLDER}"


def _owner(owner: str) -> str:
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        raise ValueError(
            f"The value of `owner` is {owner!r}, but must be 1-64 letters, digits, '_' or '-' "
            "starting with a letter or digit (a driver id)."
        )
    return owner


def write_lease(
    store: StudyCheckpointStore, owner: str, names: Collection[str], interval: float
) -> None:
    """Write ``owner``'s lease on checkpoints ``names`` (atomically, replacing the last one)."""
    interval = float(interval)
    if not math.isfinite(interval) or not 0 < interval <= MAX_INTERVAL:
        raise ValueError(
            f"The value of `interval` is {interval!r}, but must be seconds in (0, {MAX_INTERVAL:g}]"
            " (set hippo.lease-interval accordingly)."
        )
    checked = sorted(set(names))
    for name in checked:
        store._path(name)  # validates
    body = json.dumps(
        {"format": FORMAT, "interval": interval, "checkpoints": checked}, separators=(",", ":")
    ).encode()
    path = f"{lease_folder(store)}/{_owner(owner)}.json"
    store._storage_call(lambda: store._write(path, body), f"cannot write lease {path}")


def remove_lease(store: StudyCheckpointStore, owner: str) -> None:
    """Remove ``owner``'s lease; removing a missing one does nothing."""
    path = f"{lease_folder(store)}/{_owner(owner)}.json"
    store._storage_call(partial(remove_file, store.fs, path), f"cannot remove lease {path}")


def read_leases(store: StudyCheckpointStore) -> list[Lease]:
    """Every lease file of ``store``, parsed and checked; unusable ones carry a ``problem``."""
    folder = lease_folder(store)
    listing = partial(list_folder, store.fs, folder, detail=True)
    leases: list[Lease] = []
    for entry in store._storage_call(listing, f"cannot list leases in {folder}"):
        path = str(entry["name"])
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") != "file" or name.startswith(".") or not name.endswith(".json"):
            continue
        modified = modification_time(entry)
        size = int(entry.get("size") or 0)
        if size > MAX_BYTES:
            leases.append(Lease(path, modified, 0.0, frozenset(), f"larger than {MAX_BYTES} bytes"))
            continue
        try:
            data = store._storage_call(partial(store.fs.cat_file, path), f"cannot read {path}")
        except OSError as exc:
            leases.append(Lease(path, modified, 0.0, frozenset(), str(exc)))
            continue
        leases.append(_parse(path, modified, bytes(data)))
    return leases


def _parse(path: str, modified: float, data: bytes) -> Lease:
    def bad(why: str) -> Lease:
        return Lease(path, modified, 0.0, frozenset(), why)

    try:
        body = json.loads(data)
    except ValueError as exc:
        return bad(f"not JSON ({exc})")
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        return bad(f"not a format-{FORMAT} lease object")
    interval, names = body.get("interval"), body.get("checkpoints")
    if (
        isinstance(interval, bool)
        or not isinstance(interval, (int, float))
        or not math.isfinite(interval)
        or not 0 < interval <= MAX_INTERVAL
    ):
        return bad(f"`interval` is {interval!r}, not seconds in (0, {MAX_INTERVAL:g}]")
    if not isinstance(names, list) or not all(
        isinstance(n, str) and STORAGE_NAME.fullmatch(n) for n in names
    ):
        return bad("`checkpoints` is not a list of checkpoint names")
    return Lease(path, modified, float(interval), frozenset(f"{n}.ckpt" for n in names))


def modification_time(entry: dict[str, Any]) -> float:
    """An fsspec listing entry's modification time in unix seconds; ``inf`` when the listing
    does not say (or says it in a form not understood), so an age computed from it is never
    old enough for gc to delete anything on it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        modified = entry.get(key)
        if modified is None or modified == "":
            continue
        if isinstance(modified, str):
            try:
                modified = datetime.fromisoformat(modified)  # "Z" understood since 3.11
            except ValueError:
                continue
        if hasattr(modified, "timestamp"):
            modified = modified.timestamp()
        try:
            value = float(modified)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return math.inf
