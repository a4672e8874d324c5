"""Garbage collection of checkpoints: keep what pending work and future trials need.

A study writes a checkpoint at every stage end, and tuning runs for days: disks fill up. What
may go depends on what the user wants to keep, but never what a pending request resumes from
(the latest checkpoint on its path), since a study running in another process relies on it.
Levels, from most to least kept:

``all``
    Every checkpoint the plan refers to; only orphaned files go (written by a stage whose
    report never reached the journal: a killed driver, a cancelled stage), once older than
    ``orphan_age`` seconds and named by no fresh lease, so a running stage's files stay.
``branch-points`` (default)
    Also drops checkpoints that are neither a branch point of the plan (where trials diverge,
    so future trials of the study resume there) nor needed by a pending request.
``best``
    Keeps only what pending requests need and the final checkpoint of the best request by
    ``metric``: the smallest footprint that still lets you load the winner.

What gc may delete, and nothing else:

- files ``<root>/ckpt/<name>.ckpt`` of its own study (the root given), whatever locations the
  journal holds: a location that is not a file of this study's ``ckpt/`` folder (a hostile or
  foreign record) is reported in :attr:`GarbageReport.foreign` and left alone (see
  :mod:`hippo_dask.storage._study_store` for how locations resolve);
- the study's expired leases (``ckpt/.leases/``);
- temporaries that writers killed mid-write left, older than ``temp_age``
  (:mod:`hippo_dask.storage._sweep`).

Collecting while drivers run. gc (1) reads the plan and decides; (2) journals that it forgets
the doomed checkpoints, so drivers stop planning from them; (3) lists the checkpoint files,
(4) reads the leases, (5) reads the journal again. A request journaled before (5) is seen
there: what it resumes from (judged with the doomed checkpoints still present) is spared and
journaled again. A driver that journals a request after (5) reads the journal before it plans
(:class:`~hippo_dask.execution.Driver` refreshes after journaling new requests), so it sees
the records of (2) and plans from older states. A file is an orphan only if no record read in
(5) names it and no lease read in (4) holds it: a driver journals a stage's checkpoints before
its lease lets go of them, so reading leases first and the journal second misses neither.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from hippo_dask._fs import list_folder, remove_file
from hippo_dask._redact import mask_url
from hippo_dask.errors import HippoError
from hippo_dask.plan import Node, SearchPlan
from hippo_dask.storage._leases import modification_time
from hippo_dask.storage._study_store import CHECKPOINT_FOLDER, StudyCheckpointStore
from hippo_dask.storage._sweep import find_temporaries

__all__ = ["GarbageReport", "collect_garbage"]

logger = logging.getLogger(__name__)

KEEP_LEVELS = ("best", "branch-points", "all")

Item = tuple[Node, int]


@dataclass
class GarbageReport:
    """What a collection deleted (or would delete, in a dry run) and kept.

    ``deleted`` and ``orphans`` are checkpoint locations (``ckpt/<name>.ckpt``);
    ``temporaries`` paths of writers' temporary files; ``foreign`` locations the journal
    holds that are no file of this study (never deleted); ``spared`` doomed checkpoints kept
    because a request journaled during the collection resumes from them; ``held`` files kept
    because a running stage's lease names them; ``problems`` what stopped gc from deleting
    orphans (an unreadable lease).
    """

    deleted: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    temporaries: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    spared: list[str] = field(default_factory=list)
    held: int = 0
    kept: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"{verb} {len(self.deleted)} checkpoints and {len(self.orphans)} orphaned files "
            f"({self.bytes_freed / 1e6:.1f} MB); kept {self.kept} checkpoints"
        )
        if self.temporaries:
            text += f"; {len(self.temporaries)} temporary files of killed writers"
        if self.held:
            text += f"; {self.held} files of running stages kept"
        if self.spared:
            text += f"; {len(self.spared)} spared for requests journaled meanwhile"
        if self.foreign:
            text += f"; {len(self.foreign)} journaled locations outside this study left alone"
        return text


def _path_checkpoints(node: Node, extra: Mapping[Node, list[int]]) -> list[int]:
    return sorted({*node.checkpoint_steps, *extra.get(node, ())})


def _needed_by_pending(plan: SearchPlan, extra: Mapping[Item, str] | None = None) -> set[Item]:
    """The latest checkpoint on the path of every pending request, counting ``extra`` too."""
    more: dict[Node, list[int]] = {}
    for node, step in extra or {}:
        more.setdefault(node, []).append(step)
    needed: set[Item] = set()
    for node, steps in plan.pending():
        limit = steps
        for current in node.ancestors(inclusive=True):
            found = [s for s in _path_checkpoints(current, more) if current.start < s <= limit]
            if found:
                needed.add((current, found[-1]))
                break
            limit = current.start
    return needed


def _branch_points(plan: SearchPlan) -> set[Item]:
    points: set[Item] = set()
    for node in plan.nodes:
        parent = node.parent
        if parent is not None and node.start in parent.checkpoints:
            points.add((parent, node.start))
    return points


def _best(plan: SearchPlan, metric: str, mode: str) -> set[Item]:
    best: tuple[float, Node, int] | None = None
    for node in plan.nodes:
        for steps, count in node.requests.items():
            value = node.metrics.get(steps, {}).get(metric)
            if not count or value is None or not math.isfinite(value):
                continue
            score = value if mode == "max" else -value
            if best is None or score > best[0]:
                best = (score, node, steps)
    if best is None or best[2] not in best[1].checkpoints:
        return set()
    return {(best[1], best[2])}


def _check_age(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value >= 0
        or not math.isfinite(value)
    ):
        raise HippoError(f"gc: `{name}` must be seconds >= 0, got {value!r}")
    return float(value)


def collect_garbage(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    keep: str = "branch-points",
    metric: str | None = None,
    mode: str = "max",
    dry_run: bool = False,
    orphan_age: float = 3600.0,
    temp_age: float | None = None,
) -> GarbageReport:
    """Delete checkpoints of the study at ``url`` (its root: the folder holding ``plan/``).

    Deletes only files of this study's ``ckpt/`` folder, its expired leases and its writers'
    temporaries (see the module's documentation).

    Parameters
    ----------
    keep
        ``"best"``, ``"branch-points"`` or ``"all"`` (see the module's documentation).
    metric, mode
        What ``keep="best"`` ranks requests by.
    dry_run
        Report what would go, delete nothing.
    orphan_age
        Seconds an unreferenced checkpoint file must have existed before it is deleted (files
        a fresh lease names are kept whatever their age).
    temp_age
        Seconds a temporary file of a writer (checkpoint, lease, journal segment, zarr chunk)
        must have existed before it is deleted; defaults to ``orphan_age``.

    Raises
    ------
    HippoError
        If an argument is invalid.
    StudyNotFoundError
        If ``url`` holds no study (no ``plan/`` journal); nothing is created.
    StorageError
        If the URL's bucket does not exist; nothing is created.
    """
    if keep not in KEEP_LEVELS:
        raise HippoError(f"gc: `keep` must be one of {KEEP_LEVELS}, got {keep!r}")
    if keep == "best" and not metric:
        raise HippoError("gc: keep='best' needs metric= (and mode=) to know which trial is best")
    if mode not in ("max", "min"):
        raise HippoError(f"gc: `mode` must be 'max' or 'min', got {mode!r}")
    orphan_age = _check_age("orphan_age", orphan_age)
    temp_age = orphan_age if temp_age is None else _check_age("temp_age", temp_age)
    # Never creates anything: a URL holding no study (or a missing bucket) is an error.
    plan = SearchPlan.open(url, storage_options, create=False)
    store = StudyCheckpointStore(url, storage_options)
    report = GarbageReport(dry_run=dry_run)

    # (1) Decide on the plan as read.
    referenced = {
        (node, step): loc for node in plan.nodes for step, loc in node.checkpoints.items()
    }
    report.foreign = sorted({loc for loc in referenced.values() if store.name_of(loc) is None})
    keepers = _needed_by_pending(plan)
    if keep == "branch-points":
        keepers |= _branch_points(plan)
    elif keep == "best":
        keepers |= _best(plan, metric or "", mode)
    doomed = (
        {}
        if keep == "all"
        else {
            item: loc
            for item, loc in referenced.items()
            if item not in keepers and store.name_of(loc) is not None
        }
    )
    # (2) Journal the forgetting before any file goes.
    if not dry_run and doomed:
        for node, step in doomed:
            plan.forget_checkpoint(node, step)
        plan.flush()
    # (3) the files, (4) the leases, (5) the journal again, in this order.
    files = _listing(store)
    leases = store.leases()
    plan.refresh()
    now = _storage_clock(store)

    spared = {item: loc for item, loc in doomed.items() if item in _needed_by_pending(plan, doomed)}
    if spared:
        report.spared = sorted(spared.values())
        if not dry_run:
            for (node, step), loc in spared.items():
                plan.record_checkpoint(node, step, loc)
            plan.flush()
    in_use = {
        store.name_of(loc)
        for node in plan.nodes
        for step, loc in node.checkpoints.items()
        if not (dry_run and (node, step) in doomed and (node, step) not in spared)
    }
    held: set[str] = set()
    blocked = False
    for lease in leases:
        if lease.problem is not None:
            logger.warning("gc %s: lease %s unusable: %s", mask_url(url), lease.path, lease.problem)
            if now - lease.modified < orphan_age:
                blocked = True
                report.problems.append(
                    f"lease {lease.path} is unusable ({lease.problem}); no orphaned file is "
                    f"deleted while it is younger than the orphan age ({orphan_age:g} s). If no "
                    "study runs here, delete it."
                )
        elif lease.fresh(now):
            held |= lease.checkpoints

    for item, loc in doomed.items():
        name = store.name_of(loc)
        if item in spared or name in in_use:
            continue
        if name in held:
            report.held += 1
            continue
        report.deleted.append(f"{CHECKPOINT_FOLDER}/{name}")
        report.bytes_freed += files.get(name or "", (0, 0.0))[0]
    report.kept = len(referenced) - len(report.deleted)
    doomed_names = {store.name_of(loc) for loc in doomed.values()}
    for name, (size, modified) in sorted(files.items()):
        if name in in_use or name in doomed_names:
            continue
        if name in held:
            report.held += 1
        elif not blocked and now - modified >= orphan_age:
            report.orphans.append(f"{CHECKPOINT_FOLDER}/{name}")
            report.bytes_freed += size
    stale = [
        lease for lease in leases if not lease.fresh(now) and now - lease.modified >= orphan_age
    ]
    temporaries = [
        t
        for t in find_temporaries(store.fs, store.folder.rsplit("/", 1)[0], now=now)
        if t.age >= temp_age
    ]
    report.temporaries = [t.path for t in temporaries]
    report.bytes_freed += sum(t.size for t in temporaries)
    if not dry_run:
        for loc in report.deleted + report.orphans:
            store.delete(loc)
        for path in [lease.path for lease in stale] + report.temporaries:
            store._storage_call(partial(remove_file, store.fs, path), f"cannot delete {path}")
    logger.info("gc %s: %s", mask_url(url), report)
    return report


def _storage_clock(store: StudyCheckpointStore) -> float:
    """The storage's own "now": the modification time it stamps on a probe object (removed at
    once), so that ages are differences of the storage's times alone. gc's own clock may be
    ahead of the storage's (another host); then a live driver's lease would look expired and a
    file just written old. Falls back to this host's clock if the probe cannot be written (a
    read-only dry run) or its time is not given."""
    root = store.folder.rsplit("/", 1)[0]
    probe = f"{root}/plan/.probe-gc-{secrets.token_hex(8)}"  # swept with the journal's probes
    try:
        store.fs.pipe_file(probe, b"clock")
        try:
            stamped = modification_time(store.fs.info(probe))
        finally:
            remove_file(store.fs, probe)
    except Exception as exc:  # noqa: BLE001 - any storage error: this host's clock will do
        logger.debug("gc: no clock probe (%s); using this host's clock", mask_url(str(exc)))
        return time.time()
    return stamped if math.isfinite(stamped) else time.time()


def _listing(store: StudyCheckpointStore) -> dict[str, tuple[int, float]]:
    """Checkpoint files of ``store`` by name: (size, modification time)."""
    entries = partial(list_folder, store.fs, store.folder, detail=True)
    out: dict[str, tuple[int, float]] = {}
    for entry in store._storage_call(entries, f"cannot list {store.folder}"):
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") != "file" or store.name_of(f"{CHECKPOINT_FOLDER}/{name}") is None:
            continue
        out[name] = (int(entry.get("size") or 0), modification_time(entry))
    return out
