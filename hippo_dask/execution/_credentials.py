"""Storage settings (and the credentials in them) reach each worker once, not in every task.

A stage task's arguments are pickled by the client, sent to the scheduler and kept there while
the task lives (``Scheduler.tasks[key].run_spec``, and the task pages of its dashboard). A
checkpoint store holds its storage options (an S3 key, secret, session token), so a store in
every :class:`~hippo_dask.execution._spec.StageSpec` copied the secret into every task. Instead
the driver registers the store once per client as a Dask worker plugin (:class:`StorePlugin`;
Dask also installs it on workers that join later), and each task carries a :class:`StoreRef`:
a random token and the store's URL with any password masked. On the worker the ref finds the
store under its token.

The scheduler still holds that one plugin, to hand to joining workers. To keep credentials off
the scheduler entirely, give the workers their own (an IAM role, ``AWS_*`` variables or
``~/.aws`` in the workers' environment) and pass no secret in ``storage_options``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin

from hippo_dask._redact import mask_url
from hippo_dask.errors import StorageError
from hippo_dask.storage import CheckpointStore

if TYPE_CHECKING:
    import distributed

__all__ = ["StorePlugin", "StoreRef", "ship"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
#: On a worker: the stores the plugins installed, by token.
_STORES: dict[str, CheckpointStore] = {}
#: On the driver: refs of stores already registered, by store, then by client id.
_SHIPPED: weakref.WeakKeyDictionary[CheckpointStore, dict[str, StoreRef]] = (
    weakref.WeakKeyDictionary()
)


class StorePlugin(WorkerPlugin):
    """A Dask worker plugin that installs one checkpoint store on every worker, under a token."""

    def __init__(self, token: str, store: CheckpointStore) -> None:
        self.token = token
        self.store = store
        self.name = f"hippo-storage-{token}"

    def setup(self, worker: Any = None) -> None:
        """Install the store on this worker."""
        with _lock:
            _STORES[self.token] = self.store

    def teardown(self, worker: Any = None) -> None:
        """Forget the store (the plugin was removed, or the worker closes)."""
        with _lock:
            _STORES.pop(self.token, None)


class StoreRef(CheckpointStore):
    """What a task carries instead of a checkpoint store: a token and a label, no settings.

    Parameters
    ----------
    token
        The token the store's :class:`StorePlugin` installed it under on the workers.
    label
        The store's URL with any password masked, for messages.
    """

    def __init__(self, token: str, label: str) -> None:
        self.token = token
        self.label = label

    def __repr__(self) -> str:
        return f"StoreRef({self.label!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoreRef, (self.token, self.label))

    def _store(self) -> CheckpointStore:
        with _lock:
            store = _STORES.get(self.token)
        if store is None:
            raise StorageError(
                f"checkpoint storage {self.label} is not installed on this worker (Dask worker "
                f"plugin 'hippo-storage-{self.token}' is missing); workers receive the study's "
                "storage settings from the client that runs the study: connect this worker to "
                "that client's scheduler before the study submits to it",
                transient=False,
            )
        return store

    def save(self, name: str, state: Mapping[str, Any]) -> str:
        """See :meth:`CheckpointStore.save`."""
        return self._store().save(name, state)

    def load(self, uri: str) -> dict[str, Any]:
        """See :meth:`CheckpointStore.load`."""
        return self._store().load(uri)

    def exists(self, uri: str) -> bool:
        """See :meth:`CheckpointStore.exists`."""
        return self._store().exists(uri)

    def delete(self, uri: str) -> None:
        """See :meth:`CheckpointStore.delete`."""
        self._store().delete(uri)

    def uri(self, name: str) -> str:
        """See :meth:`CheckpointStore.uri`."""
        return self._store().uri(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("token", "label"):
            raise AttributeError(name)
        return getattr(self._store(), name)  # uri(), url, ... of the store itself


def ship(client: distributed.Client, store: CheckpointStore) -> CheckpointStore:
    """A stand-in for ``store`` to put in tasks: registers ``store`` on ``client``'s workers
    once (a worker plugin) and returns a :class:`StoreRef` to it.

    The same store on the same client is registered once, however many drivers ship it; the
    plugin stays while the client's cluster lives, so a task that one driver submitted and
    another shares never loses its store.
    """
    if isinstance(store, StoreRef):
        return store
    client_id = str(getattr(client, "id", id(client)))
    with _lock:
        try:
            known = _SHIPPED.setdefault(store, {})
        except TypeError:  # a store that cannot be weakly referenced: register it each time
            known = {}
        ref = known.get(client_id)
        if ref is not None:
            return ref
        label = mask_url(str(getattr(store, "url", type(store).__name__)))
        ref = StoreRef(secrets.token_hex(12), label)
    client.register_plugin(StorePlugin(ref.token, store), name=f"hippo-storage-{ref.token}")
    with _lock:
        known[client_id] = ref
    logger.debug("storage %s installed on the workers of client %s", ref.label, client_id)
    return ref
