"""The search plan's append-only journal on any fsspec URL.

Object stores cannot append, so the journal is a folder of immutable segments: each flush writes
one new object ``<root>/plan/<session>-<n>.jsonl`` holding the records since the last flush. A
segment appears whole or not at all (local disk: written to a hidden temporary name, fsynced,
then renamed; object stores: one PUT). Every line carries a CRC32 of its JSON, so a torn or
corrupted record, should one ever be found, is skipped with a warning instead of half-applied.

Several processes may write to one plan at once: each writes its own session's segments, and
:meth:`Journal.read_new` picks up segments it has not seen yet, in name order. Session names
start with a nanosecond clock, so name order follows the order sessions began.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from hippo_dask.errors import HippoWarning, JournalError

__all__ = ["Journal", "decode_line", "encode_line"]

logger = logging.getLogger(__name__)

Record = dict[str, Any]


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One journal line: CRC32 of the JSON (8 hex digits), a space, the JSON, a newline."""
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def decode_line(line: bytes) -> Record | None:
    """The record on ``line``, or ``None`` if the line is torn or corrupt."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
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
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        try:
            fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise JournalError(f"cannot open storage {url!r}: {exc}") from exc
        self.url = url
        self.fs = fs
        self.folder = f"{root.rstrip('/')}/plan"
        self.session = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
        self._count = 0
        self._seen: set[str] = set()
        self._local = isinstance(fs, LocalFileSystem)
        try:
            fs.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create {self.folder}: {type(exc).__name__}: {exc}") from None

    def probe(self) -> None:
        """Write and remove a small object, to find a read-only or unreachable folder early."""
        path = f"{self.folder}/.probe-{self.session}"
        try:
            self.fs.pipe_file(path, b"probe")
            self.fs.rm_file(path)
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(
                f"cannot write to {self.url}: {type(exc).__name__}: {exc}"
            ) from None

    def _segment_names(self) -> list[str]:
        try:
            entries = self.fs.ls(self.folder, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(f"cannot list {self.folder}: {type(exc).__name__}: {exc}") from None
        names = [e.rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if n.endswith(".jsonl") and not n.startswith("."))

    def read_new(self) -> Iterator[Record]:
        """Records of every segment not read (or written) by this journal yet, in name order."""
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
                record = decode_line(line)
                if record is None:
                    where = "last line" if number == len(lines) else f"line {number}"
                    warnings.warn(
                        f"search plan journal {self.folder}/{name}: {where} is torn or corrupt "
                        "and was ignored",
                        HippoWarning,
                        stacklevel=2,
                    )
                    continue
                yield record

    def append(self, records: list[Record]) -> None:
        """Write ``records`` as one new segment, atomically."""
        if not records:
            return
        name = f"{self.session}-{self._count:06d}.jsonl"
        self._count += 1
        data = b"".join(encode_line(r) for r in records)
        path = f"{self.folder}/{name}"
        try:
            if self._local:
                temporary = f"{self.folder}/.{name}.tmp"
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(
                f"cannot write search plan segment {path}: {type(exc).__name__}: {exc}"
            ) from None
        self._seen.add(name)
        logger.debug("journal: wrote %s records to %s", len(records), path)
