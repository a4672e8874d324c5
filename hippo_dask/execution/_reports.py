"""What the driver does with reports: plan records, flight updates, answers, failures.

Dask futures finish in Dask's threads; their reports are handed to the driver's loop with
``call_soon_threadsafe``, and all plan updates happen on that loop. A stage whose worker left is
planned again from the latest checkpoints (what it saved before is found by name); one that
lost several workers, or whose trainer raised more often than ``retries`` allows, fails the
trials that need it, and only those.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hippo_dask._constants import CANCELLED, DONE, FAILED, LOST, RETRIED
from hippo_dask.errors import (
    HippoWarning,
    InvalidMetricsError,
    StorageError,
    TrialFailedError,
)
from hippo_dask.execution._dask import DaskCalls
from hippo_dask.execution._flights import Flight, Flights
from hippo_dask.execution._journaling import Journaling
from hippo_dask.execution._spec import PointResult, StageReport
from hippo_dask.execution._submission import Payload, Submission
from hippo_dask.execution._waiters import Waiters
from hippo_dask.plan import Node, SearchPlan
from hippo_dask.storage import MetricRow
from hippo_dask.trainer import check_metrics

if TYPE_CHECKING:
    from hippo_dask.execution._recorder import Recorder
    from hippo_dask.storage import CheckpointStore

__all__ = ["Reports", "RunStats"]

logger = logging.getLogger("hippo_dask.execution._driver")

#: Finished stage futures kept referenced, so that the same stage planned again by another
#: driver on this client (another study of the same plan) finds the result instead of
#: recomputing it: Dask forgets a key as soon as nobody holds its future.
_KEEP_FINISHED = 4096
#: A stage whose worker left this many times fails its trials instead of being planned again:
#: its worker is probably crashing on it (out of memory, a segfault, an unloadable trainer).
_MAX_LOSSES = 3
#: Errors a stage is not run again for: storage that refused or stayed down (the study stops),
#: and metrics ``evaluate()`` may not return (running it again returns them again).
_NOT_RETRIED = ("StorageError", "InvalidMetricsError")


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


class Reports:
    """Turns what workers report into plan records and flight updates (see the module doc)."""

    def __init__(
        self,
        *,
        plan: SearchPlan,
        flights: Flights,
        waiters: Waiters,
        journaling: Journaling,
        submission: Submission,
        dask: DaskCalls,
        store: CheckpointStore,
        recorder: Recorder | None,
        trainer_name: str,
        retries: int,
        kick: Callable[[], None],
    ) -> None:
        self.plan = plan
        self.flights = flights
        self.waiters = waiters
        self.journaling = journaling
        self.submission = submission
        self.dask = dask
        self.store = store
        self.recorder = recorder
        self.trainer_name = trainer_name
        self.retries = retries
        self.kick = kick
        self.stats = RunStats()
        self.on_report: list[Callable[[StageReport], None]] = []
        #: Workers that left: the scheduler's list may lag behind.
        self.dead: set[str] = set()
        self._finished: OrderedDict[str, tuple[Any, StageReport]] = OrderedDict()
        self._losses: dict[tuple[Node, int], set[str]] = {}
        self._missing: dict[str, int] = {}  # looks in a row that did not see a worker
        self._dead_ends: dict[tuple[Node, int], int] = {}  # trainer errors per stage end

    # -- a stage's future finished ----------------------------------------------------------------

    def done(self, key: str, payload: Payload) -> None:
        """Stage ``key``'s future finished with ``payload`` (on the driver's loop)."""
        flight = self.flights.landed(key)
        if flight is None:
            return
        status, value, text = payload
        try:
            if status == "ok" and value.skipped:
                # The stage it continues from failed (that failure is handled), or a driver
                # withdrew it: planned again, it runs under a new key.
                self.submission.renew(key)
                self.ended(flight, CANCELLED, finished=value.finished)
            elif status == "ok":
                self._screen(value)
                self._record(flight, value)  # what it did before any error still counts
                if value.error is not None:
                    again = self._trainer_raised(flight, *value.error)
                    self.ended(flight, RETRIED if again else FAILED, value, error=value.error[0])
                else:
                    self.ended(flight, DONE, value)
                    self._finished[key] = (flight.future, value)
                    while len(self._finished) > _KEEP_FINISHED:
                        self._finished.popitem(last=False)
            elif _is_cancellation(value):
                # Nobody here cancelled it (ours are no longer in flight): Dask gave up on it,
                # because its worker died. Plan it again, up to a limit.
                self.flights.clear_queue(flight.worker)
                self._count_loss(flight)
            else:
                self.ended(flight, FAILED, error=type(value).__name__)
                self._stage_failed(flight, type(value).__name__, str(value), text)
        except Exception as exc:
            logger.exception("recording stage %s failed; stopping the study", key)
            self.waiters.fail_all(exc)
            return
        self.kick()

    def _screen(self, report: StageReport) -> None:
        """Check the metrics a worker reports, as input: the worker checks what ``evaluate()``
        returned, but a report is data from another process. Metrics that fail the check are
        dropped before anything is journaled or written, and the stage counts as failed in the
        trainer (:class:`~hippo_dask.InvalidMetricsError`, not retried); the rest of the
        report (valid metrics, checkpoints) is kept."""
        where = f"{self.trainer_name}.evaluate() (as reported by worker {report.worker})"
        for i, point in enumerate(report.points):
            if point.metrics is None:
                continue
            try:
                metrics = check_metrics(point.metrics, where)
            except InvalidMetricsError as exc:
                report.points[i] = dataclasses.replace(point, metrics=None)
                if report.error is None:
                    report.error = (type(exc).__name__, str(exc), "")
            else:
                report.points[i] = dataclasses.replace(point, metrics=metrics)

    def _record(self, flight: Flight, report: StageReport) -> None:
        plan = self.plan
        for uri, why in report.bad_checkpoints:
            self._forget(uri, why)
        rows: list[tuple[Node, PointResult, dict[str, float]]] = []
        for point in report.points:
            node = plan.owner_of_state(flight.node, point.step)
            if point.checkpoint is not None:
                plan.record_checkpoint(node, point.step, point.checkpoint)
            if point.metrics is not None:
                plan.record_metrics(node, point.step, point.metrics)
                rows.append((node, point, point.metrics))
        if report.seconds_per_step is not None:
            plan.record_profile(flight.node, report.seconds_per_step)
        self.journaling.flush()
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
        if self.recorder is not None:
            self.recorder.metric_rows(
                MetricRow(
                    trial=node.owner.id,
                    step=p.step,
                    values=values,
                    wall_time=p.wall_time,
                    worker=report.worker,
                )
                for node, p, values in rows
            )
        for callback in self.on_report:
            callback(report)
        for node, point, _ in rows:
            self.journaling.resolve(node, point.step)

    def ended(
        self,
        flight: Flight,
        status: str,
        report: StageReport | None = None,
        *,
        finished: float | None = None,
        error: str = "",
    ) -> None:
        """Record how a submitted stage ended, with the worker's times if it reported."""
        if self.recorder is not None:
            if report is not None:
                self.recorder.ended(
                    flight, status, started=report.started, finished=report.finished, error=error
                )
            else:
                self.recorder.ended(flight, status, finished=finished, error=error)

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

    # -- failures ---------------------------------------------------------------------------------

    def _trainer_raised(self, flight: Flight, kind: str, message: str, text: str) -> bool:
        """The trainer raised in this stage: plan it again up to ``retries`` times (returns
        ``True``), then fail its trials (``False``)."""
        end = (flight.node, flight.stop)
        self._dead_ends[end] = self._dead_ends.get(end, 0) + 1
        if kind not in _NOT_RETRIED and self._dead_ends[end] <= self.retries:
            logger.warning("stage %s raised %s: %s; running it again", flight.key, kind, message)
            self.submission.renew(flight.key)
            return True
        self._stage_failed(flight, kind, message, text)
        return False

    def _stage_failed(self, flight: Flight, kind: str, message: str, text: str) -> None:
        if kind == "StorageError":
            # Storage stayed down past the limit: no trial can go on, stop the study.
            self.waiters.fail_all(StorageError(f"stage {flight.key} on {flight.worker}: {message}"))
            return
        error = TrialFailedError(
            f"stage {flight.key} failed on {flight.worker}: {kind}: {message}",
            exc_type=kind,
            stage=flight.key,
            worker_traceback=text,
        )
        logger.warning("%s", error)
        self.waiters.fail_needing(flight.node, flight.start, error)

    # -- workers that left ------------------------------------------------------------------------

    def abandon_lost_workers(self, alive: set[str]) -> None:
        """Stages on a worker that left (killed, pre-empted, restarted) are planned again.

        Their tasks are pinned to that worker, so Dask cannot run them elsewhere; cancelling
        them stops Dask from recomputing finished stages whose small results died with the
        worker. The next stage tree resumes from the latest checkpoints.
        """
        gone = {f.worker for f in self.flights if f.worker not in alive}
        for worker in list(self._missing):
            if worker not in gone:
                del self._missing[worker]
        for worker in gone:
            self._missing[worker] = self._missing.get(worker, 0) + 1
        # A worker counts as gone once two looks in a row miss it (or Dask cancelled its task).
        workers = sorted(
            {
                f.worker
                for f in self.flights
                if f.worker in self.dead or self._missing.get(f.worker, 0) >= 2
            }
        )
        if not workers:
            return
        self.dead |= set(workers)
        lost = self.flights.lose(workers)
        logger.warning(
            "worker(s) %s left with %d stage(s); planning them again", workers, len(lost)
        )
        self.dask.cancel([f.future for f in lost])
        for f in lost:
            self._count_loss(f)

    def _salvage(self, flight: Flight) -> None:
        """Record the checkpoints a lost stage wrote before its worker died (found by name)."""
        for step, point in sorted(flight.points.items()):
            if point.checkpoint is None or step in flight.node.checkpoints:
                continue
            uri = self.store.uri(point.checkpoint)
            try:
                if self.store.exists(uri):
                    self.plan.record_checkpoint(flight.node, step, uri)
                    logger.info(
                        "stage %s had saved step %d before its worker left", flight.key, step
                    )
            except OSError as exc:
                logger.warning("could not look for %s: %s", uri, exc)

    def _count_loss(self, flight: Flight) -> None:
        """This stage lost its worker; once it lost that many different ones, its trials fail."""
        self._salvage(flight)
        self.dead.add(flight.worker)
        self.submission.renew(flight.key)
        # Finished results that lived there are gone; release them, or Dask recomputes them.
        for key, (_, report) in list(self._finished.items()):
            if report.worker in self.dead:
                del self._finished[key]
        workers = self._losses.setdefault((flight.node, flight.stop), set())
        workers.add(flight.worker)
        count = len(workers)
        self.ended(
            flight,
            FAILED if count >= _MAX_LOSSES else LOST,
            error="WorkerLost" if count >= _MAX_LOSSES else "",
        )
        if count >= _MAX_LOSSES:
            self._stage_failed(
                flight,
                "WorkerLost",
                f"the worker running this stage left {count} times; it is probably crashing "
                "on it (out of memory? a trainer class the workers cannot import?)",
                "",
            )

    # -- withdrawals ------------------------------------------------------------------------------

    def took_back(
        self, asks: Mapping[str, tuple[str, ...]], answers: Mapping[str, Any], now: float
    ) -> None:
        """Forget what the workers gave back; mark what they refused as started (at ``now``).

        A worker that gave back a stage skips it, and every stage after it on that worker
        depends on it (they continue from it, or from one another), so they are all forgotten
        here, including those chained onto it while the driver was asking. Their futures are
        not cancelled: Dask would cancel, with them, the same stage another driver on this
        client waits for (a shared key) and the stages depending on them, which reads as a
        worker lost. Each ends on its worker with a skipped report, which nobody reads.
        """
        taken: list[Flight] = []
        for worker, keys in asks.items():
            if answers.get(worker) is True:
                taken += self.flights.take_back(worker, keys[0])
            else:
                self.flights.refused(keys[0], now)
        for f in taken:
            self.submission.renew(f.key)
            self.ended(f, CANCELLED)
        if taken:
            logger.info("took back %d queued stage(s) for idle workers", len(taken))

    def forget_finished(self) -> None:
        """Release the finished futures kept for other drivers (the driver closes)."""
        self._finished.clear()


def _is_cancellation(exc: BaseException) -> bool:
    """Whether a future ended because Dask cancelled it, rather than the trainer raising."""
    import concurrent.futures

    return isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)) or (
        type(exc).__name__ == "FutureCancelledError"
    )
