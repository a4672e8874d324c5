"""What the driver has in flight on each worker: the one owner of submitted, queued and running
stages.

A stage is *in flight* from the moment the driver hands it to a worker until its report arrives
(or the driver gives it up: its worker left, it was taken back, the study closed). Each worker
runs its flights in the order they were submitted: the head runs, the others wait behind it.
:class:`Flights` is the only writer of that state; placement reads it
(:mod:`~hippo_dask.execution._placement`), submission adds to it, report handling takes from it.
It is plain data: no Dask, no storage, so the simulator in ``benchmarks/`` keeps its flights in
the same object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hippo_dask.execution._spec import Point
from hippo_dask.plan import Node

__all__ = ["Flight", "Flights"]


@dataclass(eq=False)
class Flight:
    """A stage in flight: submitted to ``worker`` as Dask task ``key``, not reported yet.

    ``points`` are the steps it stops at (saves, evaluates), including those added while it
    runs; ``chain`` the keys of the chain it was submitted in.
    """

    key: str
    node: Node
    start: int
    stop: int
    worker: str
    points: dict[int, Point]
    future: Any = None
    chain: list[str] = field(default_factory=list)
    #: Queued behind another chain on its worker for order alone (not continuing from it):
    #: another worker may take it over while it has not started.
    lookahead: bool = False
    #: When it started, as far as the driver can tell (its clock), else ``None``.
    began: float | None = None

    @property
    def steps(self) -> int:
        """Steps it trains."""
        return self.stop - self.start

    def seconds(self) -> float:
        """Its estimated training time: steps times the node's profiled seconds per step."""
        return self.steps * self.node.profile()

    def seconds_left(self, now: float) -> float:
        """What is left of :meth:`seconds` at ``now``: all of it until it is known to have
        started."""
        if self.began is None:
            return self.seconds()
        return max(0.0, self.began + self.seconds() - now)


class Flights:
    """Every stage in flight, by key and by worker (see the module doc)."""

    def __init__(self) -> None:
        self._by_key: dict[str, Flight] = {}
        # Worker -> keys submitted there, in order. A key stays here after its report until
        # :meth:`settle` (the next scheduling pass), as the driver learns the order only then.
        self._queues: dict[str, list[str]] = {}

    # -- reading --------------------------------------------------------------------------------

    def get(self, key: Any) -> Flight | None:
        """The flight of ``key``, or ``None`` when it is not in flight."""
        return self._by_key.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Flight]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    def keys(self) -> list[str]:
        """Keys of every flight, in submission order."""
        return list(self._by_key)

    def workers(self) -> list[str]:
        """Workers that were given flights (some may have reported them all)."""
        return list(self._queues)

    def queue(self, worker: str) -> list[Flight]:
        """``worker``'s flights in the order it runs them (head first)."""
        return [f for k in self._queues.get(worker, ()) if (f := self._by_key.get(k)) is not None]

    def queued_keys(self, worker: str) -> list[str]:
        """Keys submitted to ``worker``, in order, as of the last :meth:`settle`."""
        return list(self._queues.get(worker, ()))

    def busy(self, worker: str) -> bool:
        """Whether ``worker`` has anything queued (as of the last :meth:`settle`)."""
        return bool(self._queues.get(worker))

    def last(self, worker: str) -> str | None:
        """The key ``worker`` runs last, or ``None``."""
        keys = self._queues.get(worker)
        return keys[-1] if keys else None

    def single_chain(self, worker: str) -> bool:
        """Whether ``worker`` runs exactly one chain, none of whose stages has reported: work
        may be queued behind it (lookahead)."""
        keys = self._queues.get(worker, [])
        last = self._by_key.get(keys[-1]) if keys else None
        return last is not None and last.chain == keys

    def checkpoint_names(self) -> set[str]:
        """Names of the checkpoint files the flights will write."""
        return {
            p.checkpoint
            for f in self._by_key.values()
            for p in f.points.values()
            if p.checkpoint is not None
        }

    # -- writing --------------------------------------------------------------------------------

    def add_chain(self, worker: str, flights: Iterable[Flight]) -> list[str]:
        """Queue ``flights`` (one chain, in order) at the end of ``worker``'s queue."""
        chain = list(flights)
        keys = [f.key for f in chain]
        queue = self._queues.setdefault(worker, [])
        for f in chain:
            f.chain = keys
            self._by_key[f.key] = f
            queue.append(f.key)
        return keys

    def add_points(self, key: str, points: Iterable[Point]) -> Flight | None:
        """Merge ``points`` into flight ``key``'s (see :meth:`Point.merge`)."""
        flight = self._by_key.get(key)
        if flight is None:
            return None
        for p in points:
            old = flight.points.get(p.step)
            flight.points[p.step] = p if old is None else old.merge(p)
        return flight

    def landed(self, key: str) -> Flight | None:
        """Flight ``key`` reported (or ended some other way): it leaves, and is returned."""
        return self._by_key.pop(key, None)

    def settle(self, now: float) -> None:
        """Drop reported keys from the queues; a head whose predecessor reported has begun
        (at ``now``) and cannot be taken back any more."""
        for worker in list(self._queues):
            keys = self._queues[worker] = [k for k in self._queues[worker] if k in self._by_key]
            if keys and self._by_key[keys[0]].began is None:
                head = self._by_key[keys[0]]
                head.began, head.lookahead = now, False

    def clear_queue(self, worker: str) -> None:
        """Forget ``worker``'s order (its flights stay until given up): Dask gave up on one of
        its tasks, so the worker is gone or going."""
        if worker in self._queues:
            self._queues[worker] = []

    def take_back(self, worker: str, first: str) -> list[Flight]:
        """``worker`` gave back ``first`` and so everything queued after it: they leave."""
        queue = self._queues.get(worker, [])
        if first not in queue:
            return []
        cut = queue.index(first)
        taken = [f for k in queue[cut:] if (f := self._by_key.pop(k, None)) is not None]
        self._queues[worker] = queue[:cut]
        return taken

    def refused(self, key: str, now: float) -> None:
        """The worker refused to give ``key`` back: it has started; ask no more."""
        flight = self._by_key.get(key)
        if flight is not None:
            flight.lookahead = False
            flight.began = flight.began if flight.began is not None else now

    def lose(self, workers: Iterable[str]) -> list[Flight]:
        """``workers`` left: their flights leave, and are returned."""
        gone = set(workers)
        lost = [f for f in self._by_key.values() if f.worker in gone]
        for f in lost:
            del self._by_key[f.key]
        for worker in gone:
            self._queues.pop(worker, None)
        return lost

    def clear(self) -> list[Flight]:
        """Everything leaves (the study closes); returns what was in flight."""
        flights = list(self._by_key.values())
        self._by_key.clear()
        self._queues.clear()
        return flights
