"""Garbage collection of checkpoints: keep what pending work and future trials need.

A study writes a checkpoint at every stage end, and tuning runs for days: disks fill up. What
may go depends on what the user wants to keep, but never what a pending request resumes from
(the latest checkpoint on its path), since a study running in another process relies on it.
Levels, from most to least kept:

``all``
    Every checkpoint the plan refers to; only orphaned files go (written by a stage whose
    report never reached the journal: a killed driver, a cancelled stage), once older than
    ``orphan_age`` seconds, so a file a running stage just wrote is never taken.
``branch-points`` (default)
    Also drops checkpoints that are neither a branch point of the plan (where trials diverge,
    so future trials of the study resume there) nor needed by a pending request.
``best``
    Keeps only what pending requests need and the final checkpoint of the best request by
    ``metric``: the smallest footprint that still lets you load the winner.

The plan forgets a checkpoint (journaled) before its file is deleted, so other processes stop
planning from it first; one that already started loading falls back to an older state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hippo_dask.errors import HippoError
from hippo_dask.plan import Node, SearchPlan

__all__ = ["GarbageReport", "collect_garbage"]

logger = logging.getLogger(__name__)

KEEP_LEVELS = ("best", "branch-points", "all")


@dataclass
class GarbageReport:
    """What a collection deleted (or would delete, in a dry run) and kept."""

    deleted: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    kept: int = 0
    bytes_freed: int = 0
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{verb} {len(self.deleted)} checkpoints and {len(self.orphans)} orphaned files "
            f"({self.bytes_freed / 1e6:.1f} MB); kept {self.kept} checkpoints"
        )


def _needed_by_pending(plan: SearchPlan) -> set[tuple[Node, int]]:
    """The latest checkpoint on the path of every pending request."""
    needed: set[tuple[Node, int]] = set()
    for node, steps in plan.pending():
        current: Node | None = node
        limit = steps
        while current is not None:
            found = current.latest_checkpoint(limit)
            if found is not None:
                needed.add((current, found))
                break
            limit = current.start
            current = current.parent
    return needed


def _branch_points(plan: SearchPlan) -> set[tuple[Node, int]]:
    points: set[tuple[Node, int]] = set()
    for node in plan.nodes:
        parent = node.parent
        if parent is not None and node.start in parent.checkpoints:
            points.add((parent, node.start))
    return points


def _best(plan: SearchPlan, metric: str, mode: str) -> set[tuple[Node, int]]:
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


def collect_garbage(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    keep: str = "branch-points",
    metric: str | None = None,
    mode: str = "max",
    dry_run: bool = False,
    orphan_age: float = 3600.0,
) -> GarbageReport:
    """Delete checkpoints of the study at ``url`` (its root: the folder holding ``plan/``).

    Parameters
    ----------
    keep
        ``"best"``, ``"branch-points"`` or ``"all"`` (see the module's documentation).
    metric, mode
        What ``keep="best"`` ranks requests by.
    dry_run
        Report what would go, delete nothing.
    orphan_age
        Seconds an unreferenced checkpoint file must have existed before it is deleted.
    """
    from hippo_dask.storage import FsspecCheckpointStore

    if keep not in KEEP_LEVELS:
        raise HippoError(f"gc: `keep` must be one of {KEEP_LEVELS}, got {keep!r}")
    if keep == "best" and not metric:
        raise HippoError("gc: keep='best' needs metric= (and mode=) to know which trial is best")
    if mode not in ("max", "min"):
        raise HippoError(f"gc: `mode` must be 'max' or 'min', got {mode!r}")
    # Never creates anything: a URL holding no study (or a missing bucket) is an error.
    plan = SearchPlan.open(url, storage_options, create=False)
    store = FsspecCheckpointStore(f"{url.rstrip('/')}/ckpt", storage_options)
    report = GarbageReport(dry_run=dry_run)

    referenced = {(node, step): uri for node in plan.nodes for step, uri in node.checkpoints.items()}
    keepers = _needed_by_pending(plan)
    if keep == "branch-points":
        keepers |= _branch_points(plan)
    elif keep == "best":
        keepers |= _best(plan, metric or "", mode)
    doomed = [] if keep == "all" else [item for item in referenced if item not in keepers]
    report.kept = len(referenced) - len(doomed)

    sizes = _sizes(store)
    for node, step in doomed:
        uri = referenced[(node, step)]
        report.deleted.append(uri)
        report.bytes_freed += sizes.get(_name(uri), 0)
        if not dry_run:
            plan.forget_checkpoint(node, step)
    if not dry_run:
        plan.flush()  # journaled before any file goes
        for uri in report.deleted:
            store.delete(uri)

    known = {_name(uri) for uri in referenced.values()}
    now = time.time()
    for name, (size, modified) in _listing(store).items():
        if name not in known and now - modified >= orphan_age:
            report.orphans.append(store.uri(name.removesuffix(".ckpt")))
            report.bytes_freed += size
            if not dry_run:
                store.delete(report.orphans[-1])
    logger.info("gc %s: %s", url, report)
    return report


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _listing(store: Any) -> dict[str, tuple[int, float]]:
    """Checkpoint files by name: (size, modification time)."""
    try:
        entries = store.fs.ls(store.folder, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    out: dict[str, tuple[int, float]] = {}
    for entry in entries:
        name = _name(str(entry["name"]))
        if not name.endswith(".ckpt") or name.startswith("."):
            continue
        modified = entry.get("mtime") or entry.get("LastModified") or entry.get("created") or 0
        if hasattr(modified, "timestamp"):
            modified = modified.timestamp()
        out[name] = (int(entry.get("size") or 0), float(modified))
    return out


def _sizes(store: Any) -> dict[str, int]:
    return {name: size for name, (size, _) in _listing(store).items()}
