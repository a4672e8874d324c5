"""A discrete-event stand-in for a Study: the real plan and stage trees on simulated workers.

Tuners only ever ``await study.train(trial, steps)``. :class:`VirtualStudy` answers that with the
library's own :class:`~hippo_dask.SearchPlan` and :class:`~hippo_dask.StageTree`, scheduled the
way :class:`hippo_dask.execution.Driver` schedules them, but on ``W`` simulated workers whose
training takes virtual time: a stage costs its steps times a synthetic, deterministic number of
seconds per step (plus fixed costs per start, checkpoint and evaluation), and its metrics come
from a synthetic learning curve. Nothing sleeps; a study of hundreds of GPU-hours runs in
seconds.

What it shares with the driver: the placement policy itself. Every decision calls the
functions :class:`hippo_dask.execution.Driver` calls (``hippo_dask.execution._placement``:
``withdrawals``, ``cover``, ``place``) on the same :class:`~hippo_dask.execution._flights.Flights`
bookkeeping, and carries out the actions they return in virtual time:

- every decision starts from ``plan.stage_tree(running=..., exclude=..., requests=...)`` over
  the requests somebody waits for, with every submitted, unreported stage as a source;
- an ``AddPoint`` (a request a flight passes, a branch point inside it) makes the stage stop
  there; a point added after the stage passed it is *missed*, as on a real worker, and the
  policy plans around it (counted once per stage and step, however often it is asked for again);
- a ``Withdraw`` is granted at once (a chain the policy asks back has not started), before this
  decision's placement, as the driver places once the workers answered;
- a ``Submit`` queues its chain on its worker; where a stage stops is the driver's
  ``stage_points`` (every end saved, long stages also every ``hippo.checkpoint-interval``
  profiled seconds); a finished stage reports its points, its measured seconds per step (the
  profile that drives the next critical paths) and its trained steps.

What is not modelled: Dask and driver latencies (reports and decisions take no virtual time;
``benchmarks/sim.py`` measures them on a real cluster, 8-14 ms per stage), worker failures and
lifetimes, storage time beyond the fixed per-checkpoint cost.

Decisions happen when the event loop is quiescent: every tuner coroutine waits for a result.
:class:`VirtualLoop` is an asyncio loop whose clock moves only when nothing is ready to run, so
a "settle" timer fires exactly then. The simulated clock (:attr:`VirtualStudy.now`) is kept
apart from the loop's own clock, so settling costs no simulated time. Several stages that end
at the same moment are reported together, then the tuner reacts, then the next decision.

Sharing off (``sharing=False``) isolates every trial the way ``Study(sharing=False)`` does (a
fixed ``_hippo_isolate`` value per trial): each trial is its own root, trained from scratch, and
a trial requested again for more steps resumes from its own last checkpoint, as Ray Tune resumes
a paused trial.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import selectors
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import dask.config

import hippo_dask as hd
from hippo_dask.execution._flights import Flight, Flights
from hippo_dask.execution._placement import (
    AddPoint,
    Submit,
    Workers,
    cover,
    place,
    withdrawals,
)
from hippo_dask.execution._spec import Point
from hippo_dask.execution._submission import stage_points
from hippo_dask.plan import Node, SearchPlan, Stage, StageTree
from hippo_dask.study import (
    ISOLATE_KEY,  # what Study(sharing=False) adds to every trial
)

__all__ = [
    "Costs",
    "SimulationStalled",
    "Snapshot",
    "VirtualLoop",
    "VirtualStudy",
    "run_virtual",
    "strip",
]

T = TypeVar("T")
#: The engine's periodic checkpoints, in profiled seconds (``hippo.checkpoint-interval``).
CHECKPOINT_INTERVAL = float(dask.config.get("hippo.checkpoint-interval"))
#: An idle worker takes over a queued chain with this much estimated work ahead of it.
WITHDRAW_AFTER = float(dask.config.get("hippo.withdraw-after"))

#: ``metrics(trial, step)``: the metrics after ``step`` steps of ``trial`` (a user trial).
Metrics = Callable[[hd.Trial, int], dict[str, float]]
#: ``seconds(trial, start, stop)``: seconds of pure training from step ``start`` to ``stop``.
Seconds = Callable[[hd.Trial, int, int], float]


class SimulationStalled(RuntimeError):
    """Requests wait, nothing runs and nothing can start: a scheduling dead end."""


class _InstantSelector(selectors.SelectSelector):
    """A selector that never waits: a timeout moves the loop's clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise SimulationStalled("the event loop has nothing to run and nothing scheduled")
        self.clock += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock advances only when no callback is ready."""

    def __init__(self) -> None:
        self._instant = _InstantSelector()
        super().__init__(self._instant)

    def time(self) -> float:
        return self._instant.clock


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a fresh :class:`VirtualLoop`."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@dataclass(frozen=True)
class Costs:
    """Fixed seconds around the training itself, the same with and without sharing.

    ``start``: a stage that does not continue in a worker's memory builds its trainer (and loads
    a checkpoint); ``save``: each checkpoint written; ``evaluate``: each evaluation.
    """

    start: float = 0.0
    save: float = 0.0
    evaluate: float = 0.0


def strip(trial: hd.Trial) -> hd.Trial:
    """The user's trial, without the values the study adds (``_hippo_*``)."""
    config = trial.config
    if not any(k.startswith("_hippo_") for k in config):
        return trial
    return hd.Trial(**{k: v for k, v in config.items() if not k.startswith("_hippo_")})


@dataclass(eq=False)
class _Job:
    """How a flight runs in virtual time (its placement state is its :class:`Flight`)."""

    flight: Flight
    memory: bool  # continues from the state its worker holds in memory
    train_seconds: float = 0.0
    end: float | None = None

    def reach(self, step: int, seconds: Seconds, costs: Costs) -> float:
        """Virtual time at which this running job has trained up to ``step``."""
        began = self.flight.began
        assert began is not None
        fixed = 0.0 if self.memory else costs.start
        return began + fixed + seconds(self.flight.node.owner, self.flight.start, step)


#: What a simulated stage saves under (the name is never read).
_SAVED = "sim"


@dataclass
class Snapshot:
    """Totals at one moment of a simulated study."""

    time: float
    worker_seconds: float
    executed_steps: int
    stages: int
    missed_points: int
    requested_steps: int
    unique_steps: int
    running: int
    mean_waiting: float  # time averages: requests waiting for metrics,
    mean_busy: float  # workers with a stage,
    mean_chains: float  # chains submitted and not finished


class VirtualStudy:
    """``await study.train(trial, steps)`` on ``workers`` simulated workers (see module doc).

    Parameters
    ----------
    workers
        Simulated GPU workers.
    metrics
        The synthetic learning curve: ``metrics(trial, step)`` for a user trial (without
        ``_hippo_*`` values). It must depend only on the values of steps ``0 .. step - 1``.
    seconds
        Seconds of training from step ``start`` to ``stop`` of a trial.
    costs
        Fixed costs per stage start, checkpoint and evaluation.
    sharing
        ``False``: every trial on its own, as ``Study(sharing=False)`` (trial-by-trial).
    checkpoint_interval
        A long stage also saves about this often, in profiled seconds (``None``: only at ends).
    withdraw_after
        An idle worker takes over a queued chain with at least this many estimated seconds of
        work ahead of it (``None``: never, the driver before 2026-12-01).
    """

    def __init__(
        self,
        *,
        workers: int,
        metrics: Metrics,
        seconds: Seconds,
        costs: Costs = Costs(),
        sharing: bool = True,
        checkpoint_interval: float | None = CHECKPOINT_INTERVAL,
        withdraw_after: float | None = WITHDRAW_AFTER,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.plan = SearchPlan()
        self.workers = [f"w{i:04d}" for i in range(workers)]  # names sort as numbers do
        self.busy = dict.fromkeys(self.workers, 0.0)  # worker -> seconds it ran stages
        self.metrics_of = metrics
        self.seconds_of = seconds
        self.costs = costs
        self.sharing = sharing
        self.checkpoint_interval = checkpoint_interval
        self.withdraw_after = withdraw_after
        self.now = 0.0
        self.executed_steps = 0
        self.stages = 0
        self.missed_points = 0
        self._missed: set[tuple[int, int]] = set()  # (job key, step) already counted
        self.requests: list[tuple[str, int]] = []  # (user trial id, steps), in request order
        self.flights = Flights()
        self._jobs: dict[str, _Job] = {}
        self._keys = itertools.count()
        self._events: list[tuple[float, int, _Job]] = []  # (end, submission order, job)
        self._waiters: dict[tuple[Node, int], list[asyncio.Future[dict[str, float]]]] = {}
        self._posted = False
        self._seconds_cache: dict[tuple[str, int, int], float] = {}
        self._user: dict[str, hd.Trial] = {}
        self._area = [0.0, 0.0, 0.0]  # integrals over time of waiting, busy, chains

    # -- what tuners call -----------------------------------------------------------------------

    def plan_trial(self, trial: hd.Trial) -> hd.Trial:
        """The trial as the plan keys it (isolated without sharing, as Study does)."""
        return trial if self.sharing else hd.Trial(**trial.config, **{ISOLATE_KEY: trial.id})

    async def train(self, trial: hd.Trial, steps: int) -> dict[str, float]:
        self.requests.append((trial.id, steps))
        request = self.plan.add(self.plan_trial(trial), steps)
        if request.metrics is not None:
            return dict(request.metrics)
        future: asyncio.Future[dict[str, float]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((request.node, steps), []).append(future)
        self._post()
        return await future

    def metrics(self, trial: hd.Trial, steps: int) -> dict[str, float] | None:
        """What the plan holds for a user trial after ``steps`` steps."""
        return self.plan.metrics(self.plan_trial(trial), steps)

    def snapshot(self) -> Snapshot:
        stats = self.plan.stats()
        return Snapshot(
            time=self.now,
            worker_seconds=sum(self.busy.values()),
            executed_steps=self.executed_steps,
            stages=self.stages,
            missed_points=self.missed_points,
            requested_steps=stats.requested_steps,
            unique_steps=stats.unique_steps,
            running=len(self._jobs),
            mean_waiting=self._area[0] / self.now if self.now else 0.0,
            mean_busy=self._area[1] / self.now if self.now else 0.0,
            mean_chains=self._area[2] / self.now if self.now else 0.0,
        )

    # -- the event loop side ----------------------------------------------------------------------

    def _post(self) -> None:
        """Decide once everything that reacts to the current moment has reacted."""
        if not self._posted:
            self._posted = True
            asyncio.get_running_loop().call_later(1.0, self._settle)

    def _settle(self) -> None:
        self._posted = False
        try:
            self._schedule()
            if self._events:
                self._advance()
            elif any(not f.done() for fs in self._waiters.values() for f in fs):
                raise SimulationStalled(
                    f"{len(self._waiters)} requests wait at t={self.now:.0f}s, nothing runs "
                    "and the stage tree starts nothing"
                )
        except BaseException as exc:  # noqa: BLE001 - hand it to every waiter, never hang
            for futures in self._waiters.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
            self._waiters.clear()
            return
        if self._waiters or self._events:
            self._post()

    # -- scheduling (the driver's policy, carried out in virtual time) ---------------------------

    def _schedule(self) -> None:
        workers = Workers(alive=self.workers)
        if self.withdraw_after is not None:
            withdraw = withdrawals(self.flights, workers, self.now, self.withdraw_after)
            if withdraw is not None:  # granted: what the policy asks back has not started
                for worker, keys in withdraw.asks.items():
                    for gone in self.flights.take_back(worker, keys[0]):
                        del self._jobs[gone.key]
        wanted = [key for key, fs in self._waiters.items() if fs and key[1] not in key[0].metrics]
        points, covered = cover(wanted, self.flights)
        for action in points:
            self._add_point(action)
        running: dict[Hashable, tuple[Node, int, int]] = {
            f.key: (f.node, f.start, f.stop) for f in self.flights
        }
        tree = self.plan.stage_tree(running=running, exclude=covered, requests=wanted)
        if len(tree):
            self._place(tree)

    def _place(self, tree: StageTree) -> None:
        actions, _ = place(tree, self.flights, Workers(alive=self.workers))
        for action in actions:
            if isinstance(action, Submit):
                self._submit(action)
            else:
                self._add_point(action)

    def _add_point(self, action: AddPoint) -> None:
        job = self._jobs[action.key]
        flight, step, evaluate = job.flight, action.step, action.evaluate
        old = flight.points.get(step)
        if old is not None and (old.evaluate or not evaluate):
            return  # already stops there for that
        if flight.began is not None and job.reach(step, self.seconds_of, self.costs) <= self.now:
            if (flight.key, step) not in self._missed:  # the worker is past it: planned around
                self._missed.add((flight.key, step))
                self.missed_points += 1
            return
        extra = (self.costs.evaluate if evaluate else 0.0) + (
            self.costs.save if old is None else 0.0
        )
        self.flights.add_points(flight.key, [Point(step, evaluate, _SAVED)])
        if flight.began is not None and extra:
            assert job.end is not None
            job.end += extra
            heapq.heappush(self._events, (job.end, int(flight.key), job))

    def _points(self, stage: Stage) -> dict[int, Point]:
        if self.checkpoint_interval:
            stops = stage_points(stage, self.checkpoint_interval)
        else:
            stops = {stage.stop: (stage.evaluate, True)}
        return {
            step: Point(step, evaluate, _SAVED if save else None)
            for step, (evaluate, save) in stops.items()
        }

    def _submit(self, action: Submit) -> None:
        worker = action.worker
        start_now = not self.flights.busy(worker)
        flights: list[Flight] = []
        for i, stage in enumerate(action.chain):
            memory = stage.parent is not None if i else action.continues is not None
            flight = Flight(
                str(next(self._keys)),
                stage.node,
                stage.start,
                stage.stop,
                worker,
                self._points(stage),
                lookahead=not i and action.behind,
                began=self.now if start_now and not i else None,
            )
            self._jobs[flight.key] = _Job(flight, memory)
            flights.append(flight)
        self.flights.add_chain(worker, flights)
        if start_now:
            self._begin(self._jobs[flights[0].key])

    # -- time ----------------------------------------------------------------------------------

    def _seconds(self, owner: hd.Trial, start: int, stop: int) -> float:
        key = (owner.id, start, stop)
        found = self._seconds_cache.get(key)
        if found is None:
            found = self._seconds_cache[key] = self.seconds_of(owner, start, stop)
        return found

    def _begin(self, job: _Job) -> None:
        flight = job.flight
        flight.began = self.now
        job.train_seconds = self._seconds(flight.node.owner, flight.start, flight.stop)
        c = self.costs
        fixed = (0.0 if job.memory else c.start) + sum(
            (c.save if p.checkpoint else 0.0) + (c.evaluate if p.evaluate else 0.0)
            for p in flight.points.values()
        )
        job.end = self.now + fixed + job.train_seconds
        heapq.heappush(self._events, (job.end, int(flight.key), job))

    def _advance(self) -> None:
        """Move the clock to the next stage end(s) and record their reports."""
        while self._events:
            end, _, job = self._events[0]
            if job.flight.key not in self._jobs or end != job.end:
                heapq.heappop(self._events)  # stale entry (the job's end moved)
                continue
            break
        if not self._events:
            return
        dt = self._events[0][0] - self.now
        self._area[0] += dt * sum(1 for fs in self._waiters.values() for f in fs if not f.done())
        self._area[1] += dt * sum(1 for w in self.workers if self.flights.busy(w))
        self._area[2] += dt * len({tuple(f.chain) for f in self.flights})
        self.now = self._events[0][0]
        while self._events and self._events[0][0] == self.now:
            end, _, job = heapq.heappop(self._events)
            if job.flight.key in self._jobs and end == job.end:
                self._report(job)
        for node, step in [k for k in self._waiters if k[1] in k[0].metrics]:
            for future in self._waiters.pop((node, step)):
                if not future.done():
                    future.set_result(dict(node.metrics[step]))

    def _report(self, job: _Job) -> None:
        flight = job.flight
        assert flight.began is not None and job.end is not None
        del self._jobs[flight.key]
        worker = flight.worker
        assert self.flights.queue(worker)[0] is flight
        self.flights.landed(flight.key)
        self.busy[worker] += job.end - flight.began
        plan = self.plan
        node = flight.node
        owner = self._user.get(node.owner.id)
        if owner is None:
            owner = self._user[node.owner.id] = strip(node.owner)
        for step in sorted(flight.points):
            point = flight.points[step]
            if point.checkpoint is not None:
                plan.record_checkpoint(node, step, f"sim://{node.owner.id[:12]}/{step}")
            if point.evaluate:
                plan.record_metrics(node, step, self.metrics_of(owner, step))
        if flight.stop > flight.start:
            plan.record_profile(node, job.train_seconds / (flight.stop - flight.start))
        self.executed_steps += flight.stop - flight.start
        self.stages += 1
        self.flights.settle(self.now)  # the next stage on the worker starts now
        queue = self.flights.queue(worker)
        if queue:
            self._begin(self._jobs[queue[0].key])
