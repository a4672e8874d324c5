"""Append-only tables in a zarr v3 group: the mechanics under :class:`~hippo_dask.storage.MetricsStore`.

A table is one array per column (plus a float64 ``values`` matrix whose column names are in the
group's ``names`` attribute), in a writer's own subgroup. A writer keeps the last partial chunk
of every array in memory and rewrites whole chunks on append, then commits by writing the
table's ``rows`` attribute last; a reader reads only committed rows, and only the rows it has
not read yet (see :mod:`hippo_dask.storage._metrics` for the layout).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from zarr import AsyncArray, AsyncGroup
from zarr.dtype import VariableLengthUTF8
from zarr.errors import ContainsGroupError
from zarr.storage import FsspecStore, LocalStore, StorePath

__all__ = ["CHUNK_COLUMNS", "CHUNK_ROWS", "FORMAT", "Kind"]

logger = logging.getLogger("hippo_dask.storage._metrics")

T = TypeVar("T")
Kind = Literal["str", "int", "float"]

CHUNK_ROWS: Final = 256
"""Rows per chunk of every array."""
CHUNK_COLUMNS: Final = 16
"""Metric columns per chunk of the ``values`` array (its width grows in these steps)."""
# what opening a node that is not there (yet) raises; zarr's NodeNotFoundError is among them
_MISSING: Final = (FileNotFoundError, KeyError)
FORMAT: Final = 1
"""Version of the layout, in the root group's attributes."""


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class _TableSpec:
    """One append-only table in a writer's subgroup."""

    name: str
    columns: tuple[tuple[str, Kind], ...]
    matrix: bool = False  # a float64 "values" array whose column names are in attrs["names"]
    # columns added to the layout later: tables written before lack them (read as fill values)
    optional: frozenset[str] = frozenset()


_METRICS: Final = _TableSpec(
    "metrics",
    (("trial", "str"), ("kind", "str"), ("worker", "str"), ("step", "int"), ("wall_time", "float")),
    matrix=True,
)
_STAGES: Final = _TableSpec(
    "stages",
    (
        ("node", "str"),
        ("status", "str"),
        ("worker", "str"),
        ("start_step", "int"),
        ("step", "int"),
        ("started", "float"),
        ("finished", "float"),
        ("error", "str"),
    ),
    optional=frozenset({"error"}),
)
_MATRIX: Final = "values"


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _blank(kind: Kind, n: int) -> npt.NDArray[Any]:
    """``n`` fill values of a column of ``kind`` (also the arrays' fill values)."""
    if kind == "str":
        return np.full(n, "", dtype=object)
    if kind == "int":
        return np.full(n, -1, dtype=np.int64)
    return np.full(n, np.nan, dtype=np.float64)


_NUMPY: Final[dict[str, Any]] = {"str": object, "int": np.int64, "float": np.float64}


def _zarr_dtype(kind: Kind) -> Any:
    if kind == "str":
        return VariableLengthUTF8()
    return "int64" if kind == "int" else "float64"


def _fill(kind: Kind) -> Any:
    return {"str": "", "int": -1, "float": float("nan")}[kind]


async def _gather(jobs: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``jobs`` concurrently; once all have ended, raise the first error if any failed."""
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


class _TableWriter:
    """This writer's side of one table: what is committed and the last partial chunk."""

    def __init__(self, spec: _TableSpec) -> None:
        self.spec = spec
        self.group: AsyncGroup | None = None
        self.arrays: dict[str, AsyncArray[Any]] = {}
        self.rows = 0
        self.names: list[str] = []
        # rows [chunk start of self.rows, self.rows) of every array, and of the matrix
        self.tail: dict[str, npt.NDArray[Any]] = {n: _blank(k, 0) for n, k in spec.columns}
        self.tail_matrix: npt.NDArray[np.float64] = np.empty((0, 0))

    async def open(self, store: LocalStore | FsspecStore, writer: str) -> None:
        """Create the table (and the root and writer groups), or resume one this writer left."""
        path = f"{writer}/{self.spec.name}"
        try:
            group = await AsyncGroup.open(StorePath(store, path), zarr_format=3)
        except _MISSING:
            group = None
        if group is not None and int(group.attrs.get("rows", 0)) > 0:
            await self._resume(store, group, path)
            return
        await _ensure_root(store)
        try:
            await AsyncGroup.open(StorePath(store, writer), zarr_format=3)
        except _MISSING:
            await AsyncGroup.from_store(
                StorePath(store, writer),
                zarr_format=3,
                attributes={
                    "writer": writer,
                    "created": time.time(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )
            logger.info("metrics store: writer %s created", writer)
        attrs: dict[str, Any] = {"rows": 0, "names": []} if self.spec.matrix else {"rows": 0}
        group = await AsyncGroup.from_store(
            StorePath(store, path), zarr_format=3, attributes=attrs, overwrite=True
        )
        jobs = [
            group.create_array(
                name,
                shape=(0,),
                chunks=(CHUNK_ROWS,),
                dtype=_zarr_dtype(kind),
                fill_value=_fill(kind),
                overwrite=True,
            )
            for name, kind in self.spec.columns
        ]
        if self.spec.matrix:
            jobs.append(
                group.create_array(
                    _MATRIX,
                    shape=(0, 0),
                    chunks=(CHUNK_ROWS, CHUNK_COLUMNS),
                    dtype="float64",
                    fill_value=float("nan"),
                    overwrite=True,
                )
            )
        arrays = await _gather(jobs)
        self.arrays = {str(a.basename): a for a in arrays}
        self.group = group

    async def _resume(self, store: LocalStore | FsspecStore, group: AsyncGroup, path: str) -> None:
        names = [name for name, _ in self.spec.columns] + ([_MATRIX] if self.spec.matrix else [])
        found = await _open_arrays(store, path, self.spec)
        kinds = dict(self.spec.columns)
        arrays: list[AsyncArray[Any]] = []
        for name, array in zip(names, found, strict=True):
            if array is None:  # a column newer than the table: add it, holding fill values
                rows = max(int(a.shape[0]) for a in found if a is not None)
                array = await group.create_array(
                    name,
                    shape=(rows,),
                    chunks=(CHUNK_ROWS,),
                    dtype=_zarr_dtype(kinds[name]),
                    fill_value=_fill(kinds[name]),
                )
            arrays.append(array)
        self.arrays = dict(zip(names, arrays, strict=True))
        self.rows = int(group.attrs["rows"])
        self.names = [str(n) for n in group.attrs.get("names", [])]
        start = self.rows // CHUNK_ROWS * CHUNK_ROWS
        tails = await _gather(a.getitem(slice(start, self.rows)) for a in arrays)
        for (name, kind), tail in zip(self.spec.columns, tails, strict=False):
            self.tail[name] = np.asarray(tail, dtype=object if kind == "str" else None)
        if self.spec.matrix:
            self.tail_matrix = np.asarray(tails[-1], dtype=np.float64)
        self.group = group
        logger.info("metrics store: resumed %s at %d rows", path, self.rows)

    async def append(
        self,
        columns: Mapping[str, npt.NDArray[Any]],
        names: list[str],
        matrix: npt.NDArray[np.float64] | None,
    ) -> None:
        """Append a batch: rewrite whole chunks from the last partial one, then commit."""
        assert self.group is not None
        batch = len(next(iter(columns.values())))
        n0, n1 = self.rows, self.rows + batch
        first = n0 // CHUNK_ROWS * CHUNK_ROWS  # start of the chunk that gets the first new row
        capacity = _round_up(n1, CHUNK_ROWS)
        blocks: dict[str, npt.NDArray[Any]] = {}
        jobs = []
        for name, kind in self.spec.columns:
            block = _blank(kind, capacity - first)
            block[: n0 - first] = self.tail[name]
            block[n0 - first : n1 - first] = columns[name]
            blocks[name] = block
            jobs.append(_write(self.arrays[name], (capacity,), (slice(first, capacity),), block))
        width = 0
        if self.spec.matrix:
            assert matrix is not None
            array = self.arrays[_MATRIX]
            width = max(int(array.shape[1]), _round_up(len(names), CHUNK_COLUMNS))
            square = np.full((capacity - first, width), np.nan)
            square[: n0 - first, : self.tail_matrix.shape[1]] = self.tail_matrix
            square[n0 - first : n1 - first, : len(names)] = matrix
            blocks[_MATRIX] = square
            selection = (slice(first, capacity), slice(0, width))
            jobs.append(_write(array, (capacity, width), selection, square))
        await _gather(jobs)
        attrs: dict[str, Any] = {"rows": n1}
        if self.spec.matrix:
            attrs["names"] = list(names)
        self.group = await self.group.update_attributes(attrs)  # the commit
        self.rows = n1
        self.names = list(names)
        last = n1 // CHUNK_ROWS * CHUNK_ROWS - first
        for name, _ in self.spec.columns:
            self.tail[name] = blocks[name][last : n1 - first].copy()
        if self.spec.matrix:
            self.tail_matrix = blocks[_MATRIX][last : n1 - first].copy()


async def _write(
    array: AsyncArray[Any],
    shape: tuple[int, ...],
    selection: tuple[slice, ...],
    block: npt.NDArray[Any],
) -> None:
    if tuple(array.shape) != shape:
        await array.resize(shape)
    await array.setitem(selection, block)


async def _ensure_root(store: LocalStore | FsspecStore) -> None:
    """Open or create the root group; safe when several processes create it at once."""
    root = StorePath(store, "")
    try:
        await AsyncGroup.open(root, zarr_format=3)
        return
    except _MISSING:
        pass
    try:
        await AsyncGroup.from_store(
            root, zarr_format=3, attributes={"hippo_dask": "metrics", "format": FORMAT}
        )
    except ContainsGroupError:  # another process created it between our check and our write
        pass


# ----------------------------------------------------------------------------- reading


@dataclass
class _Cached:
    """Rows of one writer's table already read (committed rows never change), and its arrays.

    The arrays' metadata is reread only when the committed rows (or metric names) outgrow the
    shapes last seen, that is once per 256 rows: most reads cost a listing, the table's
    ``zarr.json`` and the new chunks.
    """

    rows: int = 0
    frame: pd.DataFrame | None = None
    arrays: list[AsyncArray[Any] | None] | None = None


@dataclass
class _NewRows:
    """What one read of one writer's table found beyond the cached rows."""

    rows: int
    arrays: list[AsyncArray[Any] | None] | None = None
    columns: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    matrix: npt.NDArray[np.float64] | None = None


def _too_small(arrays: list[AsyncArray[Any] | None], rows: int, width: int) -> bool:
    """Whether rows or metric columns were committed beyond the arrays' shapes last seen, or
    an optional column was missing then (a writer resuming the table may add it)."""
    if any(a is None or int(a.shape[0]) < rows for a in arrays):
        return True
    last = arrays[-1]
    return last is not None and int(last.shape[-1]) < width


async def _open_arrays(
    store: LocalStore | FsspecStore, path: str, spec: _TableSpec
) -> list[AsyncArray[Any] | None]:
    """The table's arrays in column order (the matrix last); ``None`` for a missing optional one.

    Raises what opening raises for any other missing array.
    """

    async def one(name: str) -> AsyncArray[Any] | None:
        try:
            return await AsyncArray.open(StorePath(store, f"{path}/{name}"), zarr_format=3)
        except _MISSING:
            if name in spec.optional:
                return None
            raise

    names = [name for name, _ in spec.columns] + ([_MATRIX] if spec.matrix else [])
    return await _gather(one(name) for name in names)


async def _rows_of(array: AsyncArray[Any] | None, kind: Kind, start: int, stop: int) -> Any:
    if array is None:
        return _blank(kind, stop - start)
    return await array.getitem(slice(start, stop))


async def _read_new(
    store: LocalStore | FsspecStore,
    writer: str,
    spec: _TableSpec,
    have: int,
    arrays: list[AsyncArray[Any] | None] | None = None,
) -> _NewRows | None:
    """Rows ``have..`` of ``writer``'s table; ``None`` while the table does not exist (yet).

    ``arrays`` are the table's arrays as opened by an earlier read, if any.
    """
    path = f"{writer}/{spec.name}"
    try:
        group = await AsyncGroup.open(StorePath(store, path), zarr_format=3)
    except _MISSING:
        return None
    rows = int(group.attrs.get("rows", 0))
    names = [str(n) for n in group.attrs.get("names", [])]
    if rows <= have:
        return _NewRows(rows=rows, arrays=arrays)
    if arrays is None or _too_small(arrays, rows, len(names) if spec.matrix else 0):
        try:
            arrays = await _open_arrays(store, path, spec)
        except _MISSING:  # committed rows imply the arrays; be lenient all the same
            return _NewRows(rows=have)
    # the commit follows the writes, so every array holds ``rows`` rows; a shorter array
    # (caught between resize and write by a writer that does not follow that order) bounds it
    stop = min([rows] + [int(a.shape[0]) for a in arrays if a is not None])
    if stop <= have:
        return _NewRows(rows=have, arrays=arrays)
    jobs = [
        _rows_of(a, kind, have, stop) for a, (_, kind) in zip(arrays, spec.columns, strict=False)
    ]
    width = 0
    if spec.matrix:
        matrix = arrays[-1]
        assert matrix is not None  # never optional
        width = min(len(names), int(matrix.shape[1]))
        jobs.append(matrix.getitem((slice(have, stop), slice(0, width))))
    data = await _gather(jobs)
    found = _NewRows(rows=stop, arrays=arrays, names=names[:width])
    for (name, kind), values in zip(spec.columns, data, strict=False):
        found.columns[name] = np.asarray(values, dtype=_NUMPY[kind])
    if spec.matrix:
        found.matrix = np.asarray(data[-1], dtype=np.float64).reshape(stop - have, width)
    return found
