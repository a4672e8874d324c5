"""The search plan: everything ever requested, what is trained, and what is still pending.

A plan is the persistent side of Hippo's design (section 3.2): a prefix tree of configurations
(:mod:`hippo_dask.plan._trie`) whose nodes carry checkpoints, metrics, profiles and pending
requests. It only grows. Stage trees are derived from it on demand
(:func:`hippo_dask.stages.build_stage_tree`).

In memory by default; :meth:`SearchPlan.open` backs it with a journal on any fsspec URL, and
reopening replays the journal into an identical plan. The journal names states by a trial that
passes through them and a step, never by node numbers, so records written by several processes
(whose trees may have grown in different orders) replay into the same plan.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from hippo_dask.errors import InvalidTrialError
from hippo_dask.plan._journal import Journal, Record
from hippo_dask.plan._trie import Node, Trie
from hippo_dask.stages import StageTree, build_stage_tree
from hippo_dask.trial import Trial

__all__ = ["PlanStats", "Request", "SearchPlan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanStats:
    """What a plan holds and what sharing saves.

    ``requested_steps`` counts, per request tag (by default the trial), the most steps asked
    for: what a trial-by-trial run that resumes its own trials would train. ``unique_steps`` is
    the size of the prefix tree over per-step values: what the plan trains at most.
    ``merge_rate`` is their ratio (Hippo's *p*), 1.0 for an empty plan.
    """

    trials: int
    requests: int
    requested_steps: int
    unique_steps: int
    merge_rate: float
    nodes: int
    pending: int


@dataclass(frozen=True, eq=False)
class Request:
    """A handle on ``trial`` trained for ``steps`` steps; ``node`` holds the answer."""

    trial: Trial
    steps: int
    node: Node
    tag: str

    @property
    def metrics(self) -> dict[str, float] | None:
        """The metrics at ``steps``, once recorded."""
        return self.node.metrics.get(self.steps)

    @property
    def done(self) -> bool:
        """Whether the metrics are in."""
        return self.steps in self.node.metrics


def _check_steps(steps: Any, what: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"{what} must be a whole number of steps >= 1, got {steps!r}")
    return int(steps)


class SearchPlan:
    """The prefix tree of every requested trial, with checkpoints, metrics and profiles.

    Examples
    --------
    >>> import hippo_dask as hd
    >>> from hippo_dask import seq
    >>> plan = hd.SearchPlan()
    >>> for t in hd.GridSpace(lr=[seq.StepLR(0.1, 0.1, [90, 135]), seq.StepLR(0.1, 0.1, [100, 150])]):
    ...     _ = plan.add(t, 200)
    >>> plan.stats().unique_steps   # steps 0..89 are shared
    310
    """

    def __init__(self) -> None:
        self._trie = Trie()
        self._trials: dict[str, Trial] = {}
        self._tags: dict[str, int] = {}
        self._requests = 0
        self._pending: set[tuple[Node, int]] = set()
        self._buffer: list[Record] = []
        self._journal: Journal | None = None
        self._orphans: list[Record] = []

    # -- persistence -------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> SearchPlan:
        """The plan journaled under ``<url>/plan/``, replayed; created if there is none.

        ``storage_options`` go to fsspec (credentials, endpoints) and are never stored.
        """
        plan = cls()
        plan._journal = Journal(url, storage_options)
        plan.refresh()
        return plan

    def probe_write(self) -> None:
        """Check now that the journal's folder takes writes (a read-only path fails here)."""
        if self._journal is not None:
            self._journal.probe()

    @property
    def url(self) -> str | None:
        """The storage root, or ``None`` for an in-memory plan."""
        return None if self._journal is None else self._journal.url

    def refresh(self) -> int:
        """Apply records other processes journaled since the last look; returns how many."""
        if self._journal is None:
            return 0
        records = self._orphans + list(self._journal.read_new())
        self._orphans = []
        # Requests first: they build the nodes that the other records refer to.
        for record in records:
            if record.get("op") == "request":
                self._apply_request(record)
        for record in records:
            if record.get("op") != "request":
                self._apply_state(record)
        return len(records)

    def flush(self) -> None:
        """Write the records since the last flush as one journal segment (no-op in memory)."""
        if self._journal is not None and self._buffer:
            self._journal.append(self._buffer)  # on failure the records stay buffered
            self._buffer = []
        elif self._journal is None:
            self._buffer.clear()

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()

    def __enter__(self) -> SearchPlan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()

    def _log(self, record: Record) -> None:
        if self._journal is not None:
            self._buffer.append(record)

    # -- requests ----------------------------------------------------------------------------

    def add(self, trial: Trial, steps: int, tag: str | None = None) -> Request:
        """Record that ``trial`` should be trained for ``steps`` steps.

        Returns a :class:`Request` whose ``metrics`` are available at once if the plan already
        holds them. ``tag`` groups requests for ``requested_steps`` (a trial extended from 15 to
        60 steps costs 60, not 75); it defaults to the trial's id.
        """
        if not isinstance(trial, Trial):
            raise InvalidTrialError(f"SearchPlan.add takes a Trial, got {trial!r}")
        steps = _check_steps(steps, "steps")
        tag = trial.id if tag is None else str(tag)
        request = self._request(trial, steps, tag)
        if self._journal is not None:
            self._log({"op": "request", "trial": trial.to_dict(), "id": trial.id, "steps": steps, "tag": tag})
        return request

    def _request(self, trial: Trial, steps: int, tag: str) -> Request:
        self._trials.setdefault(trial.id, trial)
        node = self._trie.place(trial, steps)
        assert node is not None
        node.requests[steps] = node.requests.get(steps, 0) + 1
        if steps not in node.metrics:
            self._pending.add((node, steps))
        self._tags[tag] = max(self._tags.get(tag, 0), steps)
        self._requests += 1
        return Request(trial, steps, node, tag)

    def _apply_request(self, record: Record) -> None:
        trial = self._trials.get(record["id"])
        if trial is None:
            trial = Trial.from_dict(record["trial"])
            if trial.id != record["id"]:
                logger.warning("journal: trial id %s rebuilt as %s", record["id"], trial.id)
        self._request(trial, int(record["steps"]), str(record["tag"]))

    def _state_node(self, trial_id: str, step: int) -> Node | None:
        trial = self._trials.get(trial_id)
        if trial is None:
            return None
        node = self._trie.place(trial, step, extend=False)
        assert node is not None
        return node

    def _apply_state(self, record: Record) -> None:
        op = record.get("op")
        step = int(record.get("step", 0))
        node = self._state_node(str(record.get("trial")), step)
        if node is None:
            self._orphans.append(record)
            return
        if op == "checkpoint":
            node.add_checkpoint(step, str(record["uri"]))
        elif op == "forget":
            node.remove_checkpoint(step)
        elif op == "metrics":
            self._set_metrics(node, step, record["values"])
        elif op == "profile":
            node.sec_per_step = float(record["seconds"])
        else:
            logger.warning("journal: unknown record %r ignored", op)

    # -- what the execution layer reports ------------------------------------------------------

    def _canonical(self, node: Node, step: int) -> Node:
        step = _check_steps(step, "step")
        return Trie.owner_of_state(node, step)

    def record_checkpoint(self, node: Node, step: int, uri: str) -> None:
        """The state after ``step`` steps along ``node``'s path is saved at ``uri``."""
        node = self._canonical(node, step)
        node.add_checkpoint(step, uri)
        self._log({"op": "checkpoint", "trial": node.owner.id, "step": step, "uri": uri})

    def forget_checkpoint(self, node: Node, step: int) -> None:
        """The checkpoint at ``step`` is gone or bad: plan as if it never existed."""
        node = self._canonical(node, step)
        node.remove_checkpoint(step)
        self._log({"op": "forget", "trial": node.owner.id, "step": step})

    def record_metrics(self, node: Node, step: int, metrics: Mapping[str, Any]) -> None:
        """Metrics of the state after ``step`` steps along ``node``'s path (NaN allowed)."""
        node = self._canonical(node, step)
        values = {}
        for name, value in metrics.items():
            if not isinstance(name, str):
                raise TypeError(f"metric names must be str, got {name!r}")
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"metric {name!r} must be a number, got {value!r}")
            values[name] = float(value)
        self._set_metrics(node, step, values)
        self._log({"op": "metrics", "trial": node.owner.id, "step": step, "values": values})

    def _set_metrics(self, node: Node, step: int, values: Mapping[str, float]) -> None:
        node.metrics[step] = {k: float(v) for k, v in values.items()}
        self._pending.discard((node, step))

    def record_profile(self, node: Node, seconds_per_step: float) -> None:
        """Measured seconds per step of ``node``'s configuration (drives critical paths)."""
        seconds = float(seconds_per_step)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds_per_step must be finite and >= 0, got {seconds_per_step!r}")
        node.sec_per_step = seconds
        self._log({"op": "profile", "trial": node.owner.id, "step": node.start + 1, "seconds": seconds})

    # -- queries -----------------------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        """Every node, in creation order (parents before children)."""
        return list(self._trie.nodes)

    @property
    def trials(self) -> dict[str, Trial]:
        """Every trial ever requested, by id."""
        return dict(self._trials)

    def locate(self, trial: Trial, steps: int) -> Node | None:
        """The node that holds ``trial``'s state after ``steps`` steps, if the plan has that path."""
        steps = _check_steps(steps, "steps")
        return self._trie.place(trial, steps, create=False, extend=False)

    def metrics(self, trial: Trial, steps: int) -> dict[str, float] | None:
        """Recorded metrics of ``trial`` after ``steps`` steps, or ``None``."""
        node = self.locate(trial, steps)
        return None if node is None else node.metrics.get(steps)

    def latest_checkpoint(self, trial: Trial, steps: int) -> tuple[int, str] | None:
        """The furthest checkpoint on ``trial``'s path at or before ``steps``: ``(step, uri)``."""
        node = self.locate(trial, steps)
        limit = steps
        while node is not None:
            found = node.latest_checkpoint(limit)
            if found is not None:
                return found, node.checkpoints[found]
            limit = node.start
            node = node.parent
        return None

    def pending(self) -> list[tuple[Node, int]]:
        """Requests still waiting for metrics, as ``(node, steps)``, in node order."""
        return sorted(self._pending, key=lambda item: (item[0].id, item[1]))

    def stats(self) -> PlanStats:
        """Counts of trials, requests and steps, and the merge rate."""
        requested = sum(self._tags.values())
        unique = self._trie.unique_steps
        return PlanStats(
            trials=len(self._trials),
            requests=self._requests,
            requested_steps=requested,
            unique_steps=unique,
            merge_rate=requested / unique if unique else 1.0,
            nodes=len(self._trie.nodes),
            pending=len(self._pending),
        )

    def stage_tree(
        self,
        running: Mapping[Hashable, tuple[Node, int, int]] | None = None,
        exclude: Iterable[tuple[Node, int]] = (),
        requests: Iterable[tuple[Node, int]] | None = None,
    ) -> StageTree:
        """The stages that answer pending requests (Algorithm 1); see :mod:`hippo_dask.stages`.

        ``requests`` limits the tree to those ``(node, steps)`` (default: every pending
        request); ``running`` are stages in flight (token to ``(node, start, stop)``), whose
        states are not planned again; ``exclude`` are requests somebody already takes care of.
        """
        skip = set(exclude)
        wanted = self.pending() if requests is None else sorted(
            {r for r in requests if r[1] not in r[0].metrics}, key=lambda r: (r[0].id, r[1])
        )
        return build_stage_tree([r for r in wanted if r not in skip], running=running)

    def __repr__(self) -> str:
        s = self.stats()
        where = f" at {self.url}" if self.url else ""
        return (
            f"<SearchPlan{where}: {s.trials} trials, {s.nodes} nodes, {s.unique_steps} unique of "
            f"{s.requested_steps} requested steps, {s.pending} pending>"
        )

