"""The driver's one door to Dask: every call it makes on the client, none of them blocking the
driver's event loop.

A study's client is synchronous: its own event loop runs in a thread of its own, and its
blocking methods wait for that loop. The driver runs on another loop (the one ``study.tune``
runs on), so it never calls them: it runs the client's coroutines on the client's loop and
awaits them from its own (:meth:`DaskCalls.call`), or sends and forgets (:meth:`DaskCalls.send`).
``Client.submit`` only queues a message and returns, so it is called as it is. Registering
worker plugins has no coroutine in the client's public API; it runs in a thread, on purpose,
once per client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hippo_dask._constants import DEMAND_KEY, GPU
from hippo_dask.execution._credentials import ship
from hippo_dask.execution._spec import Point
from hippo_dask.execution._worker import (
    TABLES,
    StageTables,
    add_points_async,
    withdraw_async,
    worker_deadline,
)

if TYPE_CHECKING:
    import distributed

    from hippo_dask.storage import CheckpointStore

__all__ = ["DaskCalls"]

logger = logging.getLogger("hippo_dask.execution._driver")


class DaskCalls:
    """The Dask operations the driver needs, on ``client`` (a synchronous ``Client``)."""

    def __init__(self, client: distributed.Client) -> None:
        self.client = client
        self._tables_installed = False

    # -- running the client's coroutines ---------------------------------------------------------

    def _client_loop(self) -> asyncio.AbstractEventLoop | None:
        return getattr(getattr(self.client, "loop", None), "asyncio_loop", None)

    async def call(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Await the coroutine ``make()`` creates, run on the client's loop."""
        target = self._client_loop()
        if target is None or target is asyncio.get_running_loop():
            return await make()

        async def run() -> Any:
            return await make()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), target))

    def send(self, make: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run ``make()`` on the client's loop without waiting for it; failures are logged."""

        def report(future: Any) -> None:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None:
                logger.debug("could not %s: %s", what, exc)

        async def run() -> Any:
            return await make()

        target = self._client_loop()
        try:
            if target is None or target is _running_loop():
                asyncio.ensure_future(run()).add_done_callback(report)
            else:
                asyncio.run_coroutine_threadsafe(run(), target).add_done_callback(report)
        except RuntimeError as exc:  # the client's loop is closed
            logger.debug("could not %s: %s", what, exc)

    # -- the operations --------------------------------------------------------------------------

    async def workers(self) -> tuple[list[str], set[str], set[str]]:
        """GPU workers (sorted addresses), those of them closing gracefully, and every worker
        the scheduler has.

        Asks the scheduler: the client's cached view (``scheduler_info``) is refreshed in the
        background and can read as empty for a moment.
        """
        client = self.client
        info = await self.call(lambda: client.scheduler.identity(n_workers=-1))  # type: ignore[union-attr]
        workers = info.get("workers", {})
        gpu = sorted(a for a, w in workers.items() if w.get("resources", {}).get(GPU, 0) >= 1)
        closing = {a for a in gpu if workers[a].get("status") == "closing_gracefully"}
        return gpu, closing, set(workers)

    async def deadlines(self, workers: list[str]) -> dict[str, tuple[float, float] | None]:
        """When each of ``workers`` retires (``--lifetime``): ``(unix time, lifetime)`` or
        ``None``; workers that did not answer are left out (ask again later)."""
        client = self.client
        try:
            found = await self.call(
                lambda: client.run(
                    worker_deadline, workers=workers, on_error="return", asynchronous=True
                )
            )
        except Exception as exc:  # noqa: BLE001 - a worker that left: ask the others next time
            logger.debug("could not ask workers %s for their lifetime: %s", workers, exc)
            return {}
        out: dict[str, tuple[float, float] | None] = {}
        for worker, value in found.items():
            if isinstance(value, BaseException):
                continue
            if value is None:
                out[worker] = None
                continue
            deadline, lifetime, pid = value
            if pid == os.getpid():  # a worker thread of this process: its start is unknown
                deadline = time.time() + lifetime
            out[worker] = (deadline, lifetime)
            logger.info(
                "worker %s retires in %.0f s (lifetime %.0f s)",
                worker,
                deadline - time.time(),
                lifetime,
            )
        return out

    async def install(self, store: CheckpointStore) -> CheckpointStore:
        """Install the stage tables and ``store`` on the workers (once per client); returns the
        store as tasks carry it (:func:`~hippo_dask.execution._credentials.ship`)."""
        client = self.client
        if not self._tables_installed:
            await asyncio.to_thread(client.register_plugin, StageTables(), name=TABLES)
            self._tables_installed = True
        return await asyncio.to_thread(ship, client, store)

    def submit(
        self, function: Callable[..., Any], *args: Any, key: str, worker: str, priority: int
    ) -> Any:
        """A task pinned to ``worker``, asking for one GPU (queues a message; never waits)."""
        return self.client.submit(
            function,
            *args,
            key=key,
            workers=[worker],
            allow_other_workers=False,
            resources={GPU: 1},
            priority=priority,
        )

    def cancel(self, futures: Sequence[Any]) -> None:
        """Cancel ``futures`` (sent; not waited for)."""
        if futures:
            client = self.client
            self.send(lambda: client.cancel(list(futures), asynchronous=True), "cancel stages")  # type: ignore[no-untyped-call]

    async def cancel_now(self, futures: Sequence[Any]) -> None:
        """Cancel ``futures`` and wait until the scheduler was told."""
        if futures:
            client = self.client
            await self.call(lambda: client.cancel(list(futures), asynchronous=True))  # type: ignore[no-untyped-call]

    def add_points(self, worker: str, key: str, points: list[Point]) -> None:
        """Tell stage ``key`` on ``worker`` to also stop at ``points`` (sent; not waited for)."""
        client = self.client
        self.send(
            lambda: client.run(
                add_points_async, key, points, workers=[worker], wait=False, asynchronous=True
            ),
            f"add points to {key}",
        )

    async def withdraw(self, asks: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
        """Ask workers for queued stages back (one broadcast): worker -> ``True`` when it gave
        them back; workers that could not answer are left out."""
        client = self.client
        try:
            return dict(
                await self.call(
                    lambda: client.run(
                        withdraw_async,
                        {w: list(k) for w, k in asks.items()},
                        workers=list(asks),
                        on_error="return",
                        asynchronous=True,
                    )
                )
            )
        except Exception as exc:  # noqa: BLE001 - a worker left: its stages are planned again
            logger.debug("could not ask workers %s for queued stages back: %s", list(asks), exc)
            return {}

    def publish_demand(self, driver: str, workers: int, when: float) -> None:
        """Publish how many workers ``driver`` could keep busy (sent; not waited for)."""
        scheduler = self.client.scheduler
        self.send(
            lambda: scheduler.set_metadata(keys=[DEMAND_KEY, driver], value=[workers, when]),  # type: ignore[union-attr]
            "publish the stage demand",
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
