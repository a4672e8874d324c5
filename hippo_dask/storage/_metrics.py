"""The study's metrics store ``<root>/metrics.zarr``: append-only tables in a zarr v3 group.

Workers measure; the driver appends what they measured here, in batches; the dashboard (another
process) reads it while the study runs. Resizing an array and then writing to it is not safe
with several writers on one array, so every writer (one :class:`MetricsStore` object, normally one
per process) owns a subgroup named by its session id, and readers merge all subgroups::

    metrics.zarr/                   group  {"hippo_dask": "metrics", "format": 1}
      <writer>/                     group  {"writer": ..., "created": unix s, "host", "pid"}
        metrics/                    group  {"rows": n, "names": [metric names, column order]}
          trial      (cap,)         string   id of a trial whose path passes through the state
          kind       (cap,)         string   "metrics" unless the caller says otherwise
          worker     (cap,)         string   worker address or name
          step       (cap,)         int64    fill -1
          wall_time  (cap,)         float64  unix seconds when measured, fill NaN
          values     (cap, width)   float64  one column per metric name, fill NaN
        stages/                     group  {"rows": n}
          node, status, worker      string
          error                     string   (since 0.2; older tables lack it: read as "")
          start_step, step          int64
          started, finished         float64  NaN where unknown (see StageRecord)

Only the first ``rows`` rows (the table group's ``rows`` attribute) and the first
``len(names)`` columns of ``values`` hold data. Arrays are allocated in whole chunks of 256
rows (``cap`` is a multiple of 256, ``width`` of 16) and every append rewrites whole chunks from
the writer's in-memory copy of the last partial chunk, so an append costs one write per array
(plus a resize only when a chunk boundary is crossed) and one write of the table's
``zarr.json`` last, which is the commit: a reader that sees ``rows == n`` finds the first ``n``
rows written in every array. Readers still take the smallest of ``rows`` and the arrays'
lengths, so an array caught between resize and write never yields fill values.

Strings are zarr v3 ``string`` arrays (variable-length UTF-8, codec ``vlen-utf8``): zarr 3.1
stores them without warnings and returns numpy ``StringDType`` arrays, readable by any process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final

import fsspec
import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from fsspec.implementations.local import LocalFileSystem
from zarr import AsyncArray
from zarr.core.sync import sync as _zarr_sync
from zarr.storage import FsspecStore, LocalStore

from hippo_dask._fs import STORAGE_NAME
from hippo_dask._redact import Redactor, mask_url
from hippo_dask.errors import StorageError
from hippo_dask.storage._records import (
    BASE_COLUMNS,
    DONE,
    STAGE_COLUMNS,
    MetricRow,
    StageRecord,
)
from hippo_dask.storage._retry import transient
from hippo_dask.storage._tables import (
    _METRICS,
    _NUMPY,
    _STAGES,
    T,
    _Cached,
    _gather,
    _NewRows,
    _read_new,
    _TableSpec,
    _TableWriter,
)

__all__ = [
    "BASE_COLUMNS",
    "STAGE_COLUMNS",
    "MetricRow",
    "MetricsStore",
    "StageRecord",
    "new_writer_id",
]

logger = logging.getLogger(__name__)

_MAX_READ_ATTEMPTS: Final = 3


def new_writer_id() -> str:
    """A session id unique per process: nanosecond clock, then 8 random hex digits.

    Ids sort in the order their sessions began, so readers list writers oldest first.
    """
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


# ----------------------------------------------------------------------------- the store


class MetricsStore:
    """Append-only metrics and stage timings of a study, readable while it runs.

    Parameters
    ----------
    url
        ``<root>/metrics.zarr`` on any fsspec URL: a local path, ``file://``, ``s3://``,
        ``memory://``, ...
    storage_options
        Passed to fsspec (credentials, ``endpoint_url``); never written anywhere nor shown in
        error messages.
    writer
        This writer's subgroup name; by default a fresh :func:`new_writer_id`. Give the id of a
        writer that is gone to continue its tables; never give one that another live object
        writes to.

    Notes
    -----
    Nothing is written before the first append; reading a store nobody wrote yet gives empty
    frames. One object may be used from several threads. Every storage failure raises
    :class:`~hippo_dask.errors.StorageError` naming the URL and the cause.
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        writer: str | None = None,
    ) -> None:
        self.url = url
        self._options = dict(storage_options or {})
        self._redact = Redactor(self._options)
        if writer is None:
            writer = new_writer_id()
        if not isinstance(writer, str) or not STORAGE_NAME.fullmatch(writer):
            raise ValueError(
                f"writer id {writer!r} must be 1-200 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        self.writer = writer
        try:
            fs, path = fsspec.core.url_to_fs(url, **self._options)
            if isinstance(fs, LocalFileSystem):
                # zarr's LocalStore writes atomically (temporary file + rename); fsspec's local
                # files do not, and a reader could see a half-written chunk
                self._store: LocalStore | FsspecStore = LocalStore(path)
            else:
                options = dict(self._options)
                if fsspec.utils.get_protocol(url) in ("s3", "s3a"):
                    # s3fs's default (10) sends a HEAD before every GET to decide whether to
                    # fetch in parallel ranges: twice the round trips for our small objects
                    options.setdefault("max_concurrency", 1)
                self._store = FsspecStore.from_url(url, storage_options=options)
        except (ImportError, ValueError, TypeError) as exc:
            raise StorageError(self._message("open", exc)) from exc
        self._lock = threading.RLock()
        self._tables = {spec.name: _TableWriter(spec) for spec in (_METRICS, _STAGES)}
        self._cache: dict[tuple[str, str], _Cached] = {}

    def __repr__(self) -> str:
        return f"MetricsStore({mask_url(self.url)!r}, writer={self.writer!r})"

    # -- writing

    def append(self, rows: Sequence[MetricRow]) -> None:
        """Append metric rows as one batch (one write per array, then one commit).

        Parameters
        ----------
        rows
            The rows, in the order they should be stored. Metric names not seen before by this
            writer become new columns (earlier rows read NaN there).

        Raises
        ------
        TypeError
            If an item is not a :class:`MetricRow`.
        StorageError
            If the storage could not be written. Readers see the batch whole or not at all,
            and appending the same batch again stores it once (it lands on the same rows).
        """
        rows = list(rows)
        for row in rows:
            if not isinstance(row, MetricRow):
                raise TypeError(f"append() takes MetricRow objects, not {type(row).__name__}")
        if not rows:
            return
        with self._lock:
            table = self._open(self._tables[_METRICS.name])
            names = list(table.names)
            index = {name: j for j, name in enumerate(names)}
            for row in rows:
                for name in row.values:
                    if name not in index:
                        index[name] = len(names)
                        names.append(name)
            matrix = np.full((len(rows), len(names)), np.nan)
            for i, row in enumerate(rows):
                for name, value in row.values.items():
                    matrix[i, index[name]] = value
            columns = {
                "trial": np.array([r.trial for r in rows], dtype=object),
                "kind": np.array([r.kind for r in rows], dtype=object),
                "worker": np.array([r.worker for r in rows], dtype=object),
                "step": np.array([r.step for r in rows], dtype=np.int64),
                "wall_time": np.array([r.wall_time for r in rows], dtype=np.float64),
            }
            self._append(table, columns, names, matrix)

    def append_stages(self, records: Sequence[StageRecord]) -> None:
        """Append stage timing records as one batch.

        Parameters
        ----------
        records
            The records, in the order they should be stored.

        Raises
        ------
        TypeError
            If an item is not a :class:`StageRecord`.
        StorageError
            If the storage could not be written; appending the same batch again stores it
            once.
        """
        records = list(records)
        for record in records:
            if not isinstance(record, StageRecord):
                raise TypeError(
                    f"append_stages() takes StageRecord objects, not {type(record).__name__}"
                )
        if not records:
            return
        with self._lock:
            columns: dict[str, npt.NDArray[Any]] = {}
            for name, kind in _STAGES.columns:
                columns[name] = np.array([getattr(r, name) for r in records], dtype=_NUMPY[kind])
            self._append(self._open(self._tables[_STAGES.name]), columns, [], None)

    def _open(self, table: _TableWriter) -> _TableWriter:
        """``table``, created (or resumed) in storage on first use."""
        if table.group is None:
            self._run(
                table.open(self._store, self.writer),
                f"create {table.spec.name} of writer {self.writer}",
            )
        return table

    def _append(
        self,
        table: _TableWriter,
        columns: Mapping[str, npt.NDArray[Any]],
        names: list[str],
        matrix: npt.NDArray[np.float64] | None,
    ) -> None:
        started = time.perf_counter()
        self._run(
            table.append(columns, names, matrix),
            f"append to {table.spec.name} of writer {self.writer}",
        )
        logger.debug(
            "metrics store: %d %s rows appended in %.1f ms",
            len(next(iter(columns.values()))),
            table.spec.name,
            (time.perf_counter() - started) * 1e3,
        )

    # -- reading

    def read(self) -> pd.DataFrame:
        """All metric rows of all writers.

        Returns
        -------
        pandas.DataFrame
            Columns ``trial, step, wall_time, worker, writer, kind``, then one float column per
            metric name (in order of first appearance, writers taken oldest first), NaN where a
            row has no value for that metric. Sorted by ``wall_time`` then ``step``, index
            ``0..n-1``. Rows a writer is appending at the moment are either all in or all out.

        Raises
        ------
        StorageError
            If the storage could not be read.
        """
        frames = self._read(_METRICS)
        if not frames:
            return _empty_metrics()
        frame = pd.concat(frames, ignore_index=True, sort=False)
        return frame.sort_values(["wall_time", "step"], kind="stable", ignore_index=True)

    def read_stages(self, status: str | Iterable[str] | None = DONE) -> pd.DataFrame:
        """Stage records of all writers: by default the stages that finished (``"done"``).

        Parameters
        ----------
        status
            Keep the records of this status (or of any of these); ``None`` keeps every record,
            the ``"submitted"`` ones and the failures too (see
            :class:`~hippo_dask.storage.StageRecord`). The default gives what writers older than
            the other statuses wrote, so a caller that takes every row for a finished stage
            reads the same frame from old and new stores.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`STAGE_COLUMNS`, sorted by ``started`` then ``node`` (NaN last),
            index ``0..n-1``.

        Raises
        ------
        StorageError
            If the storage could not be read.
        """
        frames = self._read(_STAGES)
        if not frames:
            return _empty_stages()
        frame = pd.concat(frames, ignore_index=True, sort=False)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            frame = frame[frame["status"].isin(wanted)]
        return frame.sort_values(["started", "node"], kind="stable", ignore_index=True)

    def writers(self) -> list[str]:
        """Ids of the writers that have a subgroup, oldest first.

        Raises
        ------
        StorageError
            If the storage could not be listed.
        """
        return self._run(self._list_writers(), "list writers")

    def _forget_listing(self) -> None:
        """Drop fsspec's cached listing of the root (s3fs & co. cache listings).

        A reader must see writers that appeared since its last listing, and a cached listing
        must not make zarr's "exists?" checks (answered from that cache by s3fs) miss files
        that other processes wrote since.
        """
        if isinstance(self._store, FsspecStore):
            invalidate = getattr(self._store.fs, "invalidate_cache", None)
            if invalidate is not None:
                invalidate(self._store.path)

    async def _list_writers(self) -> list[str]:
        self._forget_listing()
        try:
            names = [name async for name in self._store.list_dir("")]
        finally:
            self._forget_listing()
        return sorted(
            name
            for name in (n.rstrip("/").rsplit("/", 1)[-1] for n in names)
            if STORAGE_NAME.fullmatch(name)
            and name != "zarr.json"
            and not name.endswith(".partial")
        )

    def _read(self, spec: _TableSpec) -> list[pd.DataFrame]:
        with self._lock:
            writers = self._run(self._list_writers(), f"list writers to read {spec.name}")
            cached = [self._cache.setdefault((w, spec.name), _Cached()) for w in writers]

            async def one(
                writer: str, have: int, arrays: list[AsyncArray[Any] | None] | None
            ) -> _NewRows | None:
                for attempt in range(1, _MAX_READ_ATTEMPTS + 1):
                    try:
                        return await _read_new(self._store, writer, spec, have, arrays)
                    except (ValueError, RuntimeError) as exc:
                        # undecodable metadata or chunk: half-written on a store whose writes
                        # are not atomic; the next try usually sees it whole
                        if attempt == _MAX_READ_ATTEMPTS:
                            logger.warning(
                                "metrics store %s: %s of writer %s unreadable, skipped (%s: %s)",
                                mask_url(self.url),
                                spec.name,
                                writer,
                                type(exc).__name__,
                                self._redact(str(exc)),
                            )
                            return _NewRows(rows=have, arrays=arrays)  # keep what was read
                        await asyncio.sleep(0.01 * attempt)
                return None  # pragma: no cover - the loop always returns

            async def every() -> list[_NewRows | None]:
                return await _gather(
                    one(w, c.rows, c.arrays) for w, c in zip(writers, cached, strict=True)
                )

            found = self._run(every(), f"read {spec.name}")
            frames = []
            for writer, cache, new in zip(writers, cached, found, strict=True):
                if new is None and cache.rows:  # the table is gone: the store was replaced
                    cache.rows, cache.frame, cache.arrays = 0, None, None
                if new is not None and new.rows < cache.rows:  # the store was replaced
                    logger.warning("metrics store: writer %s shrank; reading it again", writer)
                    cache.rows, cache.frame = 0, None
                    new = self._run(_read_new(self._store, writer, spec, 0), f"read {spec.name}")
                if new is not None:
                    cache.arrays = new.arrays
                if new is not None and new.rows > cache.rows and new.columns:
                    part = _frame(spec, writer, new)
                    cache.frame = (
                        part
                        if cache.frame is None
                        else pd.concat([cache.frame, part], ignore_index=True, sort=False)
                    )
                    cache.rows = new.rows
                if cache.frame is not None:
                    frames.append(cache.frame)
            return frames

    # -- errors

    def _run(self, coro: Coroutine[Any, Any, T], action: str) -> T:
        try:
            return _zarr_sync(coro)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(self._message(action, exc), transient=transient(exc)) from exc

    def _message(self, action: str, exc: BaseException) -> str:
        cause = self._redact(str(exc)) or "(no message)"
        return f"metrics store {mask_url(self.url)}: cannot {action}: {type(exc).__name__}: {cause}"


def _frame(spec: _TableSpec, writer: str, new: _NewRows) -> pd.DataFrame:
    """A data frame of rows read from one writer's table."""
    data: dict[str, Any] = dict(new.columns)
    data["writer"] = np.full(len(next(iter(new.columns.values()))), writer, dtype=object)
    if spec.matrix:
        columns: list[str] = list(BASE_COLUMNS)
        assert new.matrix is not None
        for j, name in enumerate(new.names):
            data[name] = new.matrix[:, j]
        columns += new.names
    else:
        columns = list(STAGE_COLUMNS)
    return pd.DataFrame(data, columns=columns)


def _empty_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial": pd.Series([], dtype="str"),
            "step": pd.Series([], dtype=np.int64),
            "wall_time": pd.Series([], dtype=np.float64),
            "worker": pd.Series([], dtype="str"),
            "writer": pd.Series([], dtype="str"),
            "kind": pd.Series([], dtype="str"),
        }
    )


def _empty_stages() -> pd.DataFrame:
    kinds = dict(_STAGES.columns) | {"writer": "str"}
    dtypes: dict[str, Any] = {"str": "str", "int": np.int64, "float": np.float64}
    return pd.DataFrame({c: pd.Series([], dtype=dtypes[kinds[c]]) for c in STAGE_COLUMNS})
