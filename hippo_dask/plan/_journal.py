"""The search plan's append-only journal on any fsspec URL.

Object stores cannot append, so the journal is a folder of immutable segments: each flush writes
one new object ``<root>/plan/<session>-<n>.jsonl`` holding the records since the last flush. A
segment appears whole or not at all (local disk: written to a hidden temporary name, fsynced,
then renamed; object stores: one PUT). Every line carries a CRC32 of its JSON, so a torn or
corrupted record, should one ever be found, is skipped with a warning instead of half-applied.

Several processes may write to one plan at once: each writes its own session's segments, and
:meth:`Journal.read_new` picks up segments it has not seen yet. Session names start with a
nanosecond clock, so name order follows the order sessions began; but a session that began
earlier can flush later, so readers find segments in different orders. The plan applies records
so that the order does not matter (:mod:`hippo_dask.plan._merge`). Snapshots of the replayed plan
live in ``<root>/plan/snapshots/`` (:mod:`hippo_dask.plan._snapshot`).

Creating nothing by accident: a journal opened with ``create=False`` touches nothing, and one
that creates its folder never creates a bucket (``s3fs``' ``makedirs`` would): on an object store
the bucket must exist, and a missing one is a :class:`~hippo_dask.errors.StorageError` naming it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from hippo_dask._fs import is_object_store, list_folder
from hippo_dask._redact import mask_url
from hippo_dask.errors import HippoWarning, JournalError, StorageError

__all__ = ["Journal", "decode_line", "encode_line", "warn_record"]

logger = logging.getLogger(__name__)

Record = dict[str, Any]
Position = tuple[str, int]


class _Unreadable(ValueError):
    """A line whose checksum is right but whose JSON cannot be read (nested too deeply, say)."""


def warn_record(folder: str, position: Position, what: str, stacklevel: int = 3) -> None:
    """Warn that the record at ``position`` (segment, line) of ``folder`` was skipped."""
    warnings.warn(
        f"search plan journal {folder}/{position[0]}: line {position[1]}: {what}",
        HippoWarning,
        stacklevel=stacklevel,
    )


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One journal line: CRC32 of the JSON (8 hex digits), a space, the JSON, a newline."""
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _decode(line: bytes) -> Any:
    """The JSON on ``line``; ``None`` if torn or corrupt; :class:`_Unreadable` if the checksum
    holds but the JSON cannot be read."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
    except ValueError:
        return None
    try:
        return json.loads(body)
    except RecursionError:
        raise _Unreadable("its JSON nests too deeply to read") from None
    except ValueError as exc:
        raise _Unreadable(f"its JSON cannot be read: {exc}") from None


def decode_line(line: bytes) -> Record | None:
    """The record on ``line``, or ``None`` if the line is torn, corrupt or holds no object."""
    try:
        record = _decode(line)
    except _Unreadable:
        return None
    return record if isinstance(record, dict) else None


class Journal:
    """Segments of plan records under ``<url>/plan/``.

    Parameters
    ----------
    url
        The storage root (local path, ``file://``, ``s3://bucket/prefix``, ``memory://``, ...).
    storage_options
        Passed to fsspec (credentials, ``endpoint_url``); never written anywhere.
    create
        Create the folder if it is missing (never a bucket). Without, nothing is created.

    Raises
    ------
    JournalError
        If the URL names no usable filesystem, or the folder cannot be created.
    StorageError
        If ``create`` and the URL's bucket does not exist.
    """

    def __init__(
        self, url: str, storage_options: Mapping[str, Any] | None = None, *, create: bool = True
    ) -> None:
        try:
            fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError, TypeError) as exc:
            raise JournalError(mask_url(f"cannot open storage {url!r}: {exc}")) from exc
        self.url = url
        self.fs = fs
        self.root = root.rstrip("/")
        self.folder = f"{self.root}/plan"
        self.session = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        self._count = 0
        self._seen: set[str] = set()
        self._local = isinstance(fs, LocalFileSystem)
        self.bucket = self.root.split("/", 1)[0] if is_object_store(fs) else None
        if not create:
            return
        if self.bucket is not None:  # object stores have no folders; a missing bucket is an error
            self.check_bucket()
            return
        try:
            fs.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                f"cannot create {self.folder}: {type(exc).__name__}: {exc}"
            ) from None

    def check_bucket(self) -> None:
        """Raise :class:`StorageError` naming the bucket if the URL's bucket does not exist."""
        if self.bucket is None:
            return
        if self.bucket and self._bucket_found():
            return
        raise StorageError(
            f"bucket {self.bucket!r} of {mask_url(self.url)} does not exist; hippo_dask never creates "
            f"buckets: create it first (e.g. `aws s3 mb s3://{self.bucket}`) or fix the URL"
        )

    def _bucket_found(self) -> bool:
        """Whether the bucket exists, or may (s3fs' ``exists`` also says no when access to the
        bucket itself is denied, or the endpoint is down: only a listing that says "no such
        bucket" counts as missing; other problems surface at the first read or write)."""
        try:
            if self.fs.exists(self.bucket):
                return True
            self.fs.ls(self.bucket, detail=False, refresh=True)
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - access denied, outage: not proof that it is missing
            logger.debug("bucket check of %s inconclusive: %s", self.bucket, mask_url(str(exc)))
            return True
        return True

    def exists(self) -> bool:
        """Whether the journal's folder exists (holds anything, on an object store)."""
        try:
            return bool(self.fs.isdir(self.folder))
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(
                f"cannot look into {self.folder}: {type(exc).__name__}: {exc}"
            ) from None

    def probe(self) -> None:
        """Write and remove a small object, to find a read-only or unreachable folder early."""
        path = f"{self.folder}/.probe-{self.session}"
        try:
            self.fs.pipe_file(path, b"probe")
            self.fs.rm_file(path)
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(
                mask_url(f"cannot write to {self.url}: {type(exc).__name__}: {exc}")
            ) from None

    def _segment_names(self) -> list[str]:
        try:
            entries = list_folder(self.fs, self.folder, detail=False)
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(f"cannot list {self.folder}: {type(exc).__name__}: {exc}") from None
        names = [e.rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if n.endswith(".jsonl") and not n.startswith("."))

    @property
    def seen(self) -> frozenset[str]:
        """Names of the segments read or written by this journal."""
        return frozenset(self._seen)

    def mark_seen(self, names: Iterable[str]) -> None:
        """Never read these segments (a snapshot holds their records)."""
        self._seen.update(names)

    def read_new(self) -> Iterator[tuple[Any, Position]]:
        """The JSON value and position (segment, line) of every line of each segment not read
        (or written) by this journal yet, segments in name order.

        Lines that are torn, corrupt or unreadable are skipped with a :class:`HippoWarning`
        naming the segment and the line; what a value means is for the plan to check.
        """
        for name in self._segment_names():
            if name in self._seen:
                continue
            try:
                data = self.fs.cat_file(f"{self.folder}/{name}")
            except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
                raise JournalError(f"cannot read {self.folder}/{name}: {exc}") from None
            self._seen.add(name)
            lines = data.splitlines(keepends=True)
            for number, line in enumerate(lines, start=1):
                try:
                    value = _decode(line)
                except _Unreadable as exc:
                    warn_record(self.folder, (name, number), f"record skipped: {exc}")
                    continue
                if value is None:
                    where = "last line" if number == len(lines) else f"line {number}"
                    warnings.warn(
                        f"search plan journal {self.folder}/{name}: {where} is torn or corrupt "
                        "and was ignored",
                        HippoWarning,
                        stacklevel=2,
                    )
                    continue
                yield value, (name, number)

    def write_object(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` whole or not at all (temporary name and rename locally)."""
        if self._local:
            folder, name = path.rsplit("/", 1)
            os.makedirs(folder, exist_ok=True)
            temporary = f"{folder}/.{name}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        else:
            self.fs.pipe_file(path, data)

    def append(self, records: list[Record]) -> str | None:
        """Write ``records`` as one new segment, atomically; returns its name."""
        if not records:
            return None
        name = f"{self.session}-{self._count:06d}.jsonl"
        self._count += 1
        data = b"".join(encode_line(r) for r in records)
        path = f"{self.folder}/{name}"
        try:
            self.write_object(path, data)
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(
                f"cannot write search plan segment {path}: {type(exc).__name__}: {exc}"
            ) from None
        self._seen.add(name)
        logger.debug("journal: wrote %s records to %s", len(records), path)
        return name
