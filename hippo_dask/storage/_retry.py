"""Retrying storage calls while an endpoint is down, up to a time limit; failing at once when
retrying cannot help.

Object stores have outages; a study should ride them out. A failure is *transient* when waiting
may cure it: a refused or dropped connection, a timeout, a 5xx answer, throttling (``SlowDown``,
503). Those are retried with exponential backoff for the storage timeout
(``hippo.storage-timeout``); past it, a :class:`~hippo_dask.errors.StorageError` names what was
being done. A failure is *permanent* when only the user can fix it: access denied (a wrong
secret, an expired token, a bucket policy), no such bucket, no such file where one must be, a
read-only or full disk, a request the store rejects as invalid. Those raise at once, as a
``StorageError`` saying so and what to check, with ``transient=False``; a missing or corrupt
checkpoint raises as it is (the engine re-derives that state).

:func:`transient` decides by looking through the exception and what it wraps (its
``__cause__``/``__context__``: stores wrap fsspec's and botocore's errors in their own):
an explicit ``transient`` attribute first (a ``StorageError`` that knows), then the builtin
types fsspec translates S3 answers to (``PermissionError``, ``FileNotFoundError``, ...), then
``errno``, then botocore's own exception and error-code names.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from typing import Final, TypeVar

from hippo_dask._redact import mask_url
from hippo_dask.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    HippoError,
    StorageError,
)

__all__ = [
    "permanent_error",
    "transient",
    "transient_failures",
    "with_retries",
    "with_retries_async",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FIRST_DELAY = 0.1
_MAX_DELAY = 5.0
_failures = 0


def transient_failures() -> int:
    """How many transient storage failures this process has retried (for monitoring, tests)."""
    return _failures


#: errno values that no amount of waiting cures.
_PERMANENT_ERRNO: Final = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EINVAL,
        errno.ENAMETOOLONG,
        errno.EMSGSIZE,
        errno.ENOSYS,
        errno.EREMCHG,
        errno.ENOTEMPTY,
    }
)
#: S3 error codes (and HTTP statuses) that mean "try again later".
_TRANSIENT_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        "500",
        "502",
        "503",
        "504",
        "429",
    }
)
#: botocore/aiohttp exception class names (anywhere in the class's bases) of a lost connection.
_CONNECTION_NAMES: Final = frozenset(
    {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "HTTPClientError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
    }
)
_DEPTH: Final = 8


def _verdict(exc: BaseException) -> bool | None:
    """``True`` (transient), ``False`` (permanent) or ``None`` (this one does not tell)."""
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, (CheckpointNotFoundError, CorruptCheckpointError)):
        return False
    if isinstance(
        exc,
        (
            PermissionError,
            FileNotFoundError,
            NotADirectoryError,
            IsADirectoryError,
            FileExistsError,
        ),
    ):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code", ""))
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return code in _TRANSIENT_CODES or (
            isinstance(status, int) and (status >= 500 or status == 429)
        )
    if any(cls.__name__ in _CONNECTION_NAMES for cls in type(exc).__mro__):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, HippoError) and exc.errno is not None:
        return exc.errno not in _PERMANENT_ERRNO
    return None


def transient(exc: BaseException) -> bool:
    """Whether a storage failure may pass (an outage, worth retrying), rather than be final
    (access denied, no such bucket or file, a missing or corrupt checkpoint).

    Looks through the errors ``exc`` wraps; an ``OSError`` that says nothing more specific
    (fsspec's generic ``EIO``, a wrapper without a cause) counts as transient, anything else
    (a ``TypeError`` from the caller's own code) as final.
    """
    seen: BaseException | None = exc
    for _ in range(_DEPTH):
        if seen is None:
            break
        verdict = _verdict(seen)
        if verdict is not None:
            return verdict
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, OSError)


def permanent_error(what: str, exc: BaseException) -> StorageError:
    """The error for a permanent storage failure: what failed, why, and what to check."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < _DEPTH:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(
        isinstance(e, PermissionError) or getattr(e, "errno", None) in (errno.EACCES, errno.EPERM)
        for e in chain
    ):
        why = (
            "access denied: check the credentials (Study(storage_options=...) or the "
            "environment of the processes that write: driver and workers) and that they may "
            "read and write there"
        )
    elif any(isinstance(e, (FileNotFoundError, NotADirectoryError)) for e in chain):
        why = (
            "no such bucket, folder or file: check the storage URL (bucket name and path) "
            "and that the bucket exists; hippo_dask never creates buckets"
        )
    elif any(getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) for e in chain):
        why = "the disk or quota is full: free space, or use other storage"
    elif any(getattr(e, "errno", None) == errno.EROFS for e in chain):
        why = "the file system is read-only: use storage this process may write"
    else:
        why = "the store rejected the request: check the storage URL and storage_options"
    text = mask_url(f"{what}: {type(exc).__name__}: {exc}")
    return StorageError(
        f"{text}; {why}. This is not an outage, so it was not retried.", transient=False
    )


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
            if isinstance(exc, OSError) and not isinstance(exc, CheckpointNotFoundError):
                raise permanent_error(self.what, exc) from None
            raise exc
        global _failures
        _failures += 1
        self.attempt += 1
        if time.monotonic() + self.delay > self.deadline:
            raise StorageError(
                mask_url(
                    f"{self.what}: storage unreachable for more than {self.timeout:g} s "
                    f"({self.attempt} attempts); last error: {exc}"
                )
            ) from None
        if self.attempt == 1:
            logger.warning(
                "%s failed (%s); retrying for up to %g s",
                mask_url(self.what),
                mask_url(str(exc)),
                self.timeout,
            )
        wait, self.delay = self.delay, min(self.delay * 2, _MAX_DELAY)
        return wait

    def succeeded(self) -> None:
        if self.attempt:
            logger.warning("%s succeeded after %d retries", mask_url(self.what), self.attempt)


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
