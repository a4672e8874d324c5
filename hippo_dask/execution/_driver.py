"""The driver: turns the plan's pending requests into Dask tasks, and reports into the plan.

It runs as part of an asyncio loop in the process that called ``study.tune`` and is stateless
in Hippo's sense (section 4.3): every decision starts from a stage tree freshly built from the
plan, with the stages now in flight as sources, so nothing they will pass is planned twice.

Scheduling follows the paper's critical-path scheduler: the tree is split into chains, longest
first (:meth:`~hippo_dask.stages.StageTree.paths`); each idle GPU worker gets the longest chain
that can start now, submitted as one Dask task per stage, pinned to that worker and linked by
dependencies so the trainer passes from stage to stage in the worker's memory. Pinning is
strict: when a worker leaves, its stages are cancelled and planned again from the latest
checkpoints, rather than Dask recomputing lost results elsewhere. A chain that
continues exactly where a running chain ends is queued on that chain's worker. With no worker
idle, a ready chain is queued behind the busy worker with the least work left (lookahead: it
starts without waiting for the driver); when another worker goes idle first, the chain is taken
back, if it has not started, and planned again (:meth:`Driver._withdraw_for_idle`).

Workers that retire on their own (``dask worker --lifetime``, as SLURM jobs' workers do before
their wall time) get only the stages whose estimated time (steps x profiled seconds per step)
fits in what is left of their lifetime; a chain is cut where it stops fitting (see
:func:`fitting`). The driver also publishes how many workers it could keep busy now, under
:data:`DEMAND_KEY` in the scheduler's metadata, for adaptive clusters to scale on. A step a running
stage will pass but that somebody now needs (a new request, a new branch) is added to that
stage through ``Client.run``, so it is saved instead of trained again.

Dask futures finish in Dask's threads; their reports are handed to this loop with
``call_soon_threadsafe``, and all plan updates happen on this loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
import uuid
import traceback as tb_module
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hippo_dask._settings import setting
from hippo_dask.errors import HippoError, HippoWarning, StorageError
from hippo_dask.execution._identity import state_digest
from hippo_dask.execution._recorder import Recorder
from hippo_dask.execution._spec import Point, PointResult, StageReport, StageSpec
from hippo_dask.execution._worker import add_points_async, run_stage, withdraw_async
from hippo_dask.plan import Node, SearchPlan
from hippo_dask.plan._trie import Trie
from hippo_dask.stages import Stage, StageTree
from hippo_dask.storage._records import CANCELLED, DONE, FAILED, LOST, RETRIED, MetricRow
from hippo_dask.storage._retry import transient, with_retries_async
from hippo_dask.trial import Trial

if TYPE_CHECKING:
    import distributed

    from hippo_dask.storage import CheckpointStore, MetricsStore
    from hippo_dask.trainer import Trainer

__all__ = ["DEMAND_KEY", "Driver", "RunStats", "TrialFailedError", "fitting", "worker_deadline"]

logger = logging.getLogger(__name__)

GPU = "GPU"
_HEARTBEAT = 1.0
#: Finished stage futures kept referenced, so that the same stage planned again by another
#: driver on this client (another study of the same plan) finds the result instead of
#: recomputing it: Dask forgets a key as soon as nobody holds its future.
_KEEP_FINISHED = 4096
#: A stage whose worker left this many times fails its trials instead of being planned again:
#: its worker is probably crashing on it (out of memory, a segfault, an unloadable trainer).
_MAX_LOSSES = 3
#: Scheduler metadata key under which each driver publishes ``[workers it could use, unix time]``.
DEMAND_KEY = "hippo-demand"
#: Republish an unchanged demand this often (seconds), so readers can tell a live driver.
_DEMAND_REFRESH = 10.0


def worker_deadline(dask_worker: Any) -> tuple[float, float, int] | None:
    """On a worker: ``(unix time it retires, its lifetime, pid)``, or ``None`` without a lifetime.

    ``dask worker --lifetime`` counts from the worker's start, which Dask does not record; the
    process's creation time is a little earlier, so the deadline errs on the early side.
    """
    lifetime = getattr(dask_worker, "lifetime", None)
    if not lifetime:
        return None
    import psutil

    return psutil.Process().create_time() + float(lifetime), float(lifetime), os.getpid()


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
    if not out and chain and lifetime is not None and chain[0].seconds > lifetime \
            and seconds_left >= lifetime / 2:
        out = chain[:1]
    return out


class TrialFailedError(HippoError, RuntimeError):
    """A stage a trial needs raised in the trainer; carries the worker's traceback."""

    def __init__(self, message: str, *, exc_type: str, stage: str, worker_traceback: str) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.stage = stage
        self.worker_traceback = worker_traceback


@dataclass
class RunStats:
    """What the engine did: steps trained, stages run, worker time."""

    executed_steps: int = 0
    stages: int = 0
    worker_seconds: float = 0.0
    train_seconds: float = 0.0
    resumed_from_memory: int = 0
    resumed_from_checkpoint: int = 0
    started_from_scratch: int = 0


@dataclass
class _Running:
    key: str
    node: Node
    start: int
    stop: int
    worker: str
    points: dict[int, Point]
    future: Any
    chain: list[str] = field(default_factory=list)
    #: Queued behind another chain on its worker for order alone (not continuing from it):
    #: another worker may take it over while it has not started.
    lookahead: bool = False
    #: When it started, as far as this driver can tell (``time.monotonic()``), else ``None``.
    began: float | None = None


class Driver:
    """Schedules a plan's pending requests on a Dask client's GPU workers.

    Parameters
    ----------
    plan
        The study's search plan; the driver is its only writer in this process.
    client
        A synchronous ``distributed.Client``.
    trainer_cls, config_of
        The trainer class and a function giving the config it is built with for a trial.
    store
        Where checkpoints go.
    metrics
        The zarr metrics store, or ``None``.
    salt
        Separates states of different trainers (the trainer's fingerprint).
    eval_every
        Also record metrics every that many steps (learning curves), or ``None``.
    retries
        Dask retries of a stage whose trainer raised.
    storage_timeout
        Seconds storage may stay unreachable before the study stops (default: the
        ``hippo.storage-timeout`` setting).
    """

    def __init__(
        self,
        *,
        plan: SearchPlan,
        client: distributed.Client,
        trainer_cls: type[Trainer],
        config_of: Callable[[Trial], dict[str, Any]],
        store: CheckpointStore,
        metrics: MetricsStore | None = None,
        salt: str = "",
        eval_every: int | None = None,
        retries: int = 0,
        storage_timeout: float | None = None,
    ) -> None:
        self.plan = plan
        self.client = client
        self.trainer_cls = trainer_cls
        self.config_of = config_of
        self.store = store
        self.metrics = metrics
        self.salt = salt
        self.eval_every = eval_every
        self.retries = retries
        self.storage_timeout = float(setting("storage-timeout", storage_timeout))
        self.refresh_interval = float(setting("refresh-interval"))
        self.checkpoint_interval = float(setting("checkpoint-interval"))
        self.withdraw_after = float(setting("withdraw-after"))
        self.stats = RunStats()
        self.loop = asyncio.get_running_loop()
        self._waiters: dict[tuple[Node, int], list[asyncio.Future[dict[str, float]]]] = {}
        self._failed: dict[tuple[Node, int], TrialFailedError] = {}
        self._running: dict[str, _Running] = {}
        self._queued: dict[str, list[str]] = {}  # worker -> keys submitted there, in order
        self._kicked = False
        self._closed = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._digests: dict[tuple[str, int], str] = {}
        self._finished: OrderedDict[str, tuple[Any, StageReport]] = OrderedDict()
        self._losses: dict[tuple[Node, int], set[str]] = {}
        self._dead: set[str] = set()  # workers that left: the client's list may lag behind
        self._attempts: dict[str, int] = {}  # keys resubmitted after a loss get a new name
        self._missing: dict[str, int] = {}  # looks in a row that did not see a worker
        self._dead_ends: dict[tuple[Node, int], int] = {}  # trainer errors per stage end
        self._recorder = None if metrics is None else Recorder(
            metrics, self.loop, timeout=self.storage_timeout, on_error=self._fail_everyone)
        self.on_report: list[Callable[[StageReport], None]] = []
        self._deadlines: dict[str, tuple[float, float] | None] = {}  # worker -> (deadline, lifetime)
        self._closing: set[str] = set()  # workers retiring now (closing_gracefully)
        self._id = uuid.uuid4().hex[:12]
        self._demand: tuple[int, float] | None = None  # last published (workers, when)
        self._flusher: asyncio.Task[None] | None = None  # retrying the journal during an outage
        self._unjournaled: list[tuple[Node, int]] = []  # results waiting for that
        self._withdrawing = False  # asking busy workers for queued chains back

    # -- what tuners call ---------------------------------------------------------------------

    async def request(self, trial: Trial, steps: int, tag: str | None = None) -> dict[str, float]:
        """Metrics of ``trial`` after ``steps`` steps, training what is missing."""
        request = self.plan.add(trial, steps, tag)
        metrics = request.metrics
        if metrics is not None:
            return dict(metrics)
        key = (request.node, steps)
        failed = self._failed.get(key)
        if failed is not None:
            raise failed
        future: asyncio.Future[dict[str, float]] = self.loop.create_future()
        self._waiters.setdefault(key, []).append(future)
        self.kick()
        return await future

    def kick(self) -> None:
        """Schedule soon (once per loop turn, however many requests arrive in it)."""
        if not self._kicked and not self._closed:
            self._kicked = True
            self.loop.call_soon(self._schedule_now)
        if self._heartbeat is None and not self._closed:
            self._heartbeat = self.loop.create_task(self._beat())

    async def _beat(self) -> None:
        # Workers join and leave, and other processes write to the plan, without telling us:
        # look again while anybody waits.
        last_refresh = self.loop.time()
        while not self._closed:
            await asyncio.sleep(_HEARTBEAT)
            if not self._waiters:
                continue
            if self.loop.time() - last_refresh >= self.refresh_interval:
                last_refresh = self.loop.time()
                self._refresh()
            self.kick()

    def _refresh(self) -> None:
        """Take in what other processes journaled; answer whoever it answers."""
        try:
            if not self.plan.refresh():
                return
        except OSError as exc:
            logger.warning("could not read other writers' journal records: %s", exc)
            return
        for node, step in list(self._waiters):
            if step in node.metrics:
                self._resolve(node, step)

    async def close(self) -> None:
        """Cancel what is still running, fail what is still waiting, write queued metrics."""
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        futures = [r.future for r in self._running.values()]
        for r in self._running.values():
            self._ended(r, CANCELLED)
        self._running.clear()
        self._finished.clear()
        if futures:
            self.client.cancel(futures)
        if self._demand is not None and self._demand[0]:
            self._publish_demand(0)
        for waiters in self._waiters.values():
            for w in waiters:
                if not w.done():
                    w.cancel()
        self._waiters.clear()
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        if self._recorder is not None:
            await self._recorder.flush()
        try:
            self.plan.flush()
        except OSError as exc:  # storage down: keep the records buffered for a later flush
            logger.error("could not write the plan journal at close (%s); %d records stay "
                         "buffered in this process", exc, len(self.plan._buffer))

    # -- scheduling ---------------------------------------------------------------------------

    def _schedule_now(self) -> None:
        self._kicked = False
        if self._closed:
            return
        try:
            self._schedule()
        except HippoError as exc:  # a configuration problem: every waiter gets it as it is
            self._fail_everyone(exc)
        except Exception:  # noqa: BLE001 - a scheduling bug must not hang every waiter
            logger.exception("scheduling failed")
            self._fail_everyone(TrialFailedError(
                "the hippo_dask scheduler failed; see the log", exc_type="SchedulerError",
                stage="", worker_traceback=tb_module.format_exc(),
            ))

    def _fail_everyone(self, error: BaseException) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        self._waiters.clear()

    def _workers(self) -> list[str]:
        # Ask the scheduler: the client's cached view (scheduler_info) is refreshed in the
        # background and can read as empty for a moment.
        info = self.client.sync(self.client.scheduler.identity, n_workers=-1)
        workers = info.get("workers", {})
        gpu = sorted(
            a for a, w in workers.items()
            if w.get("resources", {}).get(GPU, 0) >= 1 and a not in self._dead
        )
        self._closing = {a for a in gpu if workers[a].get("status") == "closing_gracefully"}
        self._learn_deadlines(gpu)
        if workers and not gpu and not set(workers) <= self._dead:
            raise HippoError(
                "no Dask worker advertises the GPU resource that stages ask for; start workers "
                "with `--resources GPU=1` (one per GPU, or one per core on a CPU machine), or "
                "let hippo_dask start its own cluster (client=None)"
            )
        return gpu

    def _learn_deadlines(self, workers: list[str]) -> None:
        """Ask workers seen for the first time when they retire (``--lifetime``), once each."""
        new = [w for w in workers if w not in self._deadlines]
        if not new:
            return
        try:
            found = self.client.run(worker_deadline, workers=new, on_error="return")
        except Exception as exc:  # noqa: BLE001 - a worker that left: ask the others next time
            logger.debug("could not ask workers %s for their lifetime: %s", new, exc)
            return
        for worker, value in found.items():
            if isinstance(value, BaseException):
                continue
            if value is None:
                self._deadlines[worker] = None
                continue
            deadline, lifetime, pid = value
            if pid == os.getpid():  # a worker thread of this process: its start is unknown
                deadline = time.time() + lifetime
            self._deadlines[worker] = (deadline, lifetime)
            logger.info("worker %s retires in %.0f s (lifetime %.0f s)", worker,
                        deadline - time.time(), lifetime)

    def _left(self, worker: str) -> tuple[float, float | None]:
        """Seconds until ``worker`` retires (infinite without a lifetime), and its lifetime."""
        if worker in self._closing:
            return 0.0, None
        known = self._deadlines.get(worker)
        if known is None:
            return math.inf, None
        return known[0] - time.time(), known[1]

    def _ahead(self, worker: str) -> float:
        """Estimated seconds of the work already queued on ``worker`` (all of the running stage)."""
        return sum((r.stop - r.start) * r.node.profile()
                   for k in self._queued.get(worker, []) if (r := self._running.get(k)) is not None)

    def _fit(self, chain: list[Stage], worker: str) -> list[Stage]:
        left, lifetime = self._left(worker)
        if math.isinf(left):
            return chain
        return fitting(chain, left - self._ahead(worker), lifetime)

    def _publish_demand(self, workers: int) -> None:
        """Tell adaptive clusters how many workers this driver could keep busy now."""
        now = time.time()
        if self._demand is not None and self._demand[0] == workers and now - self._demand[1] < _DEMAND_REFRESH:
            return
        self._demand = (workers, now)
        scheduler = self.client.scheduler

        async def publish() -> None:
            try:
                await scheduler.set_metadata(keys=[DEMAND_KEY, self._id], value=[workers, now])  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - the scheduler is gone; nobody scales on it
                logger.debug("could not publish the stage demand: %s", exc)

        try:
            self.client.loop.add_callback(publish)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - client closed
            logger.debug("could not publish the stage demand: %s", exc)

    def _flush(self) -> None:
        """Journal what the plan buffered. During a storage outage the study goes on: the records
        stay buffered, a background task retries (:meth:`_flush_later`), and results reach
        their waiters only once journaled (:meth:`_resolve_journaled`), so a tuner never acts
        on a result that a crash could take back."""
        if not self._journaled():
            return  # the retrying task writes these records too, in order
        try:
            self.plan.flush()
        except Exception as exc:
            if not transient(exc):
                raise
            self._flusher = self.loop.create_task(self._flush_later())

    def _journaled(self) -> bool:
        return self._flusher is None or self._flusher.done()

    async def _flush_later(self) -> None:
        try:
            await with_retries_async(self.plan.flush, what=f"writing the plan journal of {self.plan.url}",
                                     timeout=self.storage_timeout)
        except Exception as exc:  # noqa: BLE001 - down past the limit: the study stops cleanly
            logger.error("%s", exc)
            self._fail_everyone(exc)
            return
        held, self._unjournaled = self._unjournaled, []
        for node, step in held:
            self._resolve(node, step)
        self.kick()

    def _resolve_journaled(self, node: Node, step: int) -> None:
        """Answer the waiters of ``(node, step)`` now, or once the journal holds their result."""
        if self._journaled():
            self._resolve(node, step)
        else:
            self._unjournaled.append((node, step))

    def _schedule(self) -> None:
        self._flush()
        workers = self._workers()
        self._abandon_lost_workers(set(workers))
        now = time.monotonic()
        for worker in list(self._queued):
            keys = self._queued[worker] = [k for k in self._queued[worker] if k in self._running]
            if keys and self._running[keys[0]].began is None:  # the stage before it reported
                head = self._running[keys[0]]
                head.began, head.lookahead = now, False
        if self._withdraw_for_idle(workers):
            return  # placed once the workers answer
        wanted = self._wanted()
        exclude = self._cover_pending_with_running(wanted)
        running = {key: (r.node, r.start, r.stop) for key, r in self._running.items()}
        tree = self.plan.stage_tree(running=running, exclude=exclude, requests=wanted)
        logger.debug(
            "schedule: workers %s, running %s, queued %s, %d stages pending, %d waiting",
            workers, sorted(self._running), {w: len(k) for w, k in self._queued.items()},
            len(tree), sum(len(w) for w in self._waiters.values()),
        )
        waiting = 0  # chains ready to start that got no idle worker
        if len(tree):
            waiting = self._place(tree, workers)
        self._publish_demand(sum(1 for w in workers if self._queued.get(w)) + waiting)

    def _place(self, tree: StageTree, workers: list[str]) -> int:
        """Submit the tree's ready chains; return how many found no idle worker."""
        self._ask_running_for_branch_points(tree)
        idle = [w for w in workers if not self._queued.get(w)]
        waiting = 0
        for chain in tree.paths():
            head = chain[0]
            if head.parent is not None:
                continue  # waits for a stage of another chain
            if head.after is not None:
                token, step = head.after
                source = self._running.get(token)
                if source is None or step != source.stop or source.worker not in workers:
                    continue  # a mid-stage state: ready once that stage reports
                if source.key != self._queued.get(source.worker, [None])[-1]:
                    continue  # its worker has queued more work since; wait for the checkpoint
                fitted = self._fit(chain, source.worker)
                if fitted:  # else its worker retires first: wait for the checkpoint
                    self._submit(fitted, source.worker, tree, after=source)
                continue
            # Where it fits (rather than where it never can), the most of the chain, on the
            # worker with the least time left.
            best: tuple[tuple[bool, float, float], str, list[Stage]] | None = None
            for worker in idle:
                fitted = self._fit(chain, worker)
                if fitted:
                    seconds, left = sum(s.seconds for s in fitted), self._left(worker)[0]
                    rank = (seconds > left, -seconds, left)
                    if best is None or rank < best[0]:
                        best = (rank, worker, fitted)
            if best is not None:
                idle.remove(best[1])
                self._submit(best[2], best[1], tree)
            else:
                waiting += 1
                self._queue_behind(chain, workers, tree)
        return waiting

    def _queue_behind(self, chain: list[Stage], workers: list[str], tree: StageTree) -> None:
        """Queue a ready chain behind a busy worker's only chain, so the worker goes on without
        waiting for the driver when it finishes; the least loaded worker that has the time gets it."""
        candidates = []
        for worker in workers:
            keys = self._queued.get(worker, [])
            if keys and keys[-1] in self._running and self._running[keys[-1]].chain == keys:
                fitted = self._fit(chain, worker)
                if fitted:
                    left = sum(r.stop - r.start for k in keys if (r := self._running.get(k)) is not None)
                    candidates.append((left, worker, fitted))
        if candidates:
            _, worker, fitted = min(candidates, key=lambda c: (c[0], c[1]))
            self._submit(fitted, worker, tree, after=self._running[self._queued[worker][-1]])

    def _withdraw_for_idle(self, workers: list[str]) -> bool:
        """While a worker is idle, take back the chains queued behind busy workers.

        Lookahead (:meth:`_queue_behind`) queues a ready chain behind the busy worker expected
        to free first, so the chain starts without waiting for the driver. When another worker
        goes idle first, the chain would wait there while that worker does nothing. Chains
        that have not started and have at least ``hippo.withdraw-after`` estimated seconds of
        work ahead of them are asked back from their workers, all in one broadcast; a worker
        refuses for a chain that has started. The ones given back are planned again with the
        rest, critical path first, once the answers are in. Returns whether it asked.
        """
        if self._withdrawing:
            return False
        idle = [w for w in workers if not self._queued.get(w)]
        if not idle:
            return False
        now = time.monotonic()
        asks: dict[str, list[str]] = {}
        for worker in workers:
            keys = self._queued.get(worker, [])
            ahead = 0.0
            for i, key in enumerate(keys):
                r = self._running[key]
                if r.lookahead and ahead >= self.withdraw_after:
                    seconds = sum((q.stop - q.start) * q.node.profile()
                                  for q in (self._running[k] for k in keys[i:]))
                    if any(self._left(w)[0] >= seconds for w in idle):
                        asks[worker] = keys[i:]
                    break
                estimate = (r.stop - r.start) * r.node.profile()
                if r.began is not None:
                    estimate = max(0.0, r.began + estimate - now)
                ahead += estimate
        if not asks:
            return False
        self._withdrawing = True
        self.loop.create_task(self._withdraw(asks))
        return True

    async def _withdraw(self, asks: dict[str, list[str]]) -> None:
        answers: dict[str, Any] = {}
        try:
            answers = await asyncio.to_thread(
                self.client.run, withdraw_async, asks, workers=list(asks), on_error="return")
        except Exception as exc:  # noqa: BLE001 - a worker left: its stages are planned again
            logger.debug("could not ask workers %s for queued stages back: %s", list(asks), exc)
        finally:
            self._withdrawing = False
        if self._closed:
            return
        now = time.monotonic()
        taken: list[_Running] = []
        for worker, keys in asks.items():
            if answers.get(worker) is True:
                gone = set(keys)
                taken += [r for k in keys if (r := self._running.pop(k, None)) is not None]
                self._queued[worker] = [k for k in self._queued.get(worker, []) if k not in gone]
            elif (r := self._running.get(keys[0])) is not None:
                r.lookahead = False  # it has started (or its worker left): ask no more
                r.began = r.began if r.began is not None else now
        for r in taken:
            self._renew_key(r.key)
            self._ended(r, CANCELLED)
        if taken:
            self.client.cancel([r.future for r in taken])
            logger.info("took back %d queued stage(s) for idle workers", len(taken))
        self.kick()

    def _renew_key(self, key: str) -> None:
        """The stage of ``key`` runs under a new name if submitted again: Dask may still hold
        (or be forgetting) the old one."""
        base = key.split("~", 1)[0]
        self._attempts[base] = self._attempts.get(base, 0) + 1

    def _abandon_lost_workers(self, alive: set[str]) -> None:
        """Stages on a worker that left (killed, pre-empted, restarted) are planned again.

        Their tasks are pinned to that worker, so Dask cannot run them elsewhere; cancelling
        them stops Dask from recomputing finished stages whose small results died with the
        worker. The next stage tree resumes from the latest checkpoints.
        """
        gone = {r.worker for r in self._running.values() if r.worker not in alive}
        for worker in list(self._missing):
            if worker not in gone:
                del self._missing[worker]
        for worker in gone:
            self._missing[worker] = self._missing.get(worker, 0) + 1
        # A worker counts as gone once two looks in a row miss it (or Dask cancelled its task).
        lost = [r for r in self._running.values()
                if r.worker in self._dead or self._missing.get(r.worker, 0) >= 2]
        if not lost:
            return
        lost_workers = {r.worker for r in lost}
        self._dead |= lost_workers
        workers = sorted({r.worker for r in lost})
        logger.warning("worker(s) %s left with %d stage(s); planning them again", workers, len(lost))
        for r in lost:
            del self._running[r.key]
        for worker in workers:
            self._queued.pop(worker, None)
        self.client.cancel([r.future for r in lost])
        for r in lost:
            self._count_loss(r)

    def _salvage(self, r: _Running) -> None:
        """Record the checkpoints a lost stage wrote before its worker died (found by name)."""
        for step, point in sorted(r.points.items()):
            if point.checkpoint is None or step in r.node.checkpoints:
                continue
            uri = self.store.uri(point.checkpoint)
            try:
                if self.store.exists(uri):
                    self.plan.record_checkpoint(r.node, step, uri)
                    logger.info("stage %s had saved step %d before its worker left", r.key, step)
            except OSError as exc:
                logger.warning("could not look for %s: %s", uri, exc)

    def _count_loss(self, r: _Running) -> None:
        """This stage lost its worker; once it lost that many different ones, its trials fail."""
        self._salvage(r)
        self._dead.add(r.worker)
        self._renew_key(r.key)
        # Finished results that lived there are gone; release them, or Dask recomputes them.
        for key, (_, report) in list(self._finished.items()):
            if report.worker in self._dead:
                del self._finished[key]
        workers = self._losses.setdefault((r.node, r.stop), set())
        workers.add(r.worker)
        count = len(workers)
        self._ended(r, FAILED if count >= _MAX_LOSSES else LOST,
                    error="WorkerLost" if count >= _MAX_LOSSES else "")
        if count >= _MAX_LOSSES:
            self._stage_failed(
                r, "WorkerLost",
                f"the worker running this stage left {count} times; it is probably crashing "
                "on it (out of memory? a trainer class the workers cannot import?)", "",
            )

    def _wanted(self) -> list[tuple[Node, int]]:
        """What this driver's callers wait for and the plan does not hold yet.

        Only these are planned: requests that an earlier, interrupted run or another process
        left pending in the shared plan are theirs to ask for again.
        """
        return [
            key for key, waiters in self._waiters.items()
            if waiters and key[1] not in key[0].metrics and key not in self._failed
        ]

    def _cover_pending_with_running(self, wanted: list[tuple[Node, int]]) -> set[tuple[Node, int]]:
        """Requests a running stage passes: ask it to evaluate there too."""
        covered: set[tuple[Node, int]] = set()
        by_node: dict[Node, list[_Running]] = {}
        for r in self._running.values():
            by_node.setdefault(r.node, []).append(r)
        for node, step in wanted:
            for r in by_node.get(node, ()):
                if r.start < step <= r.stop:
                    point = r.points.get(step)
                    if point is None or not point.evaluate or point.checkpoint is None:
                        self._add_points(r, [Point(step, True, self._checkpoint_name(node, step))])
                    covered.add((node, step))
                    break
        return covered

    def _ask_running_for_branch_points(self, tree: StageTree) -> None:
        for stage in tree.stages:
            if stage.after is None:
                continue
            token, step = stage.after
            r = self._running.get(token)
            if r is None:
                continue
            point = r.points.get(step)
            if point is None or point.checkpoint is None:
                self._add_points(r, [Point(step, False, self._checkpoint_name(r.node, step))])

    def _add_points(self, r: _Running, points: list[Point]) -> None:
        for p in points:
            old = r.points.get(p.step)
            r.points[p.step] = p if old is None else Point(
                p.step, old.evaluate or p.evaluate, old.checkpoint or p.checkpoint
            )
        logger.debug("asking stage %s for points %s", r.key, [p.step for p in points])
        self.client.run(add_points_async, r.key, points, workers=[r.worker], wait=False)

    # -- submitting ---------------------------------------------------------------------------

    def _digest(self, node: Node, step: int) -> str:
        key = (node.owner.id, step)
        found = self._digests.get(key)
        if found is None:
            found = self._digests[key] = state_digest(node.owner, step, self.salt)
        return found

    def _checkpoint_name(self, node: Node, step: int) -> str:
        return self._digest(node, step)[:40]

    def _sources(self, stage: Stage) -> tuple[tuple[int, str], ...]:
        """Checkpoints on the stage's path at or before its start, latest first (up to 3)."""
        found: list[tuple[int, str]] = []
        if stage.load_from is not None:
            found.append((stage.start, stage.load_from))
        node: Node | None = stage.node
        limit = stage.start
        while node is not None and len(found) < 3:
            for step in reversed(node.checkpoint_steps):
                if step <= limit and (step, node.checkpoints[step]) not in found:
                    found.append((step, node.checkpoints[step]))
                    if len(found) >= 3:
                        break
            limit = node.start
            node = node.parent
        found.sort(key=lambda item: -item[0])
        return tuple(found)

    def _points(self, stage: Stage) -> tuple[Point, ...]:
        """Where the stage stops to report: its end (checkpoint, and metrics if requested).

        Every stage end is a request's end or a branch point, so it is saved: other stages
        resume there. What a stage reports depends only on the stage, never on the chain it
        was put in, so two drivers that plan the same stage submit the same Dask key.
        """
        points = {stage.stop: Point(stage.stop, stage.evaluate,
                                    self._checkpoint_name(stage.node, stage.stop))}
        # Long stages also save every checkpoint-interval seconds of (profiled) training, at
        # steps fixed in advance: if the worker dies, the driver finds them by name.
        every = max(1, int(self.checkpoint_interval / max(stage.node.profile(), 1e-9)))
        first = (stage.start // every + 1) * every
        for step in range(first, stage.stop, every):
            points[step] = Point(step, False, self._checkpoint_name(stage.node, step))
        if self.eval_every:
            first = (stage.start // self.eval_every + 1) * self.eval_every
            for step in range(first, stage.stop, self.eval_every):
                if step not in stage.node.metrics:
                    saved = points.get(step)
                    points[step] = Point(step, True, saved.checkpoint if saved else None)
        return tuple(points[s] for s in sorted(points))

    def _stage_key(self, stage: Stage, points: tuple[Point, ...]) -> str:
        h = hashlib.sha256()
        h.update(self._digest(stage.node, stage.start).encode())
        h.update(self._digest(stage.node, stage.stop).encode())
        h.update(repr(points).encode())
        key = f"hippo-stage-{stage.node.owner.id[:8]}-{stage.start}-{stage.stop}-{h.hexdigest()[:16]}"
        attempt = self._attempts.get(key)
        return key if attempt is None else f"{key}~{attempt}"

    def _submit(self, chain: list[Stage], worker: str, tree: StageTree, after: _Running | None = None) -> None:
        previous = after.future if after is not None else None
        # The chain's first stage continues from ``after`` only when its state comes from it;
        # a chain queued behind another (lookahead) depends on it for order alone.
        chained = after is not None and chain[0].after is not None
        lookahead = after is not None and not chained
        began = None if self._queued.get(worker) else time.monotonic()
        keys: list[str] = []
        for stage in chain:
            points = self._points(stage)
            key = self._stage_key(stage, points)
            spec = StageSpec(
                key=key,
                trainer_cls=self.trainer_cls,
                config=self.config_of(stage.node.owner),
                trial=stage.node.owner,
                start=stage.start,
                stop=stage.stop,
                start_digest=self._digest(stage.node, stage.start),
                stop_digest=self._digest(stage.node, stage.stop),
                salt=self.salt,
                points=points,
                store=self.store,
                sources=self._sources(stage),
                storage_timeout=self.storage_timeout,
                chained=chained,
            )
            deps = [previous] if previous is not None else []
            future = self.client.submit(
                run_stage, spec, *deps, key=key, workers=[worker], allow_other_workers=False,
                resources={GPU: 1}, priority=int(tree.remaining(stage)),
            )
            running = _Running(key, stage.node, stage.start, stage.stop, worker,
                               {p.step: p for p in points}, future, lookahead=lookahead,
                               began=began)
            lookahead, began = False, None
            self._running[key] = running
            if self._recorder is not None:
                self._recorder.submitted(running)
            self._queued.setdefault(worker, []).append(key)
            keys.append(key)
            future.add_done_callback(self._callback(key))
            previous = future
            chained = True
        for key in keys:
            self._running[key].chain = keys
        logger.info("chain of %d stages (%d steps) to %s", len(chain), sum(s.steps for s in chain), worker)

    def _callback(self, key: str) -> Callable[[Any], None]:
        loop = self.loop

        def done(future: Any) -> None:  # runs in Dask's callback thread
            try:
                payload: tuple[str, Any, str] = ("ok", future.result(), "")
            except BaseException as exc:  # noqa: BLE001 - handed over to the loop
                text = ""
                try:
                    text = "".join(tb_module.format_tb(future.traceback()))
                except Exception:  # noqa: BLE001
                    pass
                payload = ("error", exc, text)
            try:
                loop.call_soon_threadsafe(self._done, key, payload)
            except RuntimeError:
                pass  # the loop is gone: the study was closed

        return done

    # -- reports ------------------------------------------------------------------------------

    def _done(self, key: str, payload: tuple[str, Any, str]) -> None:
        running = self._running.pop(key, None)
        if running is None or self._closed:
            return
        status, value, text = payload
        try:
            if status == "ok" and value.skipped:
                # The stage it continues from failed (that failure is handled), or a driver
                # withdrew it: planned again, it runs under a new key.
                self._renew_key(key)
                self._ended(running, CANCELLED, finished=value.finished)
            elif status == "ok":
                self._record(running, value)  # what it did before any error still counts
                if value.error is not None:
                    again = self._trainer_raised(running, *value.error)
                    self._ended(running, RETRIED if again else FAILED, value, error=value.error[0])
                else:
                    self._ended(running, DONE, value)
                    self._finished[key] = (running.future, value)
                    while len(self._finished) > _KEEP_FINISHED:
                        self._finished.popitem(last=False)
            elif _is_cancellation(value):
                # Nobody here cancelled it (ours are no longer running): Dask gave up on it,
                # because its worker died. Plan it again, up to a limit.
                self._queued.get(running.worker, []).clear()
                self._count_loss(running)
            else:
                self._ended(running, FAILED, error=type(value).__name__)
                self._stage_failed(running, type(value).__name__, str(value), text)
        except Exception as exc:  # noqa: BLE001 - never leave a waiter hanging
            logger.exception("recording stage %s failed; stopping the study", key)
            self._fail_everyone(exc)
            return
        self.kick()

    def _record(self, running: _Running, report: StageReport) -> None:
        plan = self.plan
        for uri, why in report.bad_checkpoints:
            self._forget(uri, why)
        rows: list[tuple[Node, PointResult, dict[str, float]]] = []
        for point in report.points:
            node = Trie.owner_of_state(running.node, point.step)
            if point.checkpoint is not None:
                plan.record_checkpoint(node, point.step, point.checkpoint)
            if point.metrics is not None:
                plan.record_metrics(node, point.step, point.metrics)
                rows.append((node, point, point.metrics))
        if report.seconds_per_step is not None:
            plan.record_profile(running.node, report.seconds_per_step)
        self._flush()
        stats = self.stats
        stats.executed_steps += report.trained_steps
        stats.stages += 1
        stats.worker_seconds += report.finished - report.started
        stats.train_seconds += report.train_seconds
        if report.resumed_from == "memory":
            stats.resumed_from_memory += 1
        elif report.resumed_from == "scratch":
            stats.started_from_scratch += 1
        else:
            stats.resumed_from_checkpoint += 1
        if self._recorder is not None:
            self._recorder.metric_rows(
                MetricRow(trial=node.owner.id, step=p.step, values=values,
                          wall_time=p.wall_time, worker=report.worker)
                for node, p, values in rows
            )
        for callback in self.on_report:
            callback(report)
        for node, point, _ in rows:
            self._resolve_journaled(node, point.step)

    def _ended(self, running: _Running, status: str, report: StageReport | None = None, *,
               finished: float | None = None, error: str = "") -> None:
        """Record how a submitted stage ended, with the worker's times if it reported."""
        if self._recorder is not None:
            if report is not None:
                self._recorder.ended(running, status, started=report.started,
                                     finished=report.finished, error=error)
            else:
                self._recorder.ended(running, status, finished=finished, error=error)

    def _resolve(self, node: Node, step: int) -> None:
        metrics = node.metrics.get(step)
        for waiter in self._waiters.pop((node, step), []):
            if not waiter.done() and metrics is not None:
                waiter.set_result(dict(metrics))

    def _forget(self, uri: str, why: str) -> None:
        for key, (_, report) in list(self._finished.items()):
            if any(p.checkpoint == uri for p in report.points):
                del self._finished[key]  # planned again, it must run again
        for node in self.plan.nodes:
            for step, known in list(node.checkpoints.items()):
                if known == uri:
                    self.plan.forget_checkpoint(node, step)
                    warnings.warn(
                        f"checkpoint {uri} was unusable ({why}); the plan forgot it and the "
                        "work is re-derived from the nearest good state",
                        HippoWarning,
                        stacklevel=1,
                    )

    def _trainer_raised(self, running: _Running, kind: str, message: str, text: str) -> bool:
        """The trainer raised in this stage: plan it again up to ``retries`` times (returns
        ``True``), then fail its trials (``False``)."""
        self._dead_ends.setdefault((running.node, running.stop), 0)
        self._dead_ends[(running.node, running.stop)] += 1
        if kind != "StorageError" and self._dead_ends[(running.node, running.stop)] <= self.retries:
            logger.warning("stage %s raised %s: %s; running it again", running.key, kind, message)
            base = running.key.split("~", 1)[0]
            self._attempts[base] = self._attempts.get(base, 0) + 1
            return True
        self._stage_failed(running, kind, message, text)
        return False

    def _stage_failed(self, running: _Running, kind: str, message: str, text: str) -> None:
        if kind == "StorageError":
            # Storage stayed down past the limit: no trial can go on, stop the study.
            self._fail_everyone(StorageError(f"stage {running.key} on {running.worker}: {message}"))
            return
        error = TrialFailedError(
            f"stage {running.key} failed on {running.worker}: {kind}: {message}",
            exc_type=kind, stage=running.key, worker_traceback=text,
        )
        logger.warning("%s", error)
        for node, step in list(self._waiters):
            if self._depends(node, step, running):
                self._fail((node, step), error)

    @staticmethod
    def _depends(node: Node, step: int, running: _Running) -> bool:
        """Whether the state after ``step`` along ``node``'s path needs a step the stage trains."""
        child: Node | None = None
        current: Node | None = node
        while current is not None and current is not running.node:
            child = current
            current = current.parent
        if current is None:
            return False
        reach = step if child is None else child.start
        return reach > running.start

    def _fail(self, key: tuple[Node, int], error: TrialFailedError) -> None:
        self._failed[key] = error
        for waiter in self._waiters.pop(key, []):
            if not waiter.done():
                waiter.set_exception(error)


def _is_cancellation(exc: BaseException) -> bool:
    """Whether a future ended because Dask cancelled it, rather than the trainer raising."""
    import concurrent.futures

    return isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)) or (
        type(exc).__name__ == "FutureCancelledError"
    )
