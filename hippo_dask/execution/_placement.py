"""Where the driver puts ready chains: idle workers, lookahead queues, worker lifetimes.

Each idle GPU worker gets the longest chain that can start now (the stage tree's
:meth:`~hippo_dask.stages.StageTree.paths`, critical path first). With no worker idle, a ready
chain is queued behind the busy worker with the least work left (lookahead), so it starts
without waiting for the driver; when another worker goes idle first, a queued chain that has not
started is taken back and planned again. Workers that retire on their own (``dask worker
--lifetime``, as SLURM jobs' workers do before their wall time) only get the stages whose
estimated time fits in what is left of their lifetime (:func:`fitting`). A step a running stage
will pass but that somebody now needs (a new request, a new branch) is added to that stage
through ``Client.run``, so it is saved instead of trained again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import Any

from hippo_dask.execution._running import Running
from hippo_dask.execution._state import DriverState
from hippo_dask.execution._spec import Point
from hippo_dask.execution._worker import add_points_async, withdraw_async
from hippo_dask.plan import Node
from hippo_dask.stages import Stage, StageTree
from hippo_dask.storage._records import CANCELLED

__all__ = ["Placement", "fitting", "worker_deadline"]

logger = logging.getLogger("hippo_dask.execution._driver")


def worker_deadline(dask_worker: Any) -> tuple[float, float, int] | None:
    """On a worker: ``(unix time it retires, its lifetime, pid)``, or ``None`` without a lifetime.

    ``dask worker --lifetime`` counts from the worker's start, which Dask does not record; the
    process's creation time is a little earlier, so the deadline errs on the early side.
    """
    lifetime = getattr(dask_worker, "lifetime", None)
    if not lifetime:
        return None
    import psutil

    return psutil.Process().create_time() + float(lifetime), float(lifetime), os.getpid()


def fitting(chain: list[Stage], seconds_left: float, lifetime: float | None = None) -> list[Stage]:
    """The longest head of ``chain`` whose estimated time fits in ``seconds_left``.

    A stage estimated longer than a worker's whole ``lifetime`` fits no such worker, ever; it may
    start alone on one with at least half its lifetime left, and progresses through its periodic
    checkpoints (``hippo.checkpoint-interval``) from worker to worker.
    """
    if math.isinf(seconds_left):
        return chain
    total = 0.0
    out: list[Stage] = []
    for stage in chain:
        total += stage.seconds
        if total > seconds_left:
            break
        out.append(stage)
    if not out and chain and lifetime is not None and chain[0].seconds > lifetime \
            and seconds_left >= lifetime / 2:
        out = chain[:1]
    return out


class Placement(DriverState):
    """The driver's placement methods (a part of :class:`~hippo_dask.execution.Driver`)."""

    def _learn_deadlines(self, workers: list[str]) -> None:
        """Ask workers seen for the first time when they retire (``--lifetime``), once each."""
        new = [w for w in workers if w not in self._deadlines]
        if not new:
            return
        try:
            found = self.client.run(worker_deadline, workers=new, on_error="return")
        except Exception as exc:  # noqa: BLE001 - a worker that left: ask the others next time
            logger.debug("could not ask workers %s for their lifetime: %s", new, exc)
            return
        for worker, value in found.items():
            if isinstance(value, BaseException):
                continue
            if value is None:
                self._deadlines[worker] = None
                continue
            deadline, lifetime, pid = value
            if pid == os.getpid():  # a worker thread of this process: its start is unknown
                deadline = time.time() + lifetime
            self._deadlines[worker] = (deadline, lifetime)
            logger.info("worker %s retires in %.0f s (lifetime %.0f s)", worker,
                        deadline - time.time(), lifetime)

    def _left(self, worker: str) -> tuple[float, float | None]:
        """Seconds until ``worker`` retires (infinite without a lifetime), and its lifetime."""
        if worker in self._closing:
            return 0.0, None
        known = self._deadlines.get(worker)
        if known is None:
            return math.inf, None
        return known[0] - time.time(), known[1]

    def _ahead(self, worker: str) -> float:
        """Estimated seconds of the work already queued on ``worker`` (all of the running stage)."""
        return sum(r.seconds() for k in self._queued.get(worker, [])
                   if (r := self._running.get(k)) is not None)

    def _fit(self, chain: list[Stage], worker: str) -> list[Stage]:
        left, lifetime = self._left(worker)
        if math.isinf(left):
            return chain
        return fitting(chain, left - self._ahead(worker), lifetime)

    def _place(self, tree: StageTree, workers: list[str]) -> int:
        """Submit the tree's ready chains; return how many found no idle worker."""
        self._ask_running_for_branch_points(tree)
        idle = [w for w in workers if not self._queued.get(w)]
        waiting = 0
        for chain in tree.paths():
            head = chain[0]
            if head.parent is not None:
                continue  # waits for a stage of another chain
            if head.after is not None:
                token, step = head.after
                source = self._running.get(token)
                if source is None or step != source.stop or source.worker not in workers:
                    continue  # a mid-stage state: ready once that stage reports
                if source.key != self._queued.get(source.worker, [None])[-1]:
                    continue  # its worker has queued more work since; wait for the checkpoint
                fitted = self._fit(chain, source.worker)
                if fitted:  # else its worker retires first: wait for the checkpoint
                    self._submit(fitted, source.worker, tree, after=source)
                continue
            # Where it fits (rather than where it never can), the most of the chain, on the
            # worker with the least time left.
            best: tuple[tuple[bool, float, float], str, list[Stage]] | None = None
            for worker in idle:
                fitted = self._fit(chain, worker)
                if fitted:
                    seconds, left = sum(s.seconds for s in fitted), self._left(worker)[0]
                    rank = (seconds > left, -seconds, left)
                    if best is None or rank < best[0]:
                        best = (rank, worker, fitted)
            if best is not None:
                idle.remove(best[1])
                self._submit(best[2], best[1], tree)
            else:
                waiting += 1
                self._queue_behind(chain, workers, tree)
        return waiting

    def _queue_behind(self, chain: list[Stage], workers: list[str], tree: StageTree) -> None:
        """Queue a ready chain behind a busy worker's only chain, so the worker goes on without
        waiting for the driver when it finishes; the least loaded worker that has the time gets it."""
        candidates = []
        for worker in workers:
            keys = self._queued.get(worker, [])
            if keys and keys[-1] in self._running and self._running[keys[-1]].chain == keys:
                fitted = self._fit(chain, worker)
                if fitted:
                    left = sum(r.stop - r.start for k in keys if (r := self._running.get(k)) is not None)
                    candidates.append((left, worker, fitted))
        if candidates:
            _, worker, fitted = min(candidates, key=lambda c: (c[0], c[1]))
            self._submit(fitted, worker, tree, after=self._running[self._queued[worker][-1]])

    def _withdraw_for_idle(self, workers: list[str]) -> bool:
        """While a worker is idle, take back the chains queued behind busy workers.

        Lookahead (:meth:`_queue_behind`) queues a ready chain behind the busy worker expected
        to free first, so the chain starts without waiting for the driver. When another worker
        goes idle first, the chain would wait there while that worker does nothing. Chains
        that have not started and have at least ``hippo.withdraw-after`` estimated seconds of
        work ahead of them are asked back from their workers, all in one broadcast; a worker
        refuses for a chain that has started. The ones given back are planned again with the
        rest, critical path first, once the answers are in. Returns whether it asked.
        """
        if self._withdrawing:
            return False
        idle = [w for w in workers if not self._queued.get(w)]
        if not idle:
            return False
        now = time.monotonic()
        asks: dict[str, list[str]] = {}
        for worker in workers:
            keys = self._queued.get(worker, [])
            ahead = 0.0
            for i, key in enumerate(keys):
                r = self._running[key]
                if r.lookahead and ahead >= self.withdraw_after:
                    seconds = sum(self._running[k].seconds() for k in keys[i:])
                    if any(self._left(w)[0] >= seconds for w in idle):
                        asks[worker] = keys[i:]
                    break
                ahead += r.seconds_left(now)
        if not asks:
            return False
        self._withdrawing = True
        self._withdrawal = self.loop.create_task(self._withdraw(asks))
        return True

    async def _withdraw(self, asks: dict[str, list[str]]) -> None:
        answers: dict[str, Any] = {}
        try:
            answers = await asyncio.to_thread(
                self.client.run, withdraw_async, asks, workers=list(asks), on_error="return")
        except Exception as exc:  # noqa: BLE001 - a worker left: its stages are planned again
            logger.debug("could not ask workers %s for queued stages back: %s", list(asks), exc)
        finally:
            self._withdrawing = False
        if self._closed:
            return
        try:
            self._took_back(asks, answers)
        except Exception as exc:  # noqa: BLE001 - never leave a waiter hanging
            logger.exception("taking back queued stages failed; stopping the study")
            self._fail_everyone(exc)
            return
        self.kick()

    def _took_back(self, asks: dict[str, list[str]], answers: dict[str, Any]) -> None:
        """Forget what the workers gave back; mark what they refused as started.

        A worker that gave back a stage skips it, and every stage after it on that worker
        depends on it (they continue from it, or from one another), so they are all forgotten
        here, including those chained onto it while the driver was asking. Their futures are
        not cancelled: Dask would cancel, with them, the same stage another driver on this
        client waits for (a shared key) and the stages depending on them, which reads as a
        worker lost. Each ends on its worker with a skipped report, which nobody reads.
        """
        now = time.monotonic()
        taken: list[Running] = []
        for worker, keys in asks.items():
            queue = self._queued.get(worker, [])
            if answers.get(worker) is True:
                if keys[0] in queue:
                    cut = queue.index(keys[0])
                    taken += [r for k in queue[cut:] if (r := self._running.pop(k, None)) is not None]
                    self._queued[worker] = queue[:cut]
            elif (r := self._running.get(keys[0])) is not None:
                r.lookahead = False  # it has started (or its worker left): ask no more
                r.began = r.began if r.began is not None else now
        for r in taken:
            self._renew_key(r.key)
            self._ended(r, CANCELLED)
        if taken:
            logger.info("took back %d queued stage(s) for idle workers", len(taken))

    def _cover_pending_with_running(self, wanted: list[tuple[Node, int]]) -> set[tuple[Node, int]]:
        """Requests a running stage passes: ask it to evaluate there too."""
        covered: set[tuple[Node, int]] = set()
        by_node: dict[Node, list[Running]] = {}
        for r in self._running.values():
            by_node.setdefault(r.node, []).append(r)
        for node, step in wanted:
            for r in by_node.get(node, ()):
                if r.start < step <= r.stop:
                    point = r.points.get(step)
                    if point is None or not point.evaluate or point.checkpoint is None:
                        self._add_points(r, [Point(step, True, self._checkpoint_name(node, step))])
                    covered.add((node, step))
                    break
        return covered

    def _ask_running_for_branch_points(self, tree: StageTree) -> None:
        for stage in tree.stages:
            if stage.after is None:
                continue
            token, step = stage.after
            r = self._running.get(token)
            if r is None:
                continue
            point = r.points.get(step)
            if point is None or point.checkpoint is None:
                self._add_points(r, [Point(step, False, self._checkpoint_name(r.node, step))])

    def _add_points(self, r: Running, points: list[Point]) -> None:
        for p in points:
            old = r.points.get(p.step)
            r.points[p.step] = p if old is None else Point(
                p.step, old.evaluate or p.evaluate, old.checkpoint or p.checkpoint
            )
        logger.debug("asking stage %s for points %s", r.key, [p.step for p in points])
        self.client.run(add_points_async, r.key, points, workers=[r.worker], wait=False)
