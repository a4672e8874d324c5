"""The driver's reads and writes of the plan journal, through storage outages.

Writes: what the plan buffered is journaled after every report and scheduling pass. During a
storage outage the study goes on: the records stay buffered, a background task retries, and
results reach their waiters only once journaled (:meth:`Journaling.resolve`), so a tuner never
acts on a result that a crash could take back.

Reads: other processes write to the same plan; their records are taken in at every heartbeat
due (``hippo.refresh-interval``), and after this driver journaled new requests, before planning
them. A read that fails for a passing reason is tried again, for up to the storage timeout;
past it, or on a permanent storage error, the study stops with a clear error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from hippo_dask._redact import mask_url
from hippo_dask.errors import HippoError, JournalError
from hippo_dask.execution._waiters import Waiters
from hippo_dask.plan import Node, SearchPlan
from hippo_dask.storage import permanent_error, transient, with_retries_async

__all__ = ["Journaling"]

logger = logging.getLogger("hippo_dask.execution._driver")


class Journaling:
    """Journal writes and reads of one driver's plan (see the module doc)."""

    def __init__(
        self,
        plan: SearchPlan,
        waiters: Waiters,
        loop: asyncio.AbstractEventLoop,
        *,
        storage_timeout: float,
        kick: Callable[[], None],
    ) -> None:
        self.plan = plan
        self.waiters = waiters
        self.loop = loop
        self.storage_timeout = storage_timeout
        self.kick = kick
        self._flusher: asyncio.Task[None] | None = None  # retrying during an outage
        self._unreadable_since: float | None = None  # reads failing since (monotonic)
        self._held: list[tuple[Node, int]] = []  # results waiting for the journal

    def journaled(self) -> bool:
        """Whether everything this driver recorded is in the journal (no write is retrying)."""
        return self._flusher is None or self._flusher.done()

    def flush(self) -> None:
        """Journal what the plan buffered; during an outage, retry in the background."""
        if not self.journaled():
            return  # the retrying task writes these records too, in order
        try:
            self.plan.flush()
        except Exception as exc:
            if isinstance(exc, OSError) and not transient(exc):  # refused: stop, say what to check
                raise permanent_error(f"writing the plan journal of {self._url()}", exc) from None
            if not transient(exc):
                raise
            self._flusher = self.loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await with_retries_async(
                self.plan.flush,
                what=f"writing the plan journal of {self._url()}",
                timeout=self.storage_timeout,
            )
        except Exception as exc:  # noqa: BLE001 - down past the limit: the study stops cleanly
            logger.error("%s", exc)
            self.waiters.fail_all(exc)
            return
        held, self._held = self._held, []
        for node, step in held:
            self.waiters.resolve(node, step)
        self.kick()

    def resolve(self, node: Node, step: int) -> None:
        """Answer the waiters of ``(node, step)`` now, or once the journal holds their result."""
        if self.journaled():
            self.waiters.resolve(node, step)
        else:
            self._held.append((node, step))

    def refresh(self) -> bool:
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
                self._stop(permanent_error(f"reading the plan journal of {self._url()}", exc))
                return False
            now = time.monotonic()
            since = self._unreadable_since = self._unreadable_since or now
            if now - since < self.storage_timeout:
                logger.warning(
                    "could not read other writers' journal records (trying again): %s",
                    mask_url(str(exc)),
                )
                return False
            self._stop(
                JournalError(
                    f"the plan journal of {self._url()} could not be read for "
                    f"{self.storage_timeout:.0f} s (hippo.storage-timeout): {mask_url(str(exc))}; "
                    "the study stopped, its journal is intact: run it again once the storage is back"
                )
            )
            return False
        except Exception as exc:  # a failed look must stop the study, loudly
            logger.exception("could not take in the plan journal")
            self._stop(
                HippoError(
                    f"the driver could not take in the plan journal of {self._url()}: "
                    f"{type(exc).__name__}: {mask_url(str(exc))}; the study stopped (the log has the "
                    "traceback). If this is a HippoWarning, a warnings filter turned it into an error"
                )
            )
            return False
        self._unreadable_since = None
        if changed:
            self.waiters.resolve_known()
        return True

    def close(self) -> None:
        """Stop retrying in the background and write what is buffered, once."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        try:
            self.plan.flush()
        except OSError as exc:  # storage down: keep the records buffered for a later flush
            logger.error(
                "could not write the plan journal at close (%s); %d records stay "
                "buffered in this process",
                exc,
                self.plan.buffered,
            )

    def _stop(self, error: HippoError) -> None:
        logger.error("%s", error)
        self.waiters.fail_all(error)

    def _url(self) -> str:
        return mask_url(str(self.plan.url))
