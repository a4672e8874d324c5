"""The driver: turns the plan's pending requests into Dask tasks, and reports into the plan.

It runs as part of an asyncio loop in the process that called ``study.tune`` and is stateless
in Hippo's sense (section 4.3): every decision starts from a stage tree freshly built from the
plan, with the stages now in flight as sources, so nothing they will pass is planned twice.

Scheduling follows the paper's critical-path scheduler: the tree is split into chains, longest
first (:meth:`~hippo_dask.stages.StageTree.paths`), and each idle GPU worker gets the longest
chain that can start now. The driver's parts live in their own modules:
:mod:`~hippo_dask.execution._placement` (which worker gets what: idle workers, lookahead
queues and taking them back, worker lifetimes, points added to running stages),
:mod:`~hippo_dask.execution._submission` (a chain as pinned Dask tasks linked by dependencies,
so the trainer passes from stage to stage in the worker's memory) and
:mod:`~hippo_dask.execution._reports` (reports into the plan, failures, lost workers). Pinning
is strict: when a worker leaves, its stages are cancelled and planned again from the latest
checkpoints, rather than Dask recomputing lost results elsewhere.

The driver also publishes how many workers it could keep busy now, under :data:`DEMAND_KEY` in
the scheduler's metadata, for adaptive clusters to scale on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback as tb_module
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hippo_dask._redact import mask_url
from hippo_dask._settings import setting
from hippo_dask.errors import HippoError, JournalError, TrialFailedError
from hippo_dask.execution._placement import Placement, fitting, worker_deadline
from hippo_dask.execution._recorder import Recorder
from hippo_dask.execution._reports import Reports
from hippo_dask.execution._running import Running
from hippo_dask.execution._spec import StageReport
from hippo_dask.execution._submission import GPU, Submission
from hippo_dask.plan import Node, SearchPlan
from hippo_dask.storage._records import CANCELLED
from hippo_dask.storage._retry import permanent_error, transient, with_retries_async
from hippo_dask.storage._study_store import StudyCheckpointStore
from hippo_dask.trial import Trial

if TYPE_CHECKING:
    import distributed

    from hippo_dask.storage import CheckpointStore, MetricsStore
    from hippo_dask.trainer import Trainer

__all__ = ["DEMAND_KEY", "Driver", "RunStats", "TrialFailedError", "fitting", "worker_deadline"]

logger = logging.getLogger(__name__)

_HEARTBEAT = 1.0
#: Scheduler metadata key under which each driver publishes ``[workers it could use, unix time]``.
DEMAND_KEY = "hippo-demand"
#: Republish an unchanged demand this often (seconds), so readers can tell a live driver.
_DEMAND_REFRESH = 10.0


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


class Driver(Placement, Submission, Reports):
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
        self.lease_interval = float(setting("lease-interval"))
        self._lease: frozenset[str] = frozenset()  # checkpoint names this driver's lease holds
        self._lease_written = 0.0  # when (time.monotonic())
        self._new_requests = False  # requests added since the last read of the journal
        self.stats = RunStats()
        self.loop = asyncio.get_running_loop()
        self._waiters: dict[tuple[Node, int], list[asyncio.Future[dict[str, float]]]] = {}
        self._failed: dict[tuple[Node, int], TrialFailedError] = {}
        self._running: dict[str, Running] = {}
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
        self._unreadable_since: float | None = None  # journal reads failing since (monotonic)
        self._unjournaled: list[tuple[Node, int]] = []  # results waiting for that
        self._withdrawing = False  # asking busy workers for queued chains back
        self._withdrawal: asyncio.Task[None] | None = None  # that request, while it runs

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
        self._new_requests = True
        self.kick()
        return await future

    def kick(self) -> None:
        """Schedule soon (once per loop turn, however many requests arrive in it)."""
        if not self._kicked and not self._closed:
            self._kicked = True
            self.loop.call_soon(self._schedule_now)
        if (self._heartbeat is None or self._heartbeat.done()) and not self._closed:
            self._heartbeat = self.loop.create_task(self._beat())

    async def _beat(self) -> None:
        # Workers join and leave, and other processes write to the plan, without telling us:
        # look again while anybody waits.
        last_refresh = self.loop.time()
        while not self._closed:
            await asyncio.sleep(_HEARTBEAT)
            try:
                last_refresh = self._look(last_refresh)
            except Exception:  # a dead heartbeat would leave waiters hanging
                logger.exception("the driver's heartbeat failed")
                self._fail_everyone(TrialFailedError(
                    "the hippo_dask driver's heartbeat failed; see the log",
                    exc_type="SchedulerError", stage="", worker_traceback=tb_module.format_exc()))

    def _look(self, last_refresh: float) -> float:
        """One beat: read the journal when due and schedule; returns when it last read."""
        self._hold()
        if not self._waiters:
            return last_refresh
        if self.loop.time() - last_refresh >= self.refresh_interval:
            last_refresh = self.loop.time()
            self._refresh()
        self.kick()
        return last_refresh

    def _refresh(self) -> bool:
        """Take in what other processes journaled; answer whoever it answers. ``False`` when
        the journal could not be read (the plan is as it was).

        Never dies silently. The plan skips a bad record with a warning and goes on. Storage that
        cannot be read for a passing reason (an outage) is tried again at the next beat, for up
        to the storage timeout; past it, on a permanent storage error (access denied, no such
        bucket) or on any other failure, every waiter gets a clear error (the study stops)
        instead of waiting for records nobody will read.
        """
        try:
            changed = self.plan.refresh()
        except OSError as exc:
            if not transient(exc):
                self._stop_reading(permanent_error(
                    f"reading the plan journal of {mask_url(str(self.plan.url))}", exc))
                return False
            now = time.monotonic()
            since = self._unreadable_since = self._unreadable_since or now
            if now - since < self.storage_timeout:
                logger.warning("could not read other writers' journal records (trying again): "
                               "%s", mask_url(str(exc)))
                return False
            self._stop_reading(JournalError(
                f"the plan journal of {mask_url(str(self.plan.url))} could not be read for "
                f"{self.storage_timeout:.0f} s (hippo.storage-timeout): {mask_url(str(exc))}; "
                "the study stopped, its journal is intact: run it again once the storage is back"))
            return False
        except Exception as exc:  # a failed look must stop the study, loudly
            logger.exception("could not take in the plan journal")
            self._stop_reading(HippoError(
                f"the driver could not take in the plan journal of "
                f"{mask_url(str(self.plan.url))}: {type(exc).__name__}: {mask_url(str(exc))}; the "
                "study stopped (the log has the traceback). If this is a HippoWarning, a warnings "
                "filter turned it into an error"))
            return False
        self._unreadable_since = None
        if not changed:
            return True
        for node, step in list(self._waiters):
            if step in node.metrics:
                self._resolve(node, step)
        return True

    def _stop_reading(self, error: HippoError) -> None:
        logger.error("%s", error)
        self._fail_everyone(error)

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
        if self._lease and isinstance(self.store, StudyCheckpointStore):
            try:
                self.store.release(self._id)
            except OSError as exc:  # it expires by itself (hippo.lease-interval)
                logger.warning("could not remove this driver's checkpoint lease: %s", exc)
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
        self._hold()

    def _hold(self) -> None:
        """Keep this driver's lease on the checkpoint files its stages in flight save, so that
        gc does not take them for orphans (:mod:`hippo_dask.storage._leases`). Written at once
        when that set gains a name (before the stage can have trained to its first periodic
        checkpoint: the same scheduling pass submits it), rewritten every
        ``hippo.lease-interval`` seconds while it holds any; names that left it (their records
        are journaled by then) go at that rewrite, so a stage ending costs no write."""
        if self._closed or not isinstance(self.store, StudyCheckpointStore):
            return
        names = {p.checkpoint for r in self._running.values() for p in r.points.values()
                 if p.checkpoint is not None}
        if not self._journaled():
            names |= self._lease  # their records wait for the journal: keep holding them
        held = frozenset(names)
        now = time.monotonic()
        grew = not held <= self._lease
        due = now - self._lease_written >= self.lease_interval and bool(held or self._lease)
        if not grew and not due:
            return
        try:
            if held:
                self.store.hold(self._id, held, self.lease_interval)
            else:
                self.store.release(self._id)
        except (OSError, ValueError) as exc:
            logger.warning("could not write the lease on %d checkpoint files of running stages "
                           "(gc may take them for orphans): %s", len(held), exc)
            return
        self._lease, self._lease_written = held, now

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
            if isinstance(exc, OSError) and not transient(exc):  # refused: stop, say what to check
                raise permanent_error(f"writing the plan journal of {mask_url(str(self.plan.url))}", exc) from None
            if not transient(exc):
                raise
            self._flusher = self.loop.create_task(self._flush_later())

    def _journaled(self) -> bool:
        return self._flusher is None or self._flusher.done()

    async def _flush_later(self) -> None:
        try:
            what = f"writing the plan journal of {mask_url(str(self.plan.url))}"
            await with_retries_async(self.plan.flush, what=what, timeout=self.storage_timeout)
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
        if self._new_requests and self._journaled():
            # Read the journal after journaling new requests and before planning them: a gc
            # that journaled forgetting a checkpoint before they reached the journal is seen
            # here, so no stage loads a file it deletes (hippo_dask.storage._gc). Until that
            # read succeeds, nothing is planned (the next beat tries again).
            if not self._refresh():
                return
            self._new_requests = False
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

    def _wanted(self) -> list[tuple[Node, int]]:
        """What this driver's callers wait for and the plan does not hold yet.

        Only these are planned: requests that an earlier, interrupted run or another process
        left pending in the shared plan are theirs to ask for again.
        """
        return [
            key for key, waiters in self._waiters.items()
            if waiters and key[1] not in key[0].metrics and key not in self._failed
        ]
