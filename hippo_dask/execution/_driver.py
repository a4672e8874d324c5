"""The driver: turns the plan's pending requests into Dask tasks, and reports into the plan.

It runs on the asyncio loop of the process that called ``study.tune`` and is stateless in
Hippo's sense (section 4.3): every decision starts from a stage tree freshly built from the plan,
with the stages now in flight as sources, so nothing they will pass is planned twice. Data flows
one way: requests -> plan -> stage tree -> placement -> Dask -> reports -> plan.

The parts, each the only owner of its state:

- :class:`~hippo_dask.execution._waiters.Waiters`: the futures ``study.train`` awaits;
- :class:`~hippo_dask.execution._flights.Flights`: what is submitted, queued and running on
  each worker;
- :mod:`~hippo_dask.execution._placement`: the policy, pure functions from (stage tree, flights,
  workers) to actions (the paper's critical-path scheduler, lookahead, withdrawals, lifetimes);
- :class:`~hippo_dask.execution._submission.Submission`: actions into pinned Dask tasks;
- :class:`~hippo_dask.execution._reports.Reports`: reports into plan records, failures, lost
  workers;
- :class:`~hippo_dask.execution._journaling.Journaling`: journal writes and reads through
  outages; :class:`~hippo_dask.execution._lease.Lease`: gc's view of files in the making;
- :class:`~hippo_dask.execution._dask.DaskCalls`: every Dask call, none blocking this loop.

Pinning is strict: when a worker leaves, its stages are planned again from the latest
checkpoints, rather than Dask recomputing lost results elsewhere. The driver also publishes how
many workers it could keep busy now, under :data:`~hippo_dask._constants.DEMAND_KEY` in the
scheduler's metadata, for adaptive clusters to scale on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback as tb_module
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from hippo_dask._constants import CANCELLED, DEMAND_KEY
from hippo_dask._settings import setting
from hippo_dask.errors import HippoError, TrialFailedError
from hippo_dask.execution._dask import DaskCalls
from hippo_dask.execution._flights import Flights
from hippo_dask.execution._journaling import Journaling
from hippo_dask.execution._lease import Lease
from hippo_dask.execution._placement import (
    Submit,
    Withdraw,
    Workers,
    cover,
    fitting,
    place,
    withdrawals,
)
from hippo_dask.execution._recorder import Recorder
from hippo_dask.execution._reports import Reports, RunStats
from hippo_dask.execution._spec import StageReport
from hippo_dask.execution._submission import Payload, Submission
from hippo_dask.execution._waiters import Waiters
from hippo_dask.execution._worker import worker_deadline
from hippo_dask.plan import Node, SearchPlan
from hippo_dask.trial import Trial

if TYPE_CHECKING:
    import distributed

    from hippo_dask.storage import CheckpointStore, MetricsStore
    from hippo_dask.trainer import Trainer

__all__ = ["DEMAND_KEY", "Driver", "RunStats", "TrialFailedError", "fitting", "worker_deadline"]

logger = logging.getLogger(__name__)

_HEARTBEAT = 1.0
#: Republish an unchanged demand this often (seconds), so readers can tell a live driver.
_DEMAND_REFRESH = 10.0


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
    checkpoints
        Where checkpoints go.
    metrics_store
        The zarr metrics store, or ``None``.
    fingerprint
        The trainer's code fingerprint: separates states of different trainers.
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
        checkpoints: CheckpointStore,
        metrics_store: MetricsStore | None = None,
        fingerprint: str = "",
        eval_every: int | None = None,
        retries: int = 0,
        storage_timeout: float | None = None,
    ) -> None:
        self.plan = plan
        self.checkpoints = checkpoints
        self.storage_timeout = float(setting("storage-timeout", storage_timeout))
        self.refresh_interval = float(setting("refresh-interval"))
        self.withdraw_after = float(setting("withdraw-after"))
        self.loop = asyncio.get_running_loop()
        self.flights = Flights()
        self.waiters = Waiters(self.loop)
        self.journaling = Journaling(
            plan, self.waiters, self.loop, storage_timeout=self.storage_timeout, kick=self.kick
        )
        self.dask = DaskCalls(client)
        self.lease = Lease(checkpoints, float(setting("lease-interval")))
        recorder = (
            None
            if metrics_store is None
            else Recorder(
                metrics_store,
                self.loop,
                timeout=self.storage_timeout,
                on_error=self.waiters.fail_all,
            )
        )
        self.recorder = recorder
        self.submission = Submission(
            dask=self.dask,
            flights=self.flights,
            loop=self.loop,
            trainer_cls=trainer_cls,
            config_of=config_of,
            fingerprint=fingerprint,
            checkpoint_interval=float(setting("checkpoint-interval")),
            eval_every=eval_every,
            storage_timeout=self.storage_timeout,
            on_done=self._landed,
            recorder=recorder,
        )
        self.reports = Reports(
            plan=plan,
            flights=self.flights,
            waiters=self.waiters,
            journaling=self.journaling,
            submission=self.submission,
            dask=self.dask,
            store=checkpoints,
            recorder=recorder,
            trainer_name=trainer_cls.__name__,
            retries=retries,
            kick=self.kick,
        )
        self._deadlines: dict[
            str, tuple[float, float] | None
        ] = {}  # worker -> (deadline, lifetime)
        self._new_requests = False  # requests added since the last read of the journal
        self._kicked = False
        self._closed = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._pass: asyncio.Task[None] | None = None  # the scheduling pass running now
        self._withdrawal: asyncio.Task[None] | None = None  # asking workers for chains back
        self._demand: tuple[int, float] | None = None  # last published (workers, when)

    @property
    def stats(self) -> RunStats:
        """What this driver's stages did."""
        return self.reports.stats

    @property
    def on_report(self) -> list[Callable[[StageReport], None]]:
        """Called with every stage report (the progress display listens here)."""
        return self.reports.on_report

    # -- what tuners call ---------------------------------------------------------------------

    async def request(self, trial: Trial, steps: int, tag: str | None = None) -> dict[str, float]:
        """Metrics of ``trial`` after ``steps`` steps, training what is missing."""
        request = self.plan.add(trial, steps, tag)
        if request.metrics is not None:
            return dict(request.metrics)
        failed = self.waiters.failed(request.node, steps)
        if failed is not None:
            raise failed
        future = self.waiters.add(request.node, steps)
        self._new_requests = True
        self.kick()
        return await future

    def kick(self) -> None:
        """Schedule soon (once per loop turn, however many requests arrive in it)."""
        if self._closed:
            return
        if not self._kicked:
            self._kicked = True
            self.loop.call_soon(self._start_pass)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = self.loop.create_task(self._beat())

    async def close(self) -> None:
        """Cancel what is still in flight, fail what is still waiting, write queued metrics."""
        self._closed = True
        for task in (self._heartbeat, self._pass):
            if task is not None:
                task.cancel()
        flights = self.flights.clear()
        for f in flights:
            self.reports.ended(f, CANCELLED)
        self.reports.forget_finished()
        try:
            await self.dask.cancel_now([f.future for f in flights])
        except Exception as exc:  # noqa: BLE001 - the cluster is gone: nothing runs for us
            logger.debug("could not cancel the stages in flight: %s", exc)
        if self._demand is not None and self._demand[0]:
            self._publish_demand(0)
        self.waiters.cancel_all()
        self.lease.release()
        if self.recorder is not None:
            await self.recorder.flush()
        self.journaling.close()

    # -- the loop's rhythm ----------------------------------------------------------------------

    async def _beat(self) -> None:
        # Workers join and leave, and other processes write to the plan, without telling us:
        # look again while anybody waits.
        last_refresh = self.loop.time()
        while not self._closed:
            await asyncio.sleep(_HEARTBEAT)
            try:
                self._hold()
                if not self.waiters:
                    continue
                if self.loop.time() - last_refresh >= self.refresh_interval:
                    last_refresh = self.loop.time()
                    self.journaling.refresh()
                self.kick()
            except Exception:  # a dead heartbeat would leave waiters hanging
                logger.exception("the driver's heartbeat failed")
                self.waiters.fail_all(_scheduler_error("the hippo_dask driver's heartbeat failed"))

    def _landed(self, key: str, payload: Payload) -> None:
        if not self._closed:
            self.reports.done(key, payload)

    def _start_pass(self) -> None:
        self._kicked = False
        if self._closed:
            return
        if self._pass is not None and not self._pass.done():
            self._kicked = True  # once this pass ends, another
            self._pass.add_done_callback(lambda _: self.loop.call_soon(self._start_pass))
            return
        self._pass = self.loop.create_task(self._schedule_pass())

    async def _schedule_pass(self) -> None:
        try:
            await self._schedule()
        except asyncio.CancelledError:
            raise
        except HippoError as exc:  # a configuration problem: every waiter gets it as it is
            self.waiters.fail_all(exc)
        except Exception:
            logger.exception("scheduling failed")
            self.waiters.fail_all(_scheduler_error("the hippo_dask scheduler failed"))
        self._hold()

    def _hold(self) -> None:
        if not self._closed:
            self.lease.hold(self.flights.checkpoint_names(), journaled=self.journaling.journaled())

    # -- one scheduling pass --------------------------------------------------------------------

    async def _schedule(self) -> None:
        self.journaling.flush()
        if self._new_requests and self.journaling.journaled():
            # Read the journal after journaling new requests and before planning them: a gc
            # that journaled forgetting a checkpoint before they reached the journal is seen
            # here, so no stage loads a file it deletes (hippo_dask.storage._gc). Until that
            # read succeeds, nothing is planned (the next beat tries again).
            if not self.journaling.refresh():
                return
            self._new_requests = False
        workers = await self._workers()
        if self.submission.store is None:
            self.submission.store = await self.dask.install(self.checkpoints)
        if self._closed:
            return
        # From here on, nothing awaits: the pass sees one state of the flights and the plan.
        self.reports.abandon_lost_workers(set(workers.alive))
        now = time.monotonic()
        self.flights.settle(now)
        if self._withdrawal is None or self._withdrawal.done():
            withdraw = withdrawals(self.flights, workers, now, self.withdraw_after)
            if withdraw is not None:
                self._withdrawal = self.loop.create_task(self._withdraw(withdraw))
                return  # placed once the workers answer
        wanted = self.waiters.wanted()
        points, covered = cover(wanted, self.flights)
        for point in points:
            self.submission.add_point(point)
        in_flight: dict[Hashable, tuple[Node, int, int]] = {
            f.key: (f.node, f.start, f.stop) for f in self.flights
        }
        tree = self.plan.stage_tree(running=in_flight, exclude=covered, requests=wanted)
        logger.debug(
            "schedule: workers %s, in flight %s, queued %s, %d stages pending, %d waiting",
            list(workers.alive),
            self.flights.keys(),
            {w: len(self.flights.queued_keys(w)) for w in self.flights.workers()},
            len(tree),
            self.waiters.count(),
        )
        waiting = 0  # chains ready to start that got no idle worker
        if len(tree):
            actions, waiting = place(tree, self.flights, workers)
            for action in actions:
                if isinstance(action, Submit):
                    self.submission.submit(action, tree)
                else:
                    self.submission.add_point(action)
        self._publish_demand(sum(1 for w in workers.alive if self.flights.busy(w)) + waiting)

    async def _workers(self) -> Workers:
        gpu, closing, everyone = await self.dask.workers()
        dead = self.reports.dead
        alive = [a for a in gpu if a not in dead]
        if everyone and not alive and not everyone <= dead:
            raise HippoError(
                "no Dask worker advertises the GPU resource that stages ask for; start workers "
                "with `--resources GPU=1` (one per GPU, or one per core on a CPU machine), or "
                "let hippo_dask start its own cluster (client=None)"
            )
        new = [w for w in alive if w not in self._deadlines]
        if new:
            self._deadlines.update(await self.dask.deadlines(new))
        return Workers(
            alive=alive,
            deadlines=dict(self._deadlines),
            closing=frozenset(closing & set(alive)),
            clock=time.time(),
        )

    async def _withdraw(self, withdraw: Withdraw) -> None:
        answers = await self.dask.withdraw(withdraw.asks)
        if self._closed:
            return
        try:
            self.reports.took_back(withdraw.asks, answers, time.monotonic())
        except Exception as exc:
            logger.exception("taking back queued stages failed; stopping the study")
            self.waiters.fail_all(exc)
            return
        self.kick()

    def _publish_demand(self, workers: int) -> None:
        """Tell adaptive clusters how many workers this driver could keep busy now."""
        now = time.time()
        if (
            self._demand is not None
            and self._demand[0] == workers
            and now - self._demand[1] < _DEMAND_REFRESH
        ):
            return
        self._demand = (workers, now)
        self.dask.publish_demand(self.lease.id, workers, now)


def _scheduler_error(message: str) -> TrialFailedError:
    return TrialFailedError(
        f"{message}; see the log",
        exc_type="SchedulerError",
        stage="",
        worker_traceback=tb_module.format_exc(),
    )
