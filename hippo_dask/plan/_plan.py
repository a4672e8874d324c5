"""The search plan: everything ever requested, what is trained, and what is still pending.

A plan is the persistent side of Hippo's design (section 3.2): a prefix tree of configurations
(:mod:`hippo_dask.plan._trie`) whose nodes carry checkpoints, metrics, profiles and pending
requests. It only grows. Stage trees are derived from it on demand
(:func:`hippo_dask.plan.build_stage_tree`).

In memory by default; :meth:`SearchPlan.open` backs it with a journal on any fsspec URL, and
reopening replays the journal into an identical plan. The journal names states by a trial that
passes through them and a step, never by node numbers, so records written by several processes
(whose trees may have grown in different orders) replay into the same plan.

How every reader applies the journal (the driver, gc, the dashboard, a fresh ``Study``: they all
call :meth:`SearchPlan.refresh`):

1. Each line is checked (:func:`hippo_dask.plan._records.parse`). One that cannot be applied (an
   unknown record or sequence type, a user's own sequence class, a value nested too deeply, a
   NaN or negative profile, a field of the wrong type) is skipped with a
   :class:`~hippo_dask.errors.HippoWarning` naming its segment and line; the rest still apply.
2. Requests first, then the other records of the batch. A record about a state the plan does not
   hold yet (its request is in a segment not found yet) waits and is tried again at the next
   refresh.
3. Order does not matter. Readers find segments in different orders (a session that began earlier
   can flush later), so records merge by rules that give the same result for every order
   (:mod:`hippo_dask.plan._merge`): a ``forget`` is a tombstone of the checkpoint records it
   names, and the newest measurement of a state wins. So any two readers that have read the same
   segments answer every question about a state the same way: its metrics, its checkpoint,
   whether a request is pending, and the plan's statistics. What may differ is only how the
   states are grouped into nodes (which trial owns a node, node ids), which depends on the order
   requests arrived in, as it does between writers.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import time
import warnings
from collections.abc import Hashable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from hippo_dask._redact import mask_url
from hippo_dask.errors import (
    HippoError,
    HippoWarning,
    InvalidTrialError,
    StudyNotFoundError,
)
from hippo_dask.plan import _snapshot
from hippo_dask.plan._journal import Journal, Position, Record, warn_record
from hippo_dask.plan._merge import StateBook
from hippo_dask.plan._records import (
    NOWHERE,
    BadRecord,
    CheckpointRecord,
    ForgetRecord,
    MetricsRecord,
    ProfileRecord,
    RequestRecord,
    StateRecord,
    TrialBuilder,
    parse,
    to_raw,
)
from hippo_dask.plan._request import PlanStats, Request
from hippo_dask.plan._savings import merge_rate
from hippo_dask.plan._stages import StageTree, build_stage_tree
from hippo_dask.plan._trie import Node, Trie
from hippo_dask.trial import Trial

__all__ = ["PlanStats", "Request", "SearchPlan"]

logger = logging.getLogger(__name__)


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
    >>> from hippo_dask.plan import SearchPlan
    >>> plan = SearchPlan()
    >>> for t in hd.GridSpace(lr=[seq.StepLR(0.1, 0.1, [90, 135]), seq.StepLR(0.1, 0.1, [100, 150])]):
    ...     _ = plan.add(t, 200)
    >>> plan.stats().unique_steps   # steps 0..89 are shared
    310
    """

    def __init__(self) -> None:
        self._trie = Trie()
        self._trials: dict[str, Trial] = {}
        self._tags: dict[str, int] = {}
        self._tagged: dict[str, tuple[Trial, int]] = {}
        self._requests = 0
        self._max_steps = 0
        self._build = TrialBuilder()
        self._reach: dict[str, tuple[Node, int]] = {}  # trial id -> (node at its most steps, steps)
        self._pending: set[tuple[Node, int]] = set()
        self._buffer: list[Record] = []
        self._journal: Journal | None = None
        self._read_only = False
        self._orphans: list[tuple[StateRecord, Position]] = []
        self._book = StateBook()
        self._session = f"{time.time_ns():020d}-memory"
        self._ids = itertools.count()
        self.since_snapshot = 0
        """Journal records this plan applied or wrote since the snapshot it opened from (or since
        it opened): what a new snapshot would save a reader from replaying."""

    # -- persistence -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        create: bool = True,
        read_only: bool = False,
    ) -> SearchPlan:
        """The plan journaled under ``<url>/plan/``, replayed (from its newest valid snapshot on).

        Parameters
        ----------
        url
            The study root (a local path or any fsspec URL).
        storage_options
            Passed to fsspec (credentials, endpoints); never stored.
        create
            Start a new plan if there is none: create the local folder (on an object store
            nothing is created, and the bucket must exist). Without, a URL holding no plan is a
            :class:`~hippo_dask.errors.StudyNotFoundError` and nothing is created.
        read_only
            Never write to the journal (a dashboard); a missing journal reads as an empty plan.

        Raises
        ------
        StudyNotFoundError
            Without ``create``, if ``url`` holds no plan.
        StorageError
            If the URL's bucket does not exist (hippo_dask never creates buckets).
        JournalError
            If the storage cannot be read, or the folder cannot be created.
        """
        journal = Journal(url, storage_options, create=create and not read_only)
        if not create and not read_only:
            journal.check_bucket()
            if not journal.exists():
                raise StudyNotFoundError(
                    f"{mask_url(url)} holds no study: there is no search plan journal in "
                    f"{mask_url(url)}/plan. "
                    "Pass the study's folder (<storage>/<name>, as given to Study(name, ..., "
                    "storage=...)), or the storage root with the study's name"
                )
        plan = cls._from_snapshots(journal)
        plan._read_only = read_only
        plan.refresh()
        return plan

    @classmethod
    def _attached(cls, journal: Journal) -> SearchPlan:
        plan = cls()
        plan._journal = journal
        plan._session = journal.session
        return plan

    @classmethod
    def _from_snapshots(cls, journal: Journal) -> SearchPlan:
        """A plan rebuilt from the newest valid snapshot (none: an empty plan)."""
        for path, data in _snapshot.read(journal):
            plan = cls._attached(journal)
            try:
                plan._restore(_snapshot.decode(data))
            except Exception as exc:  # noqa: BLE001 - any damage: try the next older one
                why = (
                    exc
                    if isinstance(exc, _snapshot.SnapshotError)
                    else f"{type(exc).__name__}: {exc}"
                )
                warnings.warn(
                    f"search plan snapshot {path} was skipped ({why}); reading the journal "
                    "segments instead",
                    HippoWarning,
                    stacklevel=4,
                )
                continue
            return plan
        return cls._attached(journal)

    def probe_write(self) -> None:
        """Check now that the journal's folder takes writes (a read-only path fails here)."""
        if self._journal is not None:
            self._journal.probe()

    @property
    def journal(self) -> Journal | None:
        """The journal this plan reads and writes, or ``None`` for an in-memory plan."""
        return self._journal

    @property
    def buffered(self) -> int:
        """Records made here and not journaled yet (a failed :meth:`flush` keeps them)."""
        return len(self._buffer)

    @property
    def url(self) -> str | None:
        """The storage root, or ``None`` for an in-memory plan."""
        return None if self._journal is None else self._journal.url

    def refresh(self) -> int:
        """Apply records other processes journaled since the last look; returns how many lines
        were read (records skipped as bad included; see the module's documentation)."""
        if self._journal is None:
            return 0
        return self._apply_lines(self._journal.read_new())

    def _apply_lines(self, lines: Iterable[tuple[Any, Position]]) -> int:
        states, self._orphans = self._orphans, []
        count = 0
        try:
            for value, position in lines:
                count += 1
                try:
                    record = parse(value, position, self._trials.get, self._build)
                except BadRecord as exc:
                    self._skip(position, str(exc))
                    continue
                if isinstance(record, RequestRecord):
                    # Requests first: they build the nodes that the other records refer to.
                    self._guarded(self._apply_request, record, position)
                else:
                    states.append((record, position))
        finally:  # a segment that cannot be read: what was read still applies
            for state, where in states:
                self._guarded(self._apply_state, state, where)
            self.since_snapshot += count
        return count

    def _skip(self, position: Position, why: str) -> None:
        folder = "(no journal)" if self._journal is None else self._journal.folder
        warn_record(folder, position, f"record skipped: {why}", stacklevel=5)

    def _guarded(self, apply: Any, record: Any, position: Position) -> None:
        try:
            apply(record, position)
        except RecursionError:
            self._skip(position, "it nests too deeply to apply")
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
            self._skip(position, f"it cannot be applied: {type(exc).__name__}: {exc}")

    def flush(self) -> None:
        """Write the records since the last flush as one journal segment (no-op in memory)."""
        if self._journal is not None and self._buffer:
            self._journal.append(self._buffer)  # on failure the records stay buffered
            self.since_snapshot += len(self._buffer)
            self._buffer = []
        elif self._journal is None:
            self._buffer.clear()

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()

    def _log(self, record: Record) -> None:
        if self._journal is not None and not self._read_only:
            self._buffer.append(record)

    def _new_id(self) -> str:
        return f"{self._session}.{next(self._ids):012d}"

    # -- snapshots (see hippo_dask.plan._snapshot) ----------------------------------------------

    def compact(self, *, prune: bool = False) -> str:
        """Write a snapshot of this plan to the journal (flushing first); returns its path.

        Reopening then reads the snapshot and only the segments written after it. With
        ``prune``, also delete the segments and older snapshots the new one holds, once it has
        been read back and checked; only safe while no other process has the plan open (see
        :mod:`hippo_dask.plan._snapshot`).

        Raises
        ------
        HippoError
            For an in-memory or read-only plan.
        JournalError
            If storage cannot be written.
        """
        if self._journal is None or self._read_only:
            raise HippoError(
                "SearchPlan.compact: only a plan opened for writing "
                "(SearchPlan.open(url)) can be compacted"
            )
        self.flush()
        payload = self._export()
        path = _snapshot.write(self._journal, payload)
        self.since_snapshot = 0
        if prune:
            self._prune(path, payload)
        return path

    def _prune(self, path: str, payload: dict[str, Any]) -> None:
        journal = self._journal
        assert journal is not None
        check = SearchPlan._attached(journal)  # marks seen only what is seen already
        check._restore(_snapshot.decode(journal.fs.cat_file(path)))
        if check.stats() != self.stats():
            raise HippoError(
                f"the snapshot {path} does not read back as the plan; nothing was pruned"
            )
        _snapshot.prune(journal, path, payload["segments"])

    def _export(self) -> dict[str, Any]:
        assert self._journal is not None
        nodes = self._trie.nodes
        index = {node: i for i, node in enumerate(nodes)}
        sequences, trials = _snapshot.encode_trials(self._trials)
        return {
            "segments": sorted(self._journal.seen),
            "sequences": sequences,
            "trials": trials,
            "nodes": [
                [
                    n.owner.id,
                    -1 if n.parent is None else index[n.parent],
                    n.start,
                    n.extent,
                    list(n.requests.items()),
                    list(n.checkpoints.items()),
                    list(n.metrics.items()),
                    n.seconds_per_step,
                ]
                for n in nodes
            ],
            "tags": [[tag, trial.id, steps] for tag, (trial, steps) in self._tagged.items()],
            "reach": [[tid, index[node], steps] for tid, (node, steps) in self._reach.items()],
            "requests": self._requests,
            "book": self._book.export(index),
            "orphans": [[to_raw(r), list(p)] for r, p in self._orphans],
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        """Take the state of a snapshot's ``payload``; raises on anything inconsistent."""
        trials = _snapshot.decode_trials(payload["sequences"], payload["trials"])
        nodes: list[Node] = []
        for owner, parent, start, extent, requests, checkpoints, metrics, seconds in payload[
            "nodes"
        ]:
            if not isinstance(parent, int) or not -1 <= parent < len(nodes):
                raise ValueError(f"node {len(nodes)} names parent {parent!r}")
            node = self._trie.attach(
                trials[owner], int(start), None if parent < 0 else nodes[parent], int(extent)
            )
            node.requests = {int(s): int(c) for s, c in requests}
            for step, uri in checkpoints:
                node.add_checkpoint(int(step), str(uri))
            node.metrics = {int(s): {str(k): float(x) for k, x in v.items()} for s, v in metrics}
            if seconds is not None:
                node.seconds_per_step = float(seconds)
            nodes.append(node)
        self._trials = trials
        for tag, trial_id, steps in payload["tags"]:
            self._tagged[str(tag)] = (trials[trial_id], int(steps))
            self._tags[str(tag)] = int(steps)
        self._max_steps = max(self._tags.values(), default=0)
        for trial_id, at, steps in payload["reach"]:
            if not isinstance(at, int) or not 0 <= at < len(nodes) or str(trial_id) not in trials:
                raise ValueError(f"a trial's path names node {at!r}")
            self._reach[str(trial_id)] = (nodes[at], int(steps))
        self._requests = int(payload["requests"])
        self._pending = {(n, s) for n in nodes for s in n.requests if s not in n.metrics}
        self._book = StateBook.restore(payload["book"], nodes)
        for raw, (segment, line) in payload["orphans"]:
            record = parse(raw, (str(segment), int(line)))
            if isinstance(record, RequestRecord):
                raise TypeError("a request among the waiting records")
            self._orphans.append((record, (str(segment), int(line))))
        assert self._journal is not None
        self._journal.mark_seen(str(name) for name in payload["segments"])

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
            self._log(
                {
                    "op": "request",
                    "trial": trial.to_dict(),
                    "id": trial.id,
                    "steps": steps,
                    "tag": tag,
                }
            )
        return request

    def _request(self, trial: Trial, steps: int, tag: str) -> Request:
        self._trials.setdefault(trial.id, trial)
        node = self._trie.place(trial, steps)
        assert node is not None
        node.requests[steps] = node.requests.get(steps, 0) + 1
        if steps not in node.metrics:
            self._pending.add((node, steps))
        self._tags[tag] = max(self._tags.get(tag, 0), steps)
        reach = self._reach.get(trial.id)
        if reach is None or steps > reach[1]:
            self._reach[trial.id] = (node, steps)
        known = self._tagged.get(tag)
        if known is None or (steps, known[0].id) > (known[1], trial.id):
            self._tagged[tag] = (trial, steps)  # ties go to the smaller trial id, in any order
        self._max_steps = max(self._max_steps, steps)
        self._requests += 1
        return Request(trial, steps, node, tag)

    def _apply_request(self, record: RequestRecord, position: Position) -> None:
        if record.trial.id != record.id:
            logger.warning("journal: trial id %s rebuilt as %s", record.id, record.trial.id)
        self._request(self._trials.get(record.trial.id, record.trial), record.steps, record.tag)

    def _state_node(self, trial_id: str, step: int) -> Node | None:
        """The node holding the state after ``step`` steps of trial ``trial_id``, if the plan's
        requests reach it (else the record waits for the request that does)."""
        trial = self._trials.get(trial_id)
        if trial is None or step > self._max_steps:
            return None
        reach = self._reach.get(trial_id)
        if reach is not None and step <= reach[1]:  # up the trial's own path: no walk from the root
            return next(
                n for n in reach[0].ancestors(inclusive=True) if n.start < step or n.parent is None
            )
        node = self._trie.place(trial, step, create=False, extend=False)
        if node is None or step > node.extent:
            return None
        return node

    def _apply_state(self, record: StateRecord, position: Position) -> None:
        node = self._state_node(record.trial, record.step)
        if node is None:
            self._orphans.append((record, position))
            return
        step = record.step
        if isinstance(record, CheckpointRecord):
            self._book.checkpoint(node, step, record.uri, record.id, record.position)
        elif isinstance(record, ForgetRecord):
            self._book.forget(node, step, record.ids, record.position)
        elif isinstance(record, MetricsRecord):
            if self._book.newer_metrics(node, step, record.values, record.stamp):
                self._set_metrics(node, step, record.values)
        elif isinstance(record, ProfileRecord) and self._book.newer_profile(
            node, record.seconds, record.stamp
        ):
            node.seconds_per_step = record.seconds

    # -- what the execution layer reports ------------------------------------------------------

    def _canonical(self, node: Node, step: int) -> Node:
        step = _check_steps(step, "step")
        return Trie.owner_of_state(node, step)

    def owner_of_state(self, node: Node, step: int) -> Node:
        """The node the state after ``step`` steps along ``node``'s path is kept on: at a
        branch step, the parent (the node that trained step ``step - 1``)."""
        return self._canonical(node, step)

    def record_checkpoint(self, node: Node, step: int, uri: str) -> None:
        """The state after ``step`` steps along ``node``'s path is saved at ``uri``."""
        node = self._canonical(node, step)
        record_id = self._new_id()
        self._book.checkpoint(node, step, uri, record_id)
        self._log(
            {"op": "checkpoint", "trial": node.owner.id, "step": step, "uri": uri, "id": record_id}
        )

    def forget_checkpoint(self, node: Node, step: int) -> None:
        """The checkpoint at ``step`` is gone or bad: plan as if it never existed.

        Journaled as a tombstone of the checkpoint records this plan holds for that state, so
        every reader forgets them whatever order it finds the records in; a checkpoint recorded
        there again later is a new record, which this forget does not hide.
        """
        node = self._canonical(node, step)
        ids = self._book.live_ids(node, step)
        self._book.forget(node, step, ids)
        self._log({"op": "forget", "trial": node.owner.id, "step": step, "ids": ids})

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
        at = time.time_ns()
        if self._book.newer_metrics(node, step, values, (at, *NOWHERE)):
            self._set_metrics(node, step, values)
        self._log(
            {"op": "metrics", "trial": node.owner.id, "step": step, "values": values, "at": at}
        )

    def _set_metrics(self, node: Node, step: int, values: Mapping[str, float]) -> None:
        node.metrics[step] = {k: float(v) for k, v in values.items()}
        self._pending.discard((node, step))

    def record_profile(self, node: Node, seconds_per_step: float) -> None:
        """Measured seconds per step of ``node``'s configuration (drives critical paths)."""
        seconds = float(seconds_per_step)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds_per_step must be finite and >= 0, got {seconds_per_step!r}")
        at = time.time_ns()
        if self._book.newer_profile(node, seconds, (at, *NOWHERE)):
            node.seconds_per_step = seconds
        self._log(
            {
                "op": "profile",
                "trial": node.owner.id,
                "step": node.start + 1,
                "seconds": seconds,
                "at": at,
            }
        )

    # -- queries -----------------------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        """Every node, in creation order (parents before children)."""
        return list(self._trie.nodes)

    @property
    def trials(self) -> dict[str, Trial]:
        """Every trial ever requested, by id."""
        return dict(self._trials)

    @property
    def requests_by_tag(self) -> dict[str, tuple[Trial, int]]:
        """By request tag (a tuner's trial id): the trial asked for the most steps under it, and
        those steps (of two trials asked for as many, the one with the smaller id)."""
        return dict(self._tagged)

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
        located = self.locate(trial, steps)
        if located is None:
            return None
        limit = steps
        for node in located.ancestors(inclusive=True):
            found = node.latest_checkpoint(limit)
            if found is not None:
                return found, node.checkpoints[found]
            limit = node.start
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
            merge_rate=merge_rate(requested, unique),
            nodes=len(self._trie.nodes),
            pending=len(self._pending),
        )

    def stage_tree(
        self,
        running: Mapping[Hashable, tuple[Node, int, int]] | None = None,
        exclude: Iterable[tuple[Node, int]] = (),
        requests: Iterable[tuple[Node, int]] | None = None,
    ) -> StageTree:
        """The stages that answer pending requests (Algorithm 1); see :mod:`hippo_dask.plan._stages`.

        ``requests`` limits the tree to those ``(node, steps)`` (default: every pending
        request); ``running`` are stages in flight (token to ``(node, start, stop)``), whose
        states are not planned again; ``exclude`` are requests somebody already takes care of.
        """
        skip = set(exclude)
        wanted = (
            self.pending()
            if requests is None
            else sorted(
                {r for r in requests if r[1] not in r[0].metrics}, key=lambda r: (r[0].id, r[1])
            )
        )
        return build_stage_tree([r for r in wanted if r not in skip], running=running)

    def __repr__(self) -> str:
        s = self.stats()
        where = f" at {mask_url(self.url)}" if self.url else ""
        return (
            f"<SearchPlan{where}: {s.trials} trials, {s.nodes} nodes, {s.unique_steps} unique of "
            f"{s.requested_steps} requested steps, {s.pending} pending>"
        )
