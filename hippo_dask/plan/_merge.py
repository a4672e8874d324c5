"""How the records about one state combine, whatever order a reader finds them in.

Writers flush segments whenever they like, so two readers of one journal find the same records in
different orders: one that looked between two flushes applies a late session's segment after an
early session's later one. The plan's answers must not depend on that, so every record about a
state merges by a rule that gives the same result for every order (each rule is a join: a
maximum, or a set union minus a set of tombstones):

checkpoints
    A state's checkpoint records form a set, keyed by record id; a ``forget`` adds the ids it names
    to a set of tombstones, which removes them whether it is applied before or after them. A
    ``forget`` of an older version names no ids: it removes that state's checkpoint records of
    older versions found before it in (segment name, line) order, which is the order that
    version's readers applied them in. Of the records left, the state's checkpoint is the one with
    the largest id (ids start with their session's clock, so that is the newest writer's).
metrics, profiles
    The measurement with the largest :data:`~hippo_dask.plan._records.Stamp` wins (the newest by
    the writer's clock), ties broken by the values themselves.

Pure Python; the plan owns one :class:`StateBook` and calls it from
:mod:`hippo_dask.plan._plan`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from hippo_dask.plan._records import NOWHERE, Position, Stamp
from hippo_dask.plan._trie import Node

__all__ = ["StateBook", "legacy_id"]

State = tuple[Node, int]


def legacy_id(position: Position) -> str:
    """The id of a checkpoint record of an older version, which carries none: its position."""
    return f"@{position[0]}:{position[1]:08d}"


def _canon(values: Mapping[str, float]) -> str:
    return json.dumps(values, sort_keys=True)


class StateBook:
    """What a plan knows about each state beyond the node's own fields: every checkpoint record,
    the tombstones, and the stamps of the metrics and profiles it holds."""

    def __init__(self) -> None:
        # state -> record id -> (uri, position, written by an older version)
        self.checkpoints: dict[State, dict[str, tuple[str, Position, bool]]] = {}
        self.dead: set[str] = set()
        self.legacy_forgets: dict[State, Position] = {}
        self.metric_stamps: dict[State, Stamp] = {}
        self.profile_stamps: dict[Node, Stamp] = {}

    # -- checkpoints ---------------------------------------------------------------------------

    def _live(self, state: State) -> dict[str, tuple[str, Position, bool]]:
        entries = self.checkpoints.get(state, {})
        cut = self.legacy_forgets.get(state)
        return {
            i: e
            for i, e in entries.items()
            if i not in self.dead and not (e[2] and cut is not None and e[1] < cut)
        }

    def live_ids(self, node: Node, step: int) -> list[str]:
        """Ids of the checkpoint records of this state that no forget removed, sorted."""
        return sorted(self._live((node, step)))

    def _settle(self, node: Node, step: int) -> None:
        """Make ``node.checkpoints[step]`` what the records say."""
        live = self._live((node, step))
        if not live:
            node.remove_checkpoint(step)
            return
        best = max(live, key=lambda i: (not live[i][2], live[i][1] if live[i][2] else ("", 0), i))
        node.add_checkpoint(step, live[best][0])

    def checkpoint(
        self, node: Node, step: int, uri: str, record_id: str | None, position: Position = NOWHERE
    ) -> None:
        """A checkpoint record (``record_id`` ``None``: an older version's, named by position)."""
        legacy = record_id is None
        key = legacy_id(position) if record_id is None else record_id
        self.checkpoints.setdefault((node, step), {})[key] = (uri, position, legacy)
        self._settle(node, step)

    def forget(
        self, node: Node, step: int, ids: Iterable[str] | None, position: Position = NOWHERE
    ) -> None:
        """A forget record (``ids`` ``None``: an older version's, which forgets by position)."""
        if ids is None:
            old = self.legacy_forgets.get((node, step))
            if old is None or position > old:
                self.legacy_forgets[(node, step)] = position
        else:
            self.dead.update(ids)
        if (node, step) in self.checkpoints:
            self._settle(node, step)

    # -- measurements --------------------------------------------------------------------------

    def newer_metrics(
        self, node: Node, step: int, values: Mapping[str, float], stamp: Stamp
    ) -> bool:
        """Whether these metrics replace what the state holds; records their stamp if so."""
        old = self.metric_stamps.get((node, step))
        held = node.metrics.get(step)
        if (
            old is not None
            and held is not None
            and (stamp < old or (stamp == old and _canon(values) <= _canon(held)))
        ):
            return False
        self.metric_stamps[(node, step)] = stamp
        return True

    def newer_profile(self, node: Node, seconds: float, stamp: Stamp) -> bool:
        """Whether this measurement replaces the node's; records its stamp if so."""
        old = self.profile_stamps.get(node)
        held = node.seconds_per_step
        if old is not None and held is not None and (stamp, seconds) <= (old, held):
            return False
        self.profile_stamps[node] = stamp
        return True

    # -- snapshots -------------------------------------------------------------------------------

    def export(self, index: Mapping[Node, int]) -> dict[str, Any]:
        """A JSON-able copy, with nodes as ``index[node]``."""
        return {
            "checkpoints": [
                [index[n], s, [[i, u, list(p), old] for i, (u, p, old) in entries.items()]]
                for (n, s), entries in self.checkpoints.items()
            ],
            "dead": sorted(self.dead),
            "legacy_forgets": [[index[n], s, list(p)] for (n, s), p in self.legacy_forgets.items()],
            "metric_stamps": [[index[n], s, list(t)] for (n, s), t in self.metric_stamps.items()],
            "profile_stamps": [[index[n], list(t)] for n, t in self.profile_stamps.items()],
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any], nodes: list[Node]) -> StateBook:
        """The book :meth:`export` wrote, over the rebuilt ``nodes``; sets nothing on them."""
        book = cls()
        for n, s, entries in data["checkpoints"]:
            book.checkpoints[(nodes[n], int(s))] = {
                str(i): (str(u), (str(p[0]), int(p[1])), bool(old)) for i, u, p, old in entries
            }
        book.dead = {str(i) for i in data["dead"]}
        for n, s, p in data["legacy_forgets"]:
            book.legacy_forgets[(nodes[n], int(s))] = (str(p[0]), int(p[1]))
        for n, s, t in data["metric_stamps"]:
            book.metric_stamps[(nodes[n], int(s))] = (int(t[0]), str(t[1]), int(t[2]))
        for n, t in data["profile_stamps"]:
            book.profile_stamps[nodes[n]] = (int(t[0]), str(t[1]), int(t[2]))
        return book
