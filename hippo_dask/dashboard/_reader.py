"""Read a study from outside it: its plan journal and its zarr metrics store, refreshed.

The dashboard runs in another process (or on another machine) than the study it shows, so it
never asks the scheduler or the driver anything: it replays the append-only plan journal into
an in-memory :class:`~hippo_dask.plan.SearchPlan` and reads the metrics store, which both tolerate a
concurrent writer. Each :meth:`StudyReader.refresh` takes in only the journal segments and
metric rows that are new since the last one, and returns an immutable
:class:`~hippo_dask.dashboard.StudySnapshot` that every dashboard component draws from.

The reader opens the plan read-only with :meth:`SearchPlan.open`, so it applies the journal by
the same rules as every other reader (a bad record is skipped with a warning naming its segment
and line; records merge the same whatever order they are found in), and takes which trial each
request came from (per-trial curves, savings, early-stopped trials) from
:attr:`SearchPlan.requests_by_tag`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import fsspec

from hippo_dask._fs import list_folder
from hippo_dask._redact import mask_url
from hippo_dask.dashboard._snapshot import StudySnapshot, take_snapshot
from hippo_dask.errors import JournalError, StorageError, StudyNotFoundError
from hippo_dask.plan import SearchPlan
from hippo_dask.trial import Trial

__all__ = ["StudyNotFoundError", "StudyReader", "find_studies", "open_study"]

logger = logging.getLogger(__name__)


def _filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))  # type: ignore[no-any-return]
    except (ImportError, ValueError, TypeError) as exc:
        raise StorageError(f"cannot open storage {url!r}: {type(exc).__name__}: {exc}") from None


def _is_study(fs: Any, path: str) -> bool:
    """Whether ``path`` is a study folder: it has a ``plan/`` journal or a ``metrics.zarr``."""
    try:
        return bool(fs.isdir(f"{path}/plan") or fs.isdir(f"{path}/metrics.zarr"))
    except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
        raise StorageError(f"cannot look into {path!r}: {type(exc).__name__}: {exc}") from None


def find_studies(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the studies directly under the storage root ``url``, sorted.

    A study is a folder holding a ``plan/`` journal or a ``metrics.zarr`` store: what
    ``Study(name, ..., storage=url)`` creates in ``<url>/<name>/``.
    """
    fs, root = _filesystem(url, storage_options)
    root = root.rstrip("/")
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
        raise StorageError(f"cannot list {url!r}: {type(exc).__name__}: {exc}") from None
    names = []
    for entry in entries:
        if entry.get("type") != "directory":
            continue
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if name and not name.startswith(".") and _is_study(fs, f"{root}/{name}"):
            names.append(name)
    return sorted(names)


def _resolve(url: str, name: str | None, storage_options: Mapping[str, Any] | None) -> str:
    """The study folder that ``url`` (a storage root or a study folder) and ``name`` point at."""
    url = url.rstrip("/") or url
    fs, root = _filesystem(url, storage_options)
    if name is not None:
        candidate = f"{url}/{name}"
        if _is_study(fs, f"{root.rstrip('/')}/{name}"):
            return candidate
        if _is_study(fs, root) and url.rsplit("/", 1)[-1] == name:
            return url  # the study folder itself, with its own name
        found = find_studies(url, storage_options)
        listing = ", ".join(found) if found else "none"
        raise StudyNotFoundError(
            f"no study named {name!r} under {url}; studies found there: {listing}. Pass the "
            "storage root the study was created with (Study(name, ..., storage=URL)) and one of "
            "those names"
        )
    if _is_study(fs, root):
        return url
    found = find_studies(url, storage_options)
    if len(found) == 1:
        logger.info("dashboard: %s holds one study, %r", url, found[0])
        return f"{url}/{found[0]}"
    if not found:
        raise StudyNotFoundError(
            f"{url} holds no study (no plan/ journal or metrics.zarr in it or in a folder under "
            "it); pass the storage root a study was created with (Study(name, ..., storage=URL)) "
            "or that study's folder"
        )
    raise StudyNotFoundError(
        f"{url} holds {len(found)} studies ({', '.join(found)}); say which with --name NAME "
        "(name= in Python)"
    )


_SHARED: dict[tuple[str, str | None], StudyReader] = {}
_SHARED_LOCK = threading.Lock()


def open_study(
    url: str,
    name: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    *,
    shared: bool = False,
) -> StudyReader:
    """A reader of the study at ``url`` (its folder, or its storage root with ``name``).

    Parameters
    ----------
    url
        The storage root given to ``Study(..., storage=url)`` or the study's own folder
        ``<root>/<name>``; any fsspec URL.
    name
        The study's name when ``url`` is a storage root; may be left out when the root holds a
        single study.
    storage_options
        Passed to fsspec (credentials, ``endpoint_url``); never shown or stored.
    shared
        Return this process's reader of the same ``url`` and ``name`` if there is one (made
        with ``shared=True`` too), so the sessions of a ``bokeh serve`` app, which each run the
        app's script, share one replay of the journal.

    Raises
    ------
    StudyNotFoundError
        If there is no such study; the message lists the studies found under ``url``.
    StorageError
        If the storage cannot be reached.
    """
    if not shared:
        return StudyReader(_resolve(url, name, storage_options), storage_options)
    with _SHARED_LOCK:
        reader = _SHARED.get((url, name))
        if reader is None:
            reader = _SHARED[(url, name)] = StudyReader(
                _resolve(url, name, storage_options), storage_options
            )
        return reader


class StudyReader:
    """Replays a study's journal and reads its metrics store, incrementally.

    Parameters
    ----------
    root
        The study folder (``<storage>/<name>``), as :func:`open_study` resolves it.
    storage_options
        Passed to fsspec; kept (in memory only) for readers made from this one.

    Notes
    -----
    Safe to share between threads and Bokeh sessions: :meth:`latest` refreshes at most once per
    ``max_age`` seconds, whoever asks, so ten open browser tabs read storage as often as one.
    """

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        from hippo_dask.storage import MetricsStore

        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.name = self.root.rsplit("/", 1)[-1]
        self.plan = SearchPlan.open(self.root, storage_options, read_only=True)
        self.metrics = MetricsStore(f"{self.root}/metrics.zarr", storage_options)
        self._lock = threading.Lock()
        self._snapshot: StudySnapshot | None = None
        self._taken = -float("inf")

    def __repr__(self) -> str:
        return f"<StudyReader {self.name!r} at {mask_url(self.root)}>"

    # -- the journal

    @property
    def requests(self) -> dict[str, tuple[Trial, int]]:
        """By request tag (the tuner's trial id): the planned trial and the most steps asked."""
        return self.plan.requests_by_tag

    def _replay(self) -> int:
        """Apply journal records written since the last look; returns how many."""
        return self.plan.refresh()

    def _last_session_start(self) -> float | None:
        """Unix time the newest journal session began (segment names start with its clock)."""
        journal = self.plan.journal
        if journal is None:
            return None
        try:
            names = list_folder(journal.fs, journal.folder, detail=False)
        except Exception as exc:  # noqa: BLE001 - botocore's errors are not OSErrors
            raise JournalError(f"cannot list {journal.folder}: {exc}") from None
        stamps = []
        for entry in names:
            head = str(entry).rsplit("/", 1)[-1].split("-", 1)[0]
            if head.isdigit() and len(head) == 20:
                stamps.append(int(head) / 1e9)
        return max(stamps, default=None)

    # -- snapshots

    def refresh(self) -> StudySnapshot:
        """Read what is new in storage and return the study as it stands now.

        Raises
        ------
        StorageError, JournalError
            If the storage cannot be read (the previous snapshot stays valid).
        """
        with self._lock:
            self._replay()
            metrics = self.metrics.read()
            stages = self.metrics.read_stages(status=None)  # submissions and failures too
            snapshot = take_snapshot(
                self.name,
                mask_url(self.root),  # shown in the dashboard's title bar
                self.plan,
                self.requests,
                metrics,
                stages,
                session_started=self._last_session_start(),
                now=time.time(),
            )
            self._snapshot = snapshot
            self._taken = time.monotonic()
            return snapshot

    def latest(self, max_age: float = 0.0) -> StudySnapshot:
        """The last snapshot if younger than ``max_age`` seconds, else a fresh one."""
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._taken < max_age:
                return self._snapshot
        return self.refresh()
