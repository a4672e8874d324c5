"""A discrete-event stand-in for a Study: the real plan and stage trees on simulated workers.

Tuners only ever ``await study.train(trial, steps)``. :class:`VirtualStudy` answers that with the
library's own :class:`~hippo_dask.SearchPlan` and :class:`~hippo_dask.StageTree`, scheduled the
way :class:`hippo_dask.execution.Driver` schedules them, but on ``W`` simulated workers whose
training takes virtual time: a stage costs its steps times a synthetic, deterministic number of
seconds per step (plus fixed costs per start, checkpoint and evaluation), and its metrics come
from a synthetic learning curve. Nothing sleeps; a study of hundreds of GPU-hours runs in
seconds.

What is mirrored from the driver (``Driver._schedule`` / ``_place`` / ``_queue_behind`` /
``_withdraw_for_idle``):

- every decision starts from ``plan.stage_tree(running=..., exclude=..., requests=...)`` over
  the requests somebody waits for, with every submitted, unreported stage as a source;
- a request that a submitted stage passes is added to that stage as a point (evaluate and
  save), and so is a branch point another stage will start from; a point added after the
  stage passed it is *missed*, as on a real worker, and the driver plans around it (counted
  once per stage and step, however often it is asked for again);
- chains come from :meth:`~hippo_dask.StageTree.paths` (critical path first); a chain whose head
  waits for a stage of another chain is not started; a chain continuing exactly where a
  worker's last queued stage ends is queued on that worker and continues in memory; any other
  chain goes to the first idle worker, or, with none idle, is queued behind the least loaded
  worker that runs a single chain (as in the driver, only while none of that chain's stages
  has reported);
- while a worker is idle, every chain queued behind a busy worker that has not started, with
  at least ``hippo.withdraw-after`` estimated seconds (steps times ``Node.profile()``, less
  what the running stage has done) ahead of it, is taken back before the decision and planned
  with the rest (``Driver._withdraw_for_idle``; the driver places once the workers answered);
- every stage end is saved; long stages also save every ``hippo.checkpoint-interval`` seconds
  of training at the stage's :meth:`Node.profile <hippo_dask.plan.Node.profile>` (the call the
  driver's ``_points`` makes, so both follow the library: measured, else the nearest measured
  ancestor, else the median of measured nodes with the same fixed values, else of the plan;
  a flat 1.0 s before 2026-12, which left a new root's first stage without interval
  checkpoints); a finished stage reports its points, its measured seconds per step (the
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
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import dask.config

import hippo_dask as hd
from hippo_dask.plan import Node
from hippo_dask.study import ISOLATE_KEY  # what Study(sharing=False) adds to every trial

__all__ = ["Costs", "SimulationStalled", "Snapshot", "VirtualLoop", "VirtualStudy", "run_virtual", "strip"]

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
    """A submitted stage: queued on or running on ``worker``, not reported yet."""

    key: int
    node: Node
    start: int
    stop: int
    worker: _Worker
    memory: bool  # continues from the state its worker holds in memory
    lookahead: bool  # queued behind another chain on its worker, for order alone
    points: dict[int, list[bool]]  # step -> [evaluate, checkpoint]
    chain: list[_Job] = field(default_factory=list)
    train_seconds: float = 0.0
    began: float | None = None
    end: float | None = None

    def reach(self, step: int, seconds: Seconds, costs: Costs) -> float:
        """Virtual time at which this running job has trained up to ``step``."""
        assert self.began is not None
        fixed = 0.0 if self.memory else costs.start
        return self.began + fixed + seconds(self.node.owner, self.start, step)


@dataclass(eq=False)
class _Worker:
    index: int
    queue: list[_Job] = field(default_factory=list)
    busy: float = 0.0


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
        self.plan = hd.SearchPlan()
        self.workers = [_Worker(i) for i in range(workers)]
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
        self._jobs: dict[int, _Job] = {}
        self._keys = itertools.count()
        self._events: list[tuple[float, int, _Job]] = []  # (end, key, job)
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
            worker_seconds=sum(w.busy for w in self.workers),
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

    # -- scheduling (mirrors Driver._schedule) ---------------------------------------------------

    def _withdraw_for_idle(self) -> bool:
        """``Driver._withdraw_for_idle``: while a worker is idle, every chain queued behind a
        busy worker that has not started and has at least ``withdraw_after`` estimated seconds
        of work ahead of it is taken back and planned again (before this decision's placement,
        as the driver places once the workers answered)."""
        if not any(not w.queue for w in self.workers):
            return False
        taken = False
        for worker in self.workers:
            ahead = 0.0
            for i, job in enumerate(worker.queue):
                if job.lookahead and job.began is None and ahead >= self.withdraw_after:
                    for gone in worker.queue[i:]:
                        del self._jobs[gone.key]
                    del worker.queue[i:]
                    taken = True
                    break
                estimate = (job.stop - job.start) * job.node.profile()
                if job.began is not None:
                    estimate = max(0.0, job.began + estimate - self.now)
                ahead += estimate
        return taken

    def _schedule(self) -> None:
        if self.withdraw_after is not None:
            self._withdraw_for_idle()
        wanted = [key for key, fs in self._waiters.items() if fs and key[1] not in key[0].metrics]
        covered = self._cover_with_running(wanted)
        running: dict[Hashable, tuple[Node, int, int]] = {
            key: (j.node, j.start, j.stop) for key, j in self._jobs.items()
        }
        tree = self.plan.stage_tree(running=running, exclude=covered, requests=wanted)
        if len(tree):
            self._place(tree)

    def _cover_with_running(self, wanted: list[tuple[Node, int]]) -> set[tuple[Node, int]]:
        by_node: dict[Node, list[_Job]] = {}
        for job in self._jobs.values():
            by_node.setdefault(job.node, []).append(job)
        covered = set()
        for node, step in wanted:
            for job in by_node.get(node, ()):
                if job.start < step <= job.stop:
                    self._add_point(job, step, evaluate=True)
                    covered.add((node, step))
                    break
        return covered

    def _add_point(self, job: _Job, step: int, *, evaluate: bool) -> None:
        old = job.points.get(step)
        if old is not None and (old[0] or not evaluate):
            return  # already stops there for that
        if job.began is not None and job.reach(step, self.seconds_of, self.costs) <= self.now:
            if (job.key, step) not in self._missed:  # the worker is past it: planned around
                self._missed.add((job.key, step))
                self.missed_points += 1
            return
        extra = (self.costs.evaluate if evaluate else 0.0) + (self.costs.save if old is None else 0.0)
        job.points[step] = [evaluate, True]
        if job.began is not None and extra:
            assert job.end is not None
            job.end += extra
            heapq.heappush(self._events, (job.end, job.key, job))

    def _place(self, tree: hd.StageTree) -> None:
        for stage in tree.stages:  # Driver._ask_running_for_branch_points
            if stage.after is not None:
                token, step = cast("tuple[int, int]", stage.after)
                job = self._jobs.get(token)
                if job is not None:
                    self._add_point(job, step, evaluate=False)
        idle = [w for w in self.workers if not w.queue]
        for chain in tree.paths():
            head = chain[0]
            if head.parent is not None:
                continue  # waits for a stage of another chain
            if head.after is not None:
                token, step = cast("tuple[int, int]", head.after)
                source = self._jobs.get(token)
                if source is None or step != source.stop or source.worker.queue[-1] is not source:
                    continue  # a mid-stage state, or its worker has more queued: wait
                self._submit(chain, source.worker, continues=True)
                continue
            if idle:
                self._submit(chain, idle.pop(0), continues=False)
            else:
                self._queue_behind(chain)

    def _queue_behind(self, chain: list[hd.Stage]) -> None:
        candidates = []
        for worker in self.workers:
            queue = worker.queue
            if queue and queue[-1].chain == queue:
                left = sum(j.stop - j.start for j in queue)
                candidates.append((left, worker.index, worker))
        if candidates:
            self._submit(chain, min(candidates, key=lambda c: c[:2])[2], continues=False)

    def _points(self, stage: hd.Stage) -> dict[int, list[bool]]:
        points = {stage.stop: [stage.evaluate, True]}
        if self.checkpoint_interval:
            every = max(1, int(self.checkpoint_interval / max(stage.node.profile(), 1e-9)))
            for step in range((stage.start // every + 1) * every, stage.stop, every):
                points[step] = [False, True]
        return points

    def _submit(self, chain: list[hd.Stage], worker: _Worker, *, continues: bool) -> None:
        jobs = []
        for i, stage in enumerate(chain):
            memory = stage.parent is not None if i else continues
            lookahead = not i and not continues and bool(worker.queue)
            job = _Job(next(self._keys), stage.node, stage.start, stage.stop, worker, memory,
                       lookahead, self._points(stage))
            jobs.append(job)
            self._jobs[job.key] = job
        for job in jobs:
            job.chain = jobs
        start_now = not worker.queue
        worker.queue.extend(jobs)
        if start_now:
            self._begin(jobs[0])

    # -- time ----------------------------------------------------------------------------------

    def _seconds(self, owner: hd.Trial, start: int, stop: int) -> float:
        key = (owner.id, start, stop)
        found = self._seconds_cache.get(key)
        if found is None:
            found = self._seconds_cache[key] = self.seconds_of(owner, start, stop)
        return found

    def _begin(self, job: _Job) -> None:
        job.began = self.now
        job.train_seconds = self._seconds(job.node.owner, job.start, job.stop)
        c = self.costs
        fixed = (0.0 if job.memory else c.start) + sum(
            (c.save if ckpt else 0.0) + (c.evaluate if ev else 0.0) for ev, ckpt in job.points.values()
        )
        job.end = self.now + fixed + job.train_seconds
        heapq.heappush(self._events, (job.end, job.key, job))

    def _advance(self) -> None:
        """Move the clock to the next stage end(s) and record their reports."""
        while self._events:
            end, key, job = self._events[0]
            if job.key not in self._jobs or end != job.end:
                heapq.heappop(self._events)  # stale entry (the job's end moved)
                continue
            break
        if not self._events:
            return
        dt = self._events[0][0] - self.now
        self._area[0] += dt * sum(1 for fs in self._waiters.values() for f in fs if not f.done())
        self._area[1] += dt * sum(1 for w in self.workers if w.queue)
        self._area[2] += dt * len({id(j.chain) for j in self._jobs.values()})
        self.now = self._events[0][0]
        while self._events and self._events[0][0] == self.now:
            end, key, job = heapq.heappop(self._events)
            if job.key in self._jobs and end == job.end:
                self._report(job)
        for node, step in [k for k in self._waiters if k[1] in k[0].metrics]:
            for future in self._waiters.pop((node, step)):
                if not future.done():
                    future.set_result(dict(node.metrics[step]))

    def _report(self, job: _Job) -> None:
        assert job.began is not None and job.end is not None
        del self._jobs[job.key]
        worker = job.worker
        assert worker.queue[0] is job
        worker.queue.pop(0)
        worker.busy += job.end - job.began
        plan = self.plan
        owner = self._user.get(job.node.owner.id)
        if owner is None:
            owner = self._user[job.node.owner.id] = strip(job.node.owner)
        for step in sorted(job.points):
            evaluate, checkpoint = job.points[step]
            if checkpoint:
                plan.record_checkpoint(job.node, step, f"sim://{job.node.owner.id[:12]}/{step}")
            if evaluate:
                plan.record_metrics(job.node, step, self.metrics_of(owner, step))
        if job.stop > job.start:
            plan.record_profile(job.node, job.train_seconds / (job.stop - job.start))
        self.executed_steps += job.stop - job.start
        self.stages += 1
        if worker.queue:
            self._begin(worker.queue[0])
