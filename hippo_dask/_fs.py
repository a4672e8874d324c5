"""Small fsspec helpers shared by the storage code and the search plan's journal.

Here, not in :mod:`hippo_dask.storage`: :mod:`hippo_dask.plan` needs them, and importing the
storage package from the plan would be an import cycle (:mod:`hippo_dask.storage` imports the plan).
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = [
    "BUCKET_PROTOCOLS",
    "STORAGE_NAME",
    "is_object_store",
    "list_folder",
    "protocols",
    "remove_file",
]

#: A name hippo_dask gives a file or folder in storage (study, checkpoint, metrics writer): 1-200
#: letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
STORAGE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

#: Protocols whose first path component is a bucket, which creating a folder must never create.
BUCKET_PROTOCOLS: Final = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2"}
)


def protocols(fs: Any) -> tuple[str, ...]:
    """The protocols ``fs`` answers to, always a tuple (fsspec gives a string or a sequence)."""
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


def is_object_store(fs: Any) -> bool:
    """Whether ``fs`` is an object store, whose first path component is a bucket never to create."""
    return bool(BUCKET_PROTOCOLS & set(protocols(fs)))


def list_folder(fs: Any, folder: str, *, detail: bool) -> list[Any]:
    """``fs.ls(folder)`` fresh from storage (not fsspec's cache), or ``[]`` if it is missing."""
    try:
        entries: list[Any] = fs.ls(folder, detail=detail, refresh=True)
    except FileNotFoundError:
        return []
    return entries


def remove_file(fs: Any, path: str) -> None:
    """Remove ``path``; one already gone is no error, as two cleaners may remove the same file."""
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
