"""Where ready chains go: the placement policy, as pure functions returning actions.

Each idle GPU worker gets the longest chain that can start now (the stage tree's
:meth:`~hippo_dask.plan.StageTree.paths`, critical path first). A chain that continues exactly
where a worker's last queued stage ends is queued on that worker and continues in its memory.
With no worker idle, a ready chain is queued behind the busy worker with the least work left
(lookahead), so it starts without waiting for the driver; when another worker goes idle first,
a queued chain that has not started is taken back and planned again (:func:`withdrawals`).
Workers that retire on their own (``dask worker --lifetime``, as SLURM jobs' workers do before
their wall time) only get the stages whose estimated time fits in what is left of their lifetime
(:func:`fitting`). A step a stage in flight will pass but that somebody now needs (a new request,
a new branch) is added to that stage as a point, so it is saved instead of trained again.

Nothing here touches Dask or storage: the functions read the stage tree, the flights
(:class:`~hippo_dask.execution._flights.Flights`) and the workers (:class:`Workers`) and return
:class:`Submit`, :class:`AddPoint` and :class:`Withdraw` actions, in the order they must be
carried out. The driver carries them out on Dask; the simulator in ``benchmarks/`` in virtual
time, so what it measures is this policy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from hippo_dask.execution._flights import Flights
from hippo_dask.plan import Node, Stage, StageTree

__all__ = [
    "Action",
    "AddPoint",
    "Submit",
    "Withdraw",
    "Workers",
    "cover",
    "fitting",
    "place",
    "withdrawals",
]


@dataclass(frozen=True)
class Workers:
    """The GPU workers placement may use, as the driver sees them at ``clock`` (unix time).

    ``deadlines`` maps a worker to ``(unix time it retires, its lifetime)``, or to ``None`` (or
    nothing) when it has no lifetime; ``closing`` workers retire now and get nothing.
    """

    alive: Sequence[str]
    deadlines: Mapping[str, tuple[float, float] | None] = field(default_factory=dict)
    closing: frozenset[str] = frozenset()
    clock: float = 0.0

    def left(self, worker: str) -> tuple[float, float | None]:
        """Seconds until ``worker`` retires (infinite without a lifetime), and its lifetime."""
        if worker in self.closing:
            return 0.0, None
        known = self.deadlines.get(worker)
        if known is None:
            return math.inf, None
        return known[0] - self.clock, known[1]


@dataclass(frozen=True)
class Submit:
    """Hand ``chain`` to ``worker``, behind what it runs.

    ``continues``: the key of the flight whose end state the chain's first stage starts from
    (it runs after it, in its memory). Otherwise, ``behind``: the chain waits behind the
    worker's last flight for order alone (lookahead), or, when ``False``, the worker is idle.
    """

    chain: tuple[Stage, ...]
    worker: str
    continues: str | None = None
    behind: bool = False


@dataclass(frozen=True)
class AddPoint:
    """Flight ``key`` should also stop at ``step``: save a checkpoint there, and evaluate when
    ``evaluate``."""

    key: str
    step: int
    evaluate: bool


@dataclass(frozen=True)
class Withdraw:
    """Ask each worker for the keys listed under it back (the first and all after it)."""

    asks: Mapping[str, tuple[str, ...]]


Action = Submit | AddPoint | Withdraw


def fitting(chain: list[Stage], seconds_left: float, lifetime: float | None = None) -> list[Stage]:
    """The longest head of ``chain`` whose estimated time fits in ``seconds_left``.

    A stage estimated longer than a worker's whole ``lifetime`` fits no such worker, ever; it may
    start alone on one with at least half its lifetime left, and progresses through its periodic
    checkpoints (``hippo.checkpoint-interval``) from worker to worker.
    """
    if math.isinf(seconds_left):
        return chain
    total = 0.0
    out: list[Stage] = []
    for stage in chain:
        total += stage.seconds
        if total > seconds_left:
            break
        out.append(stage)
    if (
        not out
        and chain
        and lifetime is not None
        and chain[0].seconds > lifetime
        and seconds_left >= lifetime / 2
    ):
        out = chain[:1]
    return out


def withdrawals(
    flights: Flights, workers: Workers, now: float, withdraw_after: float
) -> Withdraw | None:
    """While a worker is idle, the chains queued behind busy workers to take back.

    Lookahead queues a ready chain behind the busy worker expected to free first, so the chain
    starts without waiting for the driver. When another worker goes idle first, the chain would
    wait there while that worker does nothing. Chains that have not started and have at least
    ``withdraw_after`` estimated seconds of work ahead of them (``now`` on the flights' clock)
    are asked back, if an idle worker has the time for them; the ones given back are planned
    again with the rest, critical path first.
    """
    idle = [w for w in workers.alive if not flights.busy(w)]
    if not idle:
        return None
    asks: dict[str, tuple[str, ...]] = {}
    for worker in workers.alive:
        queue = flights.queue(worker)
        ahead = 0.0
        for i, flight in enumerate(queue):
            if flight.lookahead and ahead >= withdraw_after:
                seconds = sum(f.seconds() for f in queue[i:])
                if any(workers.left(w)[0] >= seconds for w in idle):
                    asks[worker] = tuple(f.key for f in queue[i:])
                break
            ahead += flight.seconds_left(now)
    return Withdraw(asks) if asks else None


def cover(
    wanted: list[tuple[Node, int]], flights: Flights
) -> tuple[list[AddPoint], set[tuple[Node, int]]]:
    """Requests a flight passes: ask it to evaluate (and save) there. Returns those actions and
    the requests they cover, which the stage tree then leaves out."""
    covered: set[tuple[Node, int]] = set()
    actions: list[AddPoint] = []
    by_node: dict[Node, list[Any]] = {}
    for f in flights:
        by_node.setdefault(f.node, []).append(f)
    for node, step in wanted:
        for f in by_node.get(node, ()):
            if f.start < step <= f.stop:
                point = f.points.get(step)
                if point is None or not point.evaluate or point.checkpoint is None:
                    actions.append(AddPoint(f.key, step, evaluate=True))
                covered.add((node, step))
                break
    return actions, covered


@dataclass
class _Lane:
    """A worker's queue as placement sees it during one pass: what is in flight there, then what
    this pass has submitted (under stand-in keys)."""

    keys: list[Hashable]
    chains: list[tuple[Hashable, ...]]
    steps: int
    seconds: float


def place(
    tree: StageTree, flights: Flights, workers: Workers
) -> tuple[list[Submit | AddPoint], int]:
    """The actions that start ``tree``'s ready chains; and how many found no idle worker.

    ``tree`` was built with every flight as a source (``stage.after`` names a flight's key).
    """
    actions: list[Submit | AddPoint] = []
    asked: set[tuple[str, int]] = set()
    for stage in tree.stages:  # branch points inside flights: have them saved
        if stage.after is None:
            continue
        token, step = cast("tuple[str, int]", stage.after)
        f = flights.get(token)
        if f is None or (token, step) in asked:
            continue
        point = f.points.get(step)
        if point is None or point.checkpoint is None:
            asked.add((token, step))
            actions.append(AddPoint(token, step, evaluate=False))

    alive = list(workers.alive)
    lanes: dict[str, _Lane] = {}
    for worker in alive:
        queue = flights.queue(worker)
        lanes[worker] = _Lane(
            [f.key for f in queue],
            [tuple(f.chain) for f in queue],
            sum(f.steps for f in queue),
            sum(f.seconds() for f in queue),
        )
    made = 0

    def fit(chain: list[Stage], worker: str) -> list[Stage]:
        left, lifetime = workers.left(worker)
        if math.isinf(left):
            return chain
        return fitting(chain, left - lanes[worker].seconds, lifetime)

    def submit(chain: list[Stage], worker: str, continues: str | None = None) -> None:
        nonlocal made
        lane = lanes[worker]
        behind = continues is None and bool(lane.keys)
        keys = tuple(("new", made, i) for i in range(len(chain)))
        made += 1
        lane.keys += keys
        lane.chains += [keys] * len(keys)
        lane.steps += sum(s.stop - s.start for s in chain)
        lane.seconds += sum((s.stop - s.start) * s.node.profile() for s in chain)
        actions.append(Submit(tuple(chain), worker, continues=continues, behind=behind))

    idle = [w for w in alive if not flights.busy(w)]
    waiting = 0
    for chain in tree.paths():
        head = chain[0]
        if head.parent is not None:
            continue  # waits for a stage of another chain
        if head.after is not None:
            token, step = cast("tuple[str, int]", head.after)
            source = flights.get(token)
            if source is None or step != source.stop or source.worker not in lanes:
                continue  # a mid-stage state: ready once that stage reports
            if lanes[source.worker].keys[-1:] != [source.key]:
                continue  # its worker has queued more work since; wait for the checkpoint
            fitted = fit(chain, source.worker)
            if fitted:  # else its worker retires first: wait for the checkpoint
                submit(fitted, source.worker, continues=source.key)
            continue
        # Where it fits (rather than where it never can), the most of the chain, on the
        # worker with the least time left.
        best: tuple[tuple[bool, float, float], str, list[Stage]] | None = None
        for worker in idle:
            fitted = fit(chain, worker)
            if fitted:
                seconds, left = sum(s.seconds for s in fitted), workers.left(worker)[0]
                rank = (seconds > left, -seconds, left)
                if best is None or rank < best[0]:
                    best = (rank, worker, fitted)
        if best is not None:
            idle.remove(best[1])
            submit(best[2], best[1])
            continue
        waiting += 1
        # Queue it behind a busy worker's only chain (none of whose stages reported yet), so the
        # worker goes on without waiting for the driver; the least loaded one with the time.
        candidates = []
        for worker in alive:
            lane = lanes[worker]
            if lane.keys and lane.chains[-1] == tuple(lane.keys):
                fitted = fit(chain, worker)
                if fitted:
                    candidates.append((lane.steps, worker, fitted))
        if candidates:
            _, worker, fitted = min(candidates, key=lambda c: (c[0], c[1]))
            submit(fitted, worker)
    return actions, waiting
