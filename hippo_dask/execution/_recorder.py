"""What the driver tells the metrics store, written in batches off the driver's event loop.

A zarr commit takes milliseconds (tens on S3). Done on the driver's loop for every report, it
would delay every other report and submission, so the driver only queues here: metric rows, and
the life of every stage it submits (a ``"submitted"`` record when it hands a stage to its
worker, one ending record when the stage is done, failed, retried, lost or cancelled; see
:class:`~hippo_dask.storage.StageRecord`). A background task writes what is queued, after a
short delay that gathers a batch, in a worker thread. Readers in other processes (the
dashboard) see in those records exactly which stages run, wait or failed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from hippo_dask._constants import SUBMITTED
from hippo_dask.storage import MetricRow, StageRecord, with_retries

if TYPE_CHECKING:
    from hippo_dask.plan import Node
    from hippo_dask.storage import MetricsStore

__all__ = ["Recorder", "StageInFlight"]

logger = logging.getLogger(__name__)

#: Seconds the background writer waits to batch rows before writing them.
WRITE_DELAY = 0.5


class StageInFlight(Protocol):
    """What the recorder needs to know of a submitted stage (the driver's running entry)."""

    node: Node
    start: int
    stop: int
    worker: str


class Recorder:
    """Queues a driver's metric rows and stage records; writes them in batches, off the loop.

    Parameters
    ----------
    metrics
        The study's metrics store.
    loop
        The driver's event loop (where every method but the writing is called).
    timeout
        Seconds storage may stay unreachable before :meth:`flush` gives up.
    on_error
        Called (on the loop) with the error when writing failed past ``timeout``.
    delay
        Seconds to wait for more rows before writing a batch.
    """

    def __init__(
        self,
        metrics: MetricsStore,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float,
        on_error: Callable[[BaseException], None],
        delay: float = WRITE_DELAY,
    ) -> None:
        self.metrics = metrics
        self.loop = loop
        self.timeout = timeout
        self.on_error = on_error
        self.delay = delay
        self._rows: list[MetricRow] = []
        self._stages: list[StageRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._last_submitted = -math.inf
        self._writing = False

    @property
    def queued(self) -> bool:
        """Whether rows or records wait to be written."""
        return bool(self._rows or self._stages)

    # -- queueing (on the loop, no I/O)

    def metric_rows(self, rows: Iterable[MetricRow]) -> None:
        """Queue metric rows."""
        self._rows.extend(rows)
        self._soon()

    def submitted(self, stage: StageInFlight) -> float:
        """Queue the ``"submitted"`` record of ``stage``; returns the time it carries.

        Times strictly increase from one submission to the next, so readers order the stages
        queued on a worker as they were submitted even when a whole chain goes in one instant.
        """
        when = max(time.time(), self._last_submitted + 1e-6)
        self._last_submitted = when
        self._stage(stage, SUBMITTED, when, math.nan)
        return when

    def ended(
        self,
        stage: StageInFlight,
        status: str,
        *,
        started: float = math.nan,
        finished: float | None = None,
        error: str = "",
    ) -> None:
        """Queue the record that ends ``stage``.

        ``started`` and ``finished`` are the worker's times when it reported them; without a
        report, ``started`` stays unknown (NaN) and ``finished`` is now.
        """
        self._stage(stage, status, started, time.time() if finished is None else finished, error)

    def _stage(
        self, stage: StageInFlight, status: str, started: float, finished: float, error: str = ""
    ) -> None:
        self._stages.append(
            StageRecord(
                node=stage.node.owner.id,
                start_step=stage.start,
                step=stage.stop,
                started=started,
                finished=finished,
                worker=stage.worker,
                status=status,
                error=error,
            )
        )
        self._soon()

    def _soon(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._write(delay=self.delay))

    # -- writing

    async def flush(self) -> None:
        """Write what is queued now, without waiting for a batch (when the driver closes)."""
        task = self._task
        if task is not None and not task.done():
            if self._writing:  # a batch is being written: it goes on until the queue is empty
                await asyncio.shield(task)
            else:
                task.cancel()
        if self.queued:
            await self._write()

    async def _write(self, delay: float = 0.0) -> None:
        """Write what is queued (after ``delay``, to batch), again until nothing is left."""
        metrics = self.metrics
        if delay:
            await asyncio.sleep(delay)
        self._writing = True
        try:
            await self._write_all(metrics)
        finally:
            self._writing = False

    async def _write_all(self, metrics: MetricsStore) -> None:
        while self.queued:
            rows, self._rows = self._rows, []
            stages, self._stages = self._stages, []

            def write(rows: list[MetricRow] = rows, stages: list[StageRecord] = stages) -> None:
                if rows:
                    with_retries(
                        lambda: metrics.append(rows),
                        what="appending metrics to the zarr store",
                        timeout=self.timeout,
                    )
                if stages:
                    with_retries(
                        lambda: metrics.append_stages(stages),
                        what="appending stage records",
                        timeout=self.timeout,
                    )

            try:
                await asyncio.to_thread(write)
            except Exception as exc:  # noqa: BLE001 - storage gone past the limit: stop
                logger.error("writing metrics failed: %s", exc)
                self.on_error(exc)
                return
