"""What the driver does with reports: record them in the plan, answer waiters, handle failures.

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
from typing import Any

from hippo_dask.errors import HippoWarning, InvalidMetricsError, StorageError, TrialFailedError
from hippo_dask.execution._running import Running
from hippo_dask.execution._state import DriverState
from hippo_dask.execution._spec import PointResult, StageReport
from hippo_dask.plan import Node
from hippo_dask.plan._trie import Trie
from hippo_dask.storage._records import CANCELLED, DONE, FAILED, LOST, RETRIED, MetricRow
from hippo_dask.trainer import check_metrics

__all__ = ["Reports"]

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


class Reports(DriverState):
    """The driver's report handling (a part of :class:`~hippo_dask.execution.Driver`)."""

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
                self._screen(value)
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

    def _screen(self, report: StageReport) -> None:
        """Check the metrics a worker reports, as input: the worker checks what ``evaluate()``
        returned, but a report is data from another process. Metrics that fail the check are
        dropped before anything is journaled or written, and the stage counts as failed in the
        trainer (:class:`~hippo_dask.InvalidMetricsError`, not retried); the rest of the
        report (valid metrics, checkpoints) is kept."""
        where = f"{self.trainer_cls.__name__}.evaluate() (as reported by worker {report.worker})"
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

    def _record(self, running: Running, report: StageReport) -> None:
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

    def _ended(self, running: Running, status: str, report: StageReport | None = None, *,
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

    def _trainer_raised(self, running: Running, kind: str, message: str, text: str) -> bool:
        """The trainer raised in this stage: plan it again up to ``retries`` times (returns
        ``True``), then fail its trials (``False``)."""
        self._dead_ends.setdefault((running.node, running.stop), 0)
        self._dead_ends[(running.node, running.stop)] += 1
        if kind not in _NOT_RETRIED and self._dead_ends[(running.node, running.stop)] <= self.retries:
            logger.warning("stage %s raised %s: %s; running it again", running.key, kind, message)
            base = running.key.split("~", 1)[0]
            self._attempts[base] = self._attempts.get(base, 0) + 1
            return True
        self._stage_failed(running, kind, message, text)
        return False

    def _stage_failed(self, running: Running, kind: str, message: str, text: str) -> None:
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
    def _depends(node: Node, step: int, running: Running) -> bool:
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

    def _salvage(self, r: Running) -> None:
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

    def _count_loss(self, r: Running) -> None:
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


def _is_cancellation(exc: BaseException) -> bool:
    """Whether a future ended because Dask cancelled it, rather than the trainer raising."""
    import concurrent.futures

    return isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)) or (
        type(exc).__name__ == "FutureCancelledError"
    )