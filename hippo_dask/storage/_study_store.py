"""A study's own checkpoint store: locations relative to the study root, confined to ``ckpt/``.

The search plan journals where each checkpoint lives. Journaled as full URIs, a study copied or
moved elsewhere (another disk, another bucket prefix) would still point at the original's
files, and a collection of the copy would delete them. So a study's store names its files by
*location*, ``ckpt/<name>.ckpt``, relative to the study root (the folder holding ``plan/``,
``ckpt/`` and ``metrics.zarr``), and resolves every location against its own root. What the
journal says can never make a study read or delete a file outside its own ``ckpt/`` folder:

========================================  ===================================================
journaled location                        resolves to
========================================  ===================================================
``ckpt/<name>.ckpt`` (written since 0.3)  ``<root>/ckpt/<name>.ckpt``
a full URI ``<anything>/ckpt/<name>.ckpt``  ``<root>/ckpt/<name>.ckpt``: the study's own file
(journals written before 0.3)             of that name. Under this root it is the same file;
                                          in a copied or moved study it is the copy's file.
                                          Names are digests of the training state they hold,
                                          checked on load, so the same name is the same state.
anything else                             nothing: loading it is a missing checkpoint (the
                                          plan forgets it), gc never deletes anything for it
========================================  ===================================================

The store also keeps *leases* (:mod:`hippo_dask.storage._leases`): a driver declares the
checkpoint names its stages in flight write, so that gc does not take a running stage's
periodic checkpoints for files a killed run left behind.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from hippo_dask._fs import STORAGE_NAME
from hippo_dask.errors import CheckpointNotFoundError
from hippo_dask.storage._checkpoints import FsspecCheckpointStore
from hippo_dask.storage._leases import (
    Lease,
    lease_folder,
    read_leases,
    remove_lease,
    write_lease,
)

__all__ = ["CHECKPOINT_FOLDER", "StudyCheckpointStore"]

CHECKPOINT_FOLDER: Final = "ckpt"
"""The folder under a study root that holds its checkpoints."""

#: A checkpoint file name (what :class:`FsspecCheckpointStore` accepts as ``name``, plus ``.ckpt``).
_FILE: Final = re.compile(rf"{STORAGE_NAME.pattern}\.ckpt")
_RELATIVE: Final = re.compile(rf"{CHECKPOINT_FOLDER}/({_FILE.pattern})")
_LEGACY: Final = re.compile(rf".*/{CHECKPOINT_FOLDER}/({_FILE.pattern})")


class StudyCheckpointStore(FsspecCheckpointStore):
    """The checkpoints of the study at ``root``: files ``<root>/ckpt/<name>.ckpt``.

    Like :class:`FsspecCheckpointStore`, except that :meth:`save` and :meth:`uri` return
    locations relative to the study root (``ckpt/<name>.ckpt``) and every location resolves
    inside this study's ``ckpt/`` folder only (see the module's documentation).

    Parameters
    ----------
    root
        The study root: a local path or any fsspec URL (``s3://bucket/prefix/study``).
    storage_options
        Passed to fsspec; never written to a file.

    Examples
    --------
    >>> store = StudyCheckpointStore("memory://doc-study")
    >>> store.save("step-10", {"step": 10})
    'ckpt/step-10.ckpt'
    >>> store.name_of("s3://old-bucket/runs/doc-study/ckpt/step-10.ckpt")
    'step-10.ckpt'
    >>> store.name_of("/etc/passwd") is None
    True
    """

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root.rstrip("/") or root
        super().__init__(f"{self.root}/{CHECKPOINT_FOLDER}", storage_options)

    def __repr__(self) -> str:
        return f"StudyCheckpointStore({self._redact(self.root)!r})"

    def location(self, name: str) -> str:
        """The location of checkpoint ``name`` relative to the study root: ``ckpt/<name>.ckpt``."""
        self._path(name)  # validates the name
        return f"{CHECKPOINT_FOLDER}/{name}.ckpt"

    def name_of(self, location: Any) -> str | None:
        """The file in this study's ``ckpt/`` folder that ``location`` refers to, or ``None``.

        ``location`` is what the plan journaled: ``ckpt/<name>.ckpt``, or a full URI from a
        journal written before locations were relative (resolved by its file name, see the
        module's documentation). Anything else refers to no file of this study.
        """
        if not isinstance(location, str) or len(location) > 4096:
            return None
        match = _RELATIVE.fullmatch(location) or _LEGACY.fullmatch(location)
        return match.group(1) if match is not None else None

    def _uri_of(self, path: str) -> str:
        return f"{CHECKPOINT_FOLDER}/{path.rsplit('/', 1)[-1]}"

    def _resolve(self, uri: str) -> str:
        name = self.name_of(uri)
        if name is None:
            raise CheckpointNotFoundError(
                f"checkpoint location {self._redact(str(uri))[:300]!r} is not a file of this "
                f"study's {CHECKPOINT_FOLDER}/ folder ({self._redact(self.url)}): a study reads "
                f"and deletes only its own checkpoints, named {CHECKPOINT_FOLDER}/<name>.ckpt; "
                "the plan forgets it and re-derives that state"
            )
        return f"{self.folder}/{name}"

    def exists(self, uri: str) -> bool:
        """Whether this study holds a file for location ``uri`` (``False`` for a foreign one)."""
        if self.name_of(uri) is None:
            return False
        return super().exists(uri)

    # -- leases ------------------------------------------------------------------------------

    def hold(self, owner: str, names: Collection[str], interval: float) -> None:
        """Declare that checkpoints ``names`` belong to work of ``owner`` that is still running.

        ``owner`` rewrites this at least every ``interval`` seconds while it runs; gc keeps the
        files while the lease is fresh (see :mod:`hippo_dask.storage._leases`).

        Raises
        ------
        StorageError
            If the lease cannot be written.
        """
        write_lease(self, owner, names, interval)

    def release(self, owner: str) -> None:
        """Withdraw ``owner``'s lease (nothing of it runs any more)."""
        remove_lease(self, owner)

    def leases(self) -> list[Lease]:
        """Every lease in this study, fresh or not, as gc reads them."""
        return read_leases(self)

    @property
    def lease_folder(self) -> str:
        """Where leases are kept (a hidden folder inside ``ckpt/``)."""
        return lease_folder(self)
