"""Retrying storage writes while an endpoint is down, up to a time limit.

Object stores have outages; a study should ride them out. Transient failures (the store
raised :class:`~hippo_dask.errors.StorageError`, or the OS a connection error) are retried with
exponential backoff; a checkpoint that is missing or corrupt is not transient and is raised at
once. Past the limit, the last error is raised as a ``StorageError`` naming what was being done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from hippo_dask.errors import CheckpointNotFoundError, CorruptCheckpointError, StorageError

__all__ = ["transient", "transient_failures", "with_retries", "with_retries_async"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FIRST_DELAY = 0.1
_MAX_DELAY = 5.0
_failures = 0


def transient_failures() -> int:
    """How many transient storage failures this process has retried (for monitoring, tests)."""
    return _failures


def transient(exc: BaseException) -> bool:
    """Whether a storage failure may pass (an outage), rather than be final (missing, corrupt)."""
    if isinstance(exc, (CheckpointNotFoundError, CorruptCheckpointError, PermissionError)):
        return False
    return isinstance(exc, (StorageError, ConnectionError, TimeoutError, OSError))


class _Backoff:
    """The retry policy both variants share: count, decide, log, and say how long to wait."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what, self.timeout = what, timeout
        self.deadline = time.monotonic() + timeout
        self.delay = _FIRST_DELAY
        self.attempt = 0

    def failed(self, exc: BaseException) -> float:
        """Seconds to wait before the next try; raises when ``exc`` is final or time is up."""
        if not transient(exc):
            raise exc
        global _failures
        _failures += 1
        self.attempt += 1
        if time.monotonic() + self.delay > self.deadline:
            raise StorageError(
                f"{self.what}: storage unreachable for more than {self.timeout:g} s "
                f"({self.attempt} attempts); last error: {exc}"
            ) from None
        if self.attempt == 1:
            logger.warning("%s failed (%s); retrying for up to %g s", self.what, exc, self.timeout)
        wait, self.delay = self.delay, min(self.delay * 2, _MAX_DELAY)
        return wait

    def succeeded(self) -> None:
        if self.attempt:
            logger.warning("%s succeeded after %d retries", self.what, self.attempt)


def with_retries(action: Callable[[], T], *, what: str, timeout: float) -> T:
    """Run ``action``; on a transient storage failure, retry with backoff for ``timeout`` s.

    It blocks its thread while it waits: call it on workers and in threads, and
    :func:`with_retries_async` on an event loop, which must go on serving everything else.
    """
    backoff = _Backoff(what, timeout)
    while True:
        try:
            result = action()
        except BaseException as exc:
            time.sleep(backoff.failed(exc))
            continue
        backoff.succeeded()
        return result


async def with_retries_async(action: Callable[[], T], *, what: str, timeout: float) -> T:
    """:func:`with_retries` for an event loop: it waits with ``asyncio.sleep``, so the loop's
    other work (reports, submissions, the callers' coroutines) goes on during an outage."""
    backoff = _Backoff(what, timeout)
    while True:
        try:
            result = action()
        except BaseException as exc:
            await asyncio.sleep(backoff.failed(exc))
            continue
        backoff.succeeded()
        return result
