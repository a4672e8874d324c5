"""Who waits for what: the futures ``study.train`` awaits, and the failures they get.

A waiter waits for the metrics of one state, ``(node, step)``. It is answered from the plan once
the state's metrics are there, or fails with the error of a stage it needs (and so does every
later request for that state), or with the study's error when the study stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from hippo_dask.errors import TrialFailedError
from hippo_dask.plan import Node

__all__ = ["Waiters", "depends"]

State = tuple[Node, int]


def depends(node: Node, step: int, on: Node, start: int) -> bool:
    """Whether the state after ``step`` along ``node``'s path needs a step that a stage of ``on``
    starting at ``start`` trains."""
    child: Node | None = None
    for current in node.ancestors(inclusive=True):
        if current is on:
            reach = step if child is None else child.start
            return reach > start
        child = current
    return False


class Waiters:
    """The futures waiting for states' metrics, and the states that failed for good."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: dict[State, list[asyncio.Future[dict[str, float]]]] = {}
        self._failed: dict[State, TrialFailedError] = {}

    def add(self, node: Node, step: int) -> asyncio.Future[dict[str, float]]:
        """A future for the metrics after ``step`` steps along ``node``'s path."""
        future: asyncio.Future[dict[str, float]] = self.loop.create_future()
        self._waiting.setdefault((node, step), []).append(future)
        return future

    def failed(self, node: Node, step: int) -> TrialFailedError | None:
        """The error that state failed with, or ``None``."""
        return self._failed.get((node, step))

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __iter__(self) -> Iterator[State]:
        return iter(list(self._waiting))

    def count(self) -> int:
        """How many futures wait."""
        return sum(len(w) for w in self._waiting.values())

    def wanted(self) -> list[State]:
        """What somebody waits for that the plan does not hold yet and did not fail.

        Only these are planned: requests that an earlier, interrupted run or another process
        left pending in the shared plan are theirs to ask for again.
        """
        return [
            key
            for key, waiters in self._waiting.items()
            if waiters and key[1] not in key[0].metrics and key not in self._failed
        ]

    def resolve(self, node: Node, step: int) -> None:
        """Answer the waiters of ``(node, step)`` with the plan's metrics there."""
        metrics = node.metrics.get(step)
        for waiter in self._waiting.pop((node, step), []):
            if not waiter.done() and metrics is not None:
                waiter.set_result(dict(metrics))

    def resolve_known(self) -> None:
        """Answer every waiter whose metrics the plan now holds."""
        for node, step in list(self._waiting):
            if step in node.metrics:
                self.resolve(node, step)

    def fail(self, node: Node, step: int, error: TrialFailedError) -> None:
        """``(node, step)`` failed for good: its waiters, and later requests for it, get
        ``error``."""
        self._failed[(node, step)] = error
        for waiter in self._waiting.pop((node, step), []):
            if not waiter.done():
                waiter.set_exception(error)

    def fail_needing(self, on: Node, start: int, error: TrialFailedError) -> None:
        """Fail every waited-for state that needs a step a stage of ``on`` from ``start``
        trains."""
        for node, step in list(self._waiting):
            if depends(node, step, on, start):
                self.fail(node, step, error)

    def fail_all(self, error: BaseException) -> None:
        """Every waiter gets ``error`` (the study stops)."""
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        self._waiting.clear()

    def cancel_all(self) -> None:
        """Every waiter is cancelled (the driver closes)."""
        for waiters in self._waiting.values():
            for w in waiters:
                if not w.done():
                    w.cancel()
        self._waiting.clear()
