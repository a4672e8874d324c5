"""A study at one moment, as plain data: what every dashboard panel draws.

:func:`take_snapshot` turns a search plan (replayed from the journal), the trials' requests and
the zarr metrics and stage tables into a :class:`StudySnapshot`: nodes with their layout and
status, the current critical path, per-trial final states, learning-curve points, worker lanes
and the savings figures. It holds no reference to the (mutable) plan, so a Bokeh session can
keep drawing from it while the reader takes the next one.

Node statuses come from storage only, never from the scheduler:

``done``
    Nothing pending needs the node any more.
``running``
    A worker trains a stage of it now: the driver recorded submitting the stage to that worker
    and every stage it had submitted there before has ended (see
    :mod:`hippo_dask.dashboard._flight`). Stores written by versions that recorded only
    finished stages fall back to an estimate (:attr:`StudySnapshot.estimated`): the node starts
    one of the ``W`` longest chains of the current stage tree, where ``W`` is the number of
    workers seen in the stage records; the driver hands exactly those chains to its workers
    (Hippo's critical-path scheduling). Only while the study is live.
``queued``
    A stage of it is submitted to a worker and waits there behind another stage.
``pending``
    The stage tree still holds work on it.
``stopped``
    Done, a leaf, and shorter than the longest request: a tuner stopped its trials early.
``failed``
    A stage on it failed for good (its trials failed) and its work is still pending.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from hippo_dask._constants import BASE_COLUMNS, DONE, FAILED
from hippo_dask.dashboard._base import escape
from hippo_dask.dashboard._flight import QUEUED, RUNNING, has_submissions, stage_attempts
from hippo_dask.plan import (
    Node,
    SearchPlan,
    StageTree,
    mean_seconds_per_step,
    saved_fraction,
    trial_by_trial_seconds,
)
from hippo_dask.trial import Trial

__all__ = [
    "STATUSES",
    "CriticalStage",
    "Curve",
    "NodeView",
    "Savings",
    "StudySnapshot",
    "TrialView",
    "take_snapshot",
]

STATUSES = ("done", "running", "queued", "pending", "stopped", "failed")
"""Every node status, in legend order."""

_DRAWN = ("done", "failed", "retried", "lost", "cancelled", RUNNING)
"""Attempt statuses with a bar in the worker lanes (queued and stale ones never ran here)."""

IDLE_AFTER = 120.0
"""Seconds without journal or metrics activity after which a study with pending work counts as
idle (interrupted), at least; five times its longest stage if that is longer."""


@dataclass(frozen=True)
class NodeView:
    """One plan node: its steps, place in the layout, status and what the plan knows of it."""

    id: int
    parent: int | None
    start: int
    extent: int
    trained: int
    status: str
    row: int
    root: int
    label: str
    owner: str
    config: str
    branch_values: str
    checkpoints: tuple[int, ...]
    requests: tuple[int, ...]
    metrics_step: int | None
    metrics: Mapping[str, float]
    seconds_per_step: float | None


@dataclass(frozen=True)
class CriticalStage:
    """A stage of the current critical path: train ``node`` from ``start`` to ``stop``.

    The path is the one the scheduler picks (unprofiled nodes weigh 1 s per step there);
    ``seconds`` estimates it better: the node's measured speed, else its nearest profiled
    ancestor's, else the plan's mean.
    """

    node: int
    start: int
    stop: int
    seconds: float


@dataclass(frozen=True)
class TrialView:
    """One requested trial (a tuner's tag): where its furthest request ends, and its metrics."""

    tag: str
    steps: int
    node: int
    path: tuple[int, ...]
    metrics: Mapping[str, float] | None
    config: str


@dataclass(frozen=True)
class Curve:
    """Recorded values of one metric along one node, joined to the parent's value at its start."""

    node: int
    steps: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Savings:
    """What sharing saved so far.

    ``requested_steps`` is what a trial-by-trial run would train (each trial's longest request),
    ``unique_steps`` what the plan trains at most, ``executed_steps`` what the workers trained
    (stage records: more than unique if work was lost and redone). ``worker_seconds`` is the
    recorded wall time of every stage, all included. ``trial_by_trial_seconds`` estimates a
    trial-by-trial run of the same requests at the same all-inclusive price per step:
    ``requested_steps x worker_seconds / executed_steps``, the formula of ``result.stats``
    (:func:`hippo_dask.plan.trial_by_trial_seconds`). ``None`` before any stage finished and
    while nothing is profiled.
    """

    trials: int
    trials_done: int
    requested_steps: int
    unique_steps: int
    executed_steps: int
    merge_rate: float
    stages: int
    worker_seconds: float
    trial_by_trial_seconds: float | None

    @property
    def saved_fraction(self) -> float | None:
        """Share of the trial-by-trial worker time not spent, or ``None`` without an estimate."""
        return saved_fraction(self.worker_seconds, self.trial_by_trial_seconds)


@dataclass(frozen=True)
class StudySnapshot:
    """The study at time ``taken`` (unix seconds); see the module docstring for statuses.

    ``lanes`` holds one row per stage that ran or runs on a worker: ``worker, owner, node,
    start_step, step, submitted, started, finished, status, error, writer``, where ``status``
    is how it ended (``done``, ``failed``, ``retried``, ``lost``, ``cancelled``) or
    ``running`` (then ``finished`` is ``taken``). ``estimated`` says that the store has no
    submission records (an older writer's), so ``running`` nodes are estimated from the plan.
    """

    name: str
    root: str
    taken: float
    live: bool
    nodes: tuple[NodeView, ...]
    critical: tuple[CriticalStage, ...]
    trials: tuple[TrialView, ...]
    points: pd.DataFrame = field(repr=False)
    lanes: pd.DataFrame = field(repr=False)
    savings: Savings
    metric_names: tuple[str, ...]
    estimated: bool = False

    @property
    def node_count(self) -> int:
        """Nodes of the plan."""
        return len(self.nodes)

    def status_counts(self) -> dict[str, int]:
        """Nodes per status, every status present (zero where none)."""
        counts = dict.fromkeys(STATUSES, 0)
        for node in self.nodes:
            counts[node.status] += 1
        return counts

    def critical_edges(self) -> list[tuple[int, int, int]]:
        """``(parent node, child node, step)`` where the critical path passes into a child."""
        out = []
        for before, after in zip(self.critical, self.critical[1:]):
            if before.node != after.node:
                out.append((before.node, after.node, after.start))
        return out

    def curves(self, metric: str) -> list[Curve]:
        """One line per node with recorded values of ``metric``; shared prefixes appear once.

        Each line starts at the parent's value at the node's branch step (when recorded), so a
        trial's curve is the chain of its path's lines without gaps.
        """
        if metric not in self.points.columns or self.points.empty:
            return []
        frame = self.points[["node", "step", metric]].dropna()
        by_node: dict[int, tuple[list[int], list[float]]] = {}
        for node, part in frame.groupby("node", sort=True):
            by_node[int(node)] = (
                part["step"].astype(int).tolist(),
                part[metric].astype(float).tolist(),
            )
        index = {n.id: n for n in self.nodes}
        out = []
        for node_id, (steps, values) in by_node.items():
            node = index.get(node_id)
            if node is not None and node.parent is not None and node.parent in by_node:
                parent_steps, parent_values = by_node[node.parent]
                if node.start in parent_steps:
                    steps = [node.start, *steps]
                    values = [parent_values[parent_steps.index(node.start)], *values]
            out.append(Curve(node_id, tuple(steps), tuple(values)))
        return out

    def best(self, metric: str, mode: str = "max") -> TrialView | None:
        """The best trial by ``metric`` among those that reached the most steps so far.

        Trials stopped early by a tuner (fewer steps) never win over trials that went the
        distance; NaN and infinities rank worst.
        """
        scored = [
            t
            for t in self.trials
            if t.metrics is not None and metric in t.metrics and math.isfinite(t.metrics[metric])
        ]
        if not scored:
            return None
        sign = 1.0 if mode == "max" else -1.0
        return max(scored, key=lambda t: (t.steps, sign * t.metrics[metric]))  # type: ignore[index]


# ----------------------------------------------------------------------------- building


def _shown_config(trial: Trial) -> dict[str, Any]:
    """A trial's hyper-parameters without the engine's own keys (``_hippo_*``)."""
    return {k: v for k, v in trial.config.items() if not k.startswith("_hippo_")}


def _describe(values: Mapping[str, Any]) -> str:
    """HTML lines ``name = value`` for a hover tooltip (a ``{safe}`` field), escaped."""
    return "<br>".join(f"{escape(k)} = {escape(repr(v))}" for k, v in values.items())


def _layout_rows(nodes: list[Node]) -> dict[int, int]:
    """A row per node: depth first, later branches first, so no edge crosses a bar.

    A child is drawn below its parent; siblings that branch later come first, so the vertical
    edge of an earlier branch passes only rows whose bars start after it.
    """
    rows: dict[int, int] = {}
    stack = [n for n in sorted((n for n in nodes if n.parent is None), key=lambda n: -n.id)]
    while stack:
        node = stack.pop()
        rows[node.id] = len(rows)
        children = sorted(node.children.values(), key=lambda c: (-c.start, c.id))
        stack.extend(reversed(children))
    return rows


def _node_of(plan: SearchPlan, trials: Mapping[str, Trial], trial_id: str, step: int) -> int:
    """Id of the node holding ``trial_id``'s state at ``step`` (-1 if the plan has not got it)."""
    trial = trials.get(trial_id)
    if trial is None:
        return -1
    node = plan.locate(trial, max(int(step), 1))
    return -1 if node is None else node.id


def _with_nodes(
    frame: pd.DataFrame,
    plan: SearchPlan,
    trials: Mapping[str, Trial],
    trial_column: str,
    step_column: str,
) -> pd.DataFrame:
    """``frame`` with a ``node`` column: rows name a node by its owner trial and a step.

    The driver names a state by the owner of the node that holds it (and a stage by the owner
    of the node it trains), and a trial owns at most one node: one lookup per owner, at the
    furthest step its rows name (beyond the node's branch step, which belongs to the parent).
    """
    frame = frame.copy()
    if frame.empty:
        frame["node"] = pd.Series([], dtype=np.int64)
        return frame
    owners = frame[trial_column].astype(str)
    furthest = frame[step_column].astype(int).groupby(owners).max()
    node_of = {owner: _node_of(plan, trials, owner, int(step)) for owner, step in furthest.items()}
    frame["node"] = owners.map(node_of).astype(np.int64).to_numpy()
    return frame


def _seconds_per_step(node: Node, fallback: float | None) -> float | None:
    """Measured training seconds per step: the node's, its nearest profiled ancestor's, else
    ``fallback`` (the plan's mean)."""
    for current in node.ancestors(inclusive=True):
        if current.seconds_per_step is not None:
            return current.seconds_per_step
    return fallback


def _trained(node: Node, stage_reach: Mapping[int, int]) -> int:
    """The furthest step along ``node`` whose state is known (metrics, checkpoint, stage end)."""
    known = [s for s in (*node.metrics, *node.checkpoints) if node.start < s <= node.extent]
    return max([node.start, stage_reach.get(node.id, node.start), *known])


def _window(done: pd.DataFrame) -> float:
    """Seconds of silence after which a writer counts as gone: :data:`IDLE_AFTER`, or five times
    the longest stage it ran if that is longer."""
    longest = float((done["finished"] - done["started"]).max()) if not done.empty else 0.0
    return max(IDLE_AFTER, 5 * longest)


def _last_activity(stages: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, float]:
    """The newest time each writer recorded anything (a submission, an end, a metric row)."""
    times = [
        stages[["writer", "started"]].rename(columns={"started": "t"}),
        stages[["writer", "finished"]].rename(columns={"finished": "t"}),
    ]
    if not metrics.empty:
        times.append(metrics[["writer", "wall_time"]].rename(columns={"wall_time": "t"}))
    frame = pd.concat(times, ignore_index=True).dropna()
    return {str(w): float(t) for w, t in frame.groupby("writer")["t"].max().items()}


def _statuses(
    plan: SearchPlan,
    tree: StageTree,
    attempts: pd.DataFrame,
    exact: bool,
    live: bool,
    workers: int,
    longest_request: int,
) -> dict[int, str]:
    """Every node's status (see the module docstring)."""
    pending = {stage.node.id for stage in tree.stages}
    running: set[int] = set()
    queued: set[int] = set()
    if exact:
        running = {int(n) for n in attempts.loc[attempts["status"] == RUNNING, "node"]}
        queued = {int(n) for n in attempts.loc[attempts["status"] == QUEUED, "node"]} - running
    elif live:  # the driver hands the W longest chains that can start to the W workers
        ready = [chain for chain in tree.paths() if chain[0].parent is None]
        running = {chain[0].node.id for chain in ready[: max(1, workers)]}
    failed = {int(n) for n in attempts.loc[attempts["status"] == FAILED, "node"]}
    status = {}
    for node in plan.nodes:
        if node.id in pending:
            status[node.id] = (
                "running"
                if node.id in running
                else "queued"
                if node.id in queued
                else "failed"
                if node.id in failed
                else "pending"
            )
        elif not node.children and node.extent < longest_request:
            status[node.id] = "stopped"
        else:
            status[node.id] = "done"
    return status


def _labels(nodes: list[Node]) -> dict[int, str]:
    """A short row label per node: what sets it apart from its parent (or the other roots)."""
    roots = [n for n in nodes if n.parent is None]
    varying: list[str] = []
    if len(roots) > 1:
        first = _shown_config(roots[0].owner)
        for key in first:
            looks = {repr(_at_start(r.owner, key)) for r in roots}
            if len(looks) > 1:
                varying.append(key)
    labels = {}
    for node in nodes:
        if node.parent is None:
            parts = [f"{k}={_short(_at_start(node.owner, k))}" for k in varying]
            labels[node.id] = _clip(", ".join(parts) or "root")
        else:
            mine = node.owner.values_at(node.start)
            theirs = node.parent.owner.values_at(node.start)
            changed = [f"{k}={_short(v)}" for k, v in mine.items() if theirs.get(k) != v]
            labels[node.id] = _clip(f"@{node.start} " + (", ".join(changed) or "branch"))
    return labels


def _clip(text: str, limit: int = 40) -> str:
    """A row label short enough for the axis (the hover shows everything)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _at_start(trial: Trial, key: str) -> Any:
    """A fixed value, or a sequence's value at step 0."""
    if key in trial.sequences:
        return trial.sequences[key](0)
    return trial.fixed.get(key)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)[:24]


def _node_views(plan: SearchPlan, status: Mapping[int, str], lanes: pd.DataFrame) -> list[NodeView]:
    nodes = plan.nodes
    rows = _layout_rows(nodes)
    labels = _labels(nodes)
    reach: dict[int, int] = {}
    if not lanes.empty:
        done = lanes[lanes["status"] == DONE]
        reach = {int(n): int(s) for n, s in done.groupby("node")["step"].max().items()}
    views = []
    for node in nodes:
        last = max(node.metrics, default=None)
        top = node.path()[0]
        views.append(
            NodeView(
                id=node.id,
                parent=None if node.parent is None else node.parent.id,
                start=node.start,
                extent=node.extent,
                trained=_trained(node, reach),
                status=status[node.id],
                row=rows[node.id],
                root=top.id,
                label=labels[node.id],
                owner=node.owner.id,
                config=_describe(_shown_config(node.owner)),
                branch_values=_describe(node.owner.values_at(node.start)) if node.parent else "",
                checkpoints=tuple(node.checkpoint_steps),
                requests=tuple(sorted(node.requests)),
                metrics_step=last,
                metrics=dict(node.metrics[last]) if last is not None else {},
                seconds_per_step=node.seconds_per_step,
            )
        )
    return views


def _trial_views(plan: SearchPlan, requests: Mapping[str, tuple[Trial, int]]) -> list[TrialView]:
    """Each requested trial's final state."""
    views = []
    for tag, (trial, steps) in sorted(requests.items()):
        located = plan.locate(trial, steps)
        if located is None:
            continue
        path = located.path()
        found = located.metrics.get(steps)
        views.append(
            TrialView(
                tag=tag,
                steps=steps,
                node=located.id,
                path=tuple(n.id for n in path),
                metrics=None if found is None else dict(found),
                config=_describe(_shown_config(trial)),
            )
        )
    return views


def _savings(
    plan: SearchPlan,
    requests: Mapping[str, tuple[Trial, int]],
    lanes: pd.DataFrame,
    trial_views: list[TrialView],
    mean: float | None,
) -> Savings:
    """Figures of the savings panel; see :class:`Savings` for the trial-by-trial estimate.

    Only stages that finished count (``lanes`` holds those with status ``done``). ``mean`` is
    the plan's mean measured seconds per step, used while no stage finished.
    """
    stats = plan.stats()
    executed = int((lanes["step"] - lanes["start_step"]).sum()) if not lanes.empty else 0
    used = float((lanes["finished"] - lanes["started"]).sum()) if not lanes.empty else 0.0
    by_trial = trial_by_trial_seconds(stats.requested_steps, executed, used, fallback=mean)
    return Savings(
        trials=len(requests),
        trials_done=sum(1 for t in trial_views if t.metrics is not None),
        requested_steps=stats.requested_steps,
        unique_steps=stats.unique_steps,
        executed_steps=executed,
        merge_rate=stats.merge_rate,
        stages=len(lanes),
        worker_seconds=used,
        trial_by_trial_seconds=by_trial,
    )


def take_snapshot(
    name: str,
    root: str,
    plan: SearchPlan,
    requests: Mapping[str, tuple[Trial, int]],
    metrics: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    session_started: float | None = None,
    now: float,
) -> StudySnapshot:
    """The study as plain data, from a plan, its requests (tag to trial and steps) and the
    metrics store's metric rows and stage records.

    ``stages`` holds every stage record (``read_stages(status=None)``). ``session_started`` is
    when the newest journal session began (unix seconds): with the newest metric and stage
    times it decides whether the study is live (recent activity) or idle; an idle study runs
    nothing, and a stage submitted by a writer silent for as long is not shown as running.
    """
    trials = plan.trials
    done = stages[stages["status"] == DONE]
    window = _window(done)
    last = _last_activity(stages, metrics)
    activity = [t for t in (session_started, *last.values()) if t is not None]
    tree = plan.stage_tree()
    live = bool(len(tree)) and bool(activity) and now - max(activity) < window
    active = {w for w, t in last.items() if now - t < window} if live else set()
    attempts = stage_attempts(stages, now=now, active=active)
    attempts = _with_nodes(
        attempts.rename(columns={"node": "owner"}), plan, trials, "owner", "step"
    )
    lanes = attempts[
        attempts["status"].isin(_DRAWN)
        & attempts["started"].notna()
        & ((attempts["finished"] > attempts["started"]) | (attempts["status"] == DONE))
    ].reset_index(drop=True)
    finished = lanes[lanes["status"] == DONE].reset_index(drop=True)
    points = _with_nodes(metrics, plan, trials, "trial", "step")
    if not points.empty:
        points = points[points["node"] >= 0].drop_duplicates(["node", "step"], keep="last")
        points = points.sort_values(["node", "step"], ignore_index=True)
    metric_names = tuple(c for c in metrics.columns if c not in BASE_COLUMNS)
    longest_request = max((steps for _, steps in requests.values()), default=0)
    exact = has_submissions(stages)
    workers = int(done["worker"].nunique())
    status = _statuses(plan, tree, attempts, exact, live, workers, longest_request)
    critical = tree.critical_path()
    mean = mean_seconds_per_step(plan.nodes)

    def speed(node: Node) -> float | None:
        return _seconds_per_step(node, mean)

    trial_views = _trial_views(plan, requests)
    return StudySnapshot(
        name=name,
        root=root,
        taken=now,
        live=live,
        nodes=tuple(_node_views(plan, status, lanes)),
        critical=tuple(
            CriticalStage(s.node.id, s.start, s.stop, s.steps * (speed(s.node) or 1.0))
            for s in critical
        ),
        trials=tuple(trial_views),
        points=points,
        lanes=lanes,
        savings=_savings(plan, requests, finished, trial_views, mean),
        metric_names=metric_names,
        estimated=not exact,
    )
