"""The driver's lease on the checkpoint files its stages in flight will write.

gc deletes checkpoint files nobody journaled; a stage in flight writes files that are journaled
only when it reports. The lease names them, so gc leaves them alone
(:mod:`hippo_dask.storage` keeps leases under ``ckpt/.leases/``).
"""

from __future__ import annotations

import logging
import time
import uuid

from hippo_dask.storage import CheckpointStore, StudyCheckpointStore

__all__ = ["Lease"]

logger = logging.getLogger("hippo_dask.execution._driver")


class Lease:
    """One driver's lease in a study's checkpoint store (nothing for other stores)."""

    def __init__(self, store: CheckpointStore, interval: float) -> None:
        self.store = store if isinstance(store, StudyCheckpointStore) else None
        self.interval = interval
        self.id = uuid.uuid4().hex[:12]
        self._held: frozenset[str] = frozenset()
        self._written = 0.0  # when (time.monotonic())

    def hold(self, names: set[str], *, journaled: bool) -> None:
        """Hold ``names``. Written at once when the set gains a name (before the stage can have
        trained to its first periodic checkpoint: the same scheduling pass submits it),
        rewritten every ``interval`` seconds while it holds any; names that left (their records
        are journaled by then) go at that rewrite, so a stage ending costs no write. While the
        journal is behind (``journaled`` false), names are kept until it catches up."""
        if self.store is None:
            return
        if not journaled:
            names = names | self._held  # their records wait for the journal: keep holding them
        held = frozenset(names)
        now = time.monotonic()
        grew = not held <= self._held
        due = now - self._written >= self.interval and bool(held or self._held)
        if not grew and not due:
            return
        try:
            if held:
                self.store.hold(self.id, held, self.interval)
            else:
                self.store.release(self.id)
        except (OSError, ValueError) as exc:
            logger.warning(
                "could not write the lease on %d checkpoint files of running stages "
                "(gc may take them for orphans): %s",
                len(held),
                exc,
            )
            return
        self._held, self._written = held, now

    def release(self) -> None:
        """Give the lease up (the driver closes)."""
        if self.store is None or not self._held:
            return
        try:
            self.store.release(self.id)
        except OSError as exc:  # it expires by itself (hippo.lease-interval)
            logger.warning("could not remove this driver's checkpoint lease: %s", exc)
