"""Checkpoint stores: atomic, checksummed trainer states on any fsspec URL.

A checkpoint file is a small fixed header followed by the payload, the bytes of
:func:`hippo_dask.torch.save_state`:

======  =====  ==================================================================
offset  bytes  field
======  =====  ==================================================================
0       8      magic ``b"\\x89HIPPO\\r\\n"`` (the high byte and CR LF catch text-mode
               mangling, as PNG's signature does)
8       4      format version, unsigned big-endian (currently 1)
12      8      payload length in bytes, unsigned big-endian
20      32     SHA-256 of the payload
52      ...    payload
======  =====  ==================================================================

A file appears whole under its final name or not at all: on a local disk it is written to a
hidden temporary name in the same folder, fsynced, then renamed with :func:`os.replace`; on an
object store it is one PUT. Loading checks magic, version, length and checksum before a single
byte is unpickled, and unpickles with ``torch.load(weights_only=True)``, so no checkpoint can run
code, whoever wrote it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final, NoReturn, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from hippo_dask._fs import STORAGE_NAME, is_object_store, protocols, remove_file
from hippo_dask._redact import Redactor
from hippo_dask.errors import CheckpointNotFoundError, CorruptCheckpointError, StorageError
from hippo_dask.storage._retry import transient

__all__ = ["FORMAT_VERSION", "MAGIC", "CheckpointStore", "FsspecCheckpointStore"]

MAGIC: Final = b"\x89HIPPO\r\n"
"""First bytes of every checkpoint file."""

FORMAT_VERSION: Final = 1
"""Version of the checkpoint file format this module writes (and the only one it reads)."""

_HEADER: Final = struct.Struct(">8sIQ32s")

_T = TypeVar("_T")


class CheckpointStore(ABC):
    """Where trainer states are kept between stages.

    Implementations must make :meth:`save` atomic (a reader sees the whole file or none), make
    saving the same name twice harmless (the engine names checkpoints by content), and load
    without running code from the file.
    """

    @abstractmethod
    def save(self, name: str, state: Mapping[str, Any]) -> str:
        """Store ``state`` under ``name`` and return a URI that :meth:`load` accepts."""

    @abstractmethod
    def load(self, uri: str) -> dict[str, Any]:
        """The state stored at ``uri``."""

    @abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether a checkpoint is stored at ``uri``."""

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove the checkpoint at ``uri``; removing a missing one does nothing."""

    @abstractmethod
    def uri(self, name: str) -> str:
        """The URI :meth:`save` returns for ``name``, without saving: where a checkpoint that a
        stage on a worker saves under ``name`` will be found."""


class FsspecCheckpointStore(CheckpointStore):
    """Checkpoints as files ``<url>/<name>.ckpt`` on any fsspec filesystem.

    Parameters
    ----------
    url
        The folder: a local path, ``file://...``, ``s3://bucket/prefix/ckpt``, ``memory://ckpt``,
        or any other fsspec URL. Local folders are created on the first save.
    storage_options
        Passed to fsspec (credentials, ``endpoint_url``, ``config_kwargs``). They are never
        written to a file, and their secret-looking values are masked in error messages.

    Raises
    ------
    StorageError
        If fsspec cannot make a filesystem for ``url`` (unknown protocol, missing package).

    Notes
    -----
    Unreachable object stores fail as slowly as the client retries; for S3 pass e.g.
    ``storage_options={..., "config_kwargs": {"retries": {"max_attempts": 2}, "connect_timeout":
    5}}`` to fail fast.

    Examples
    --------
    >>> import torch
    >>> store = FsspecCheckpointStore("memory://doc-example/ckpt")
    >>> uri = store.save("step-10", {"w": torch.zeros(2), "step": 10})
    >>> uri
    'memory:///doc-example/ckpt/step-10.ckpt'
    >>> store.load(uri)["step"]
    10
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self._options = dict(storage_options or {})
        self._redactor = Redactor(self._options)
        try:
            fs, root = fsspec.core.url_to_fs(url, **self._options)
        except Exception as exc:  # noqa: BLE001 - any failure here is "cannot open storage"
            message = f"cannot open checkpoint storage {url!r}: {type(exc).__name__}: {exc}"
            raise StorageError(self._redact(message)) from None
        self.url = url
        self.fs = fs
        self._local = isinstance(fs, LocalFileSystem)
        self.folder: str = root.rstrip("/") or root

    def __repr__(self) -> str:
        return f"FsspecCheckpointStore({self._redact(self.url)!r})"

    # ---------------------------------------------------------------------------------------

    def uri(self, name: str) -> str:
        """The URI :meth:`save` returns for ``name`` (the file need not exist)."""
        return self._uri_of(self._path(name))

    def save(self, name: str, state: Mapping[str, Any]) -> str:
        """Write ``state`` atomically to ``<url>/<name>.ckpt``.

        Parameters
        ----------
        name
            File name without extension: letters, digits, ``.``, ``_`` and ``-``, starting with
            a letter or digit, at most 200 characters (content hashes fit).
        state
            What :meth:`hippo_dask.Trainer.state_dict` returns: tensors, numpy arrays and
            scalars, Python scalars and strings, and dicts, lists and tuples of them.

        Returns
        -------
        str
            The file's full URI (``s3://bucket/prefix/ckpt/name.ckpt``, ``memory:///...``, or an
            absolute local path), for :meth:`load`, :meth:`exists` and :meth:`delete`.

        Raises
        ------
        ValueError
            If ``name`` is not a valid file name.
        TypeError
            If ``state`` holds something that cannot be saved and loaded back safely (see
            :func:`hippo_dask.torch.save_state`); nothing is written then.
        StorageError
            If the file cannot be written.
        """
        path = self._path(name)
        from hippo_dask.storage._state_file import save_state

        buffer = io.BytesIO()
        save_state(state, buffer)
        data = encode(buffer.getvalue())
        uri = self._uri_of(path)
        self._storage_call(lambda: self._write(path, data), f"cannot write checkpoint {uri}")
        return uri

    def load(self, uri: str) -> dict[str, Any]:
        """Read, verify and unpickle the checkpoint at ``uri``.

        Raises
        ------
        CheckpointNotFoundError
            If there is no file at ``uri``.
        CorruptCheckpointError
            If the file is not a checkpoint, is truncated or fails its checksum, or would need
            code to load.
        StorageError
            If storage cannot be reached or read.
        """
        path = self._resolve(uri)
        data = self._storage_call(
            lambda: self.fs.cat_file(path), f"cannot read checkpoint {uri}", missing=uri
        )
        from hippo_dask.storage._state_file import load_state

        return load_state(io.BytesIO(decode(bytes(data), uri)), name=uri)

    def exists(self, uri: str) -> bool:
        """Whether a file is stored at ``uri`` (asks storage, not a cache)."""
        path = self._resolve(uri)

        def check() -> bool:
            # Not fs.isfile or fs.exists: they answer False when storage cannot be reached.
            if not self._local:
                self.fs.invalidate_cache(path)
            try:
                info = self.fs.info(path)
            except FileNotFoundError:
                return False
            return bool(info.get("type") == "file")

        return self._storage_call(check, f"cannot check checkpoint {uri}")

    def delete(self, uri: str) -> None:
        """Remove the checkpoint at ``uri``; removing a missing one does nothing.

        Deleting is idempotent because object stores cannot tell a missing key from a deleted
        one without a racy extra request, and two cleaners may remove the same file.
        """
        path = self._resolve(uri)
        self._storage_call(partial(remove_file, self.fs, path), f"cannot delete checkpoint {uri}")

    # ---------------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        if not isinstance(name, str) or not STORAGE_NAME.fullmatch(name):
            raise ValueError(
                f"The value of `name` is {name!r}, but must be a file name of letters, digits, "
                "'.', '_' and '-' that starts with a letter or digit (at most 200 characters), "
                "e.g. a content hash."
            )
        return f"{self.folder}/{name}.ckpt"

    def _uri_of(self, path: str) -> str:
        if self._local:
            return path
        uri: str = self.fs.unstrip_protocol(path)
        return uri

    def _resolve(self, uri: str) -> str:
        if not isinstance(uri, str) or not uri:
            raise ValueError(f"The value of `uri` is {uri!r}, but must be a checkpoint URI.")
        # A location relative to the folder's parent (a study root journals ``ckpt/<name>.ckpt``).
        head, _, tail = uri.partition("/")
        if (
            head == self.folder.rsplit("/", 1)[-1]
            and STORAGE_NAME.fullmatch(tail.removesuffix(".ckpt"))
            and tail.endswith(".ckpt")
        ):
            return f"{self.folder}/{tail}"
        protocol = fsspec.core.split_protocol(uri)[0] or "file"
        served = protocols(self.fs)
        if protocol not in served:
            raise ValueError(
                f"The checkpoint URI {uri!r} is not on this store's filesystem "
                f"({'/'.join(served)}); open a store for {protocol}:// to read it."
            )
        path: str = self.fs._strip_protocol(uri)
        return path

    def _write(self, path: str, data: bytes) -> None:
        if self._local:
            folder, name = os.path.split(path)
            os.makedirs(folder, exist_ok=True)
            temporary = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
            try:
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            _fsync_folder(folder)
            return
        try:
            self.fs.pipe_file(path, data)
        except FileNotFoundError:  # filesystems with real folders (sftp, hdfs, ...)
            if is_object_store(self.fs):
                raise  # no such bucket: s3fs's makedirs would create one, and we never do
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, data)

    def _storage_call(self, call: Callable[[], _T], what: str, *, missing: str | None = None) -> _T:
        try:
            return call()
        except FileNotFoundError as exc:
            if missing is not None:
                raise CheckpointNotFoundError(
                    f"checkpoint {missing} does not exist (deleted, or never written)"
                ) from None
            self._fail(what, exc)
        except Exception as exc:  # noqa: BLE001 - fsspec backends raise their own types
            self._fail(what, exc)

    def _fail(self, what: str, exc: BaseException) -> NoReturn:
        # `from None`: the cause's text is copied here with secrets masked; the original might
        # carry them (a signed URL, a botocore debug message).
        raise StorageError(
            self._redact(f"{what}: {type(exc).__name__}: {exc}"), transient=transient(exc)
        ) from None

    def _redact(self, message: str) -> str:
        return self._redactor(message)


def encode(payload: bytes) -> bytes:
    """The checkpoint file for ``payload``: header (magic, version, length, SHA-256), payload."""
    digest = hashlib.sha256(payload).digest()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), digest) + payload


def decode(data: bytes, name: str) -> bytes:
    """The payload of checkpoint file ``data``, after checking its header and checksum.

    Raises
    ------
    CorruptCheckpointError
        Naming ``name``, if the file is not a checkpoint, has another format version, is cut
        short or longer than its header says, or fails its checksum.
    """
    if len(data) < _HEADER.size:
        if not MAGIC.startswith(data[: len(MAGIC)]):
            raise CorruptCheckpointError(f"checkpoint {name} is not a hippo_dask checkpoint")
        raise CorruptCheckpointError(
            f"checkpoint {name} is truncated: {len(data)} bytes, shorter than its header"
        )
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptCheckpointError(
            f"checkpoint {name} is not a hippo_dask checkpoint (starts with {magic!r}, "
            f"expected {MAGIC!r})"
        )
    if version != FORMAT_VERSION:
        raise CorruptCheckpointError(
            f"checkpoint {name} has format version {version}, but this hippo_dask reads only "
            f"version {FORMAT_VERSION}"
        )
    payload = data[_HEADER.size :]
    if len(payload) != length:
        problem = "truncated" if len(payload) < length else "longer than its header says"
        raise CorruptCheckpointError(
            f"checkpoint {name} is {problem}: {len(payload)} payload bytes, header says {length}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpointError(
            f"checkpoint {name} is corrupt: its SHA-256 does not match the header"
        )
    return payload


def _fsync_folder(folder: str) -> None:
    # Make the rename itself durable; not every platform can open a folder.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
