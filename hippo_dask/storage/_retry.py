"""Retrying storage writes while an endpoint is down, up to a time limit.

Object stores have outages; a study should ride them out. Transient failures (the store
raised :class:`~hippo_dask.errors.StorageError`, or the OS a connection error) are retried with
exponential backoff; a checkpoint that is missing or corrupt is not transient and is raised at
once. Past the limit, the last error is raised as a ``StorageError`` naming what was being done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from hippo_dask.errors import CheckpointNotFoundError, CorruptCheckpointError, StorageError

__all__ = ["transient_failures", "with_retries"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FIRST_DELAY = 0.1
_MAX_DELAY = 5.0
_failures = 0


def transient_failures() -> int:
    """How many transient storage failures this process has retried (for monitoring, tests)."""
    return _failures


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (CheckpointNotFoundError, CorruptCheckpointError, PermissionError)):
        return False
    return isinstance(exc, (StorageError, ConnectionError, TimeoutError, OSError))


def with_retries(action: Callable[[], T], *, what: str, timeout: float) -> T:
    """Run ``action``; on a transient storage failure, retry with backoff for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = _FIRST_DELAY
    attempt = 0
    while True:
        try:
            result = action()
        except BaseException as exc:
            if not _transient(exc):
                raise
            global _failures
            _failures += 1
            attempt += 1
            if time.monotonic() + delay > deadline:
                raise StorageError(
                    f"{what}: storage unreachable for more than {timeout:g} s "
                    f"({attempt} attempts); last error: {exc}"
                ) from None
            if attempt == 1:
                logger.warning("%s failed (%s); retrying for up to %g s", what, exc, timeout)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)
            continue
        if attempt:
            logger.warning("%s succeeded after %d retries", what, attempt)
        return result
