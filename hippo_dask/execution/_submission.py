"""How the driver hands a chain of stages to a worker: Dask keys, points, sources.

A chain is submitted as one Dask task per stage, pinned to its worker and linked by
dependencies, so the trainer passes from stage to stage in the worker's memory. What a stage
reports depends only on the stage, never on the chain it was put in, so two drivers that plan
the same stage submit the same Dask key; a stage planned again after a loss or a withdrawal runs
under a new one.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback as tb_module
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hippo_dask.execution._credentials import ship
from hippo_dask.execution._identity import state_digest
from hippo_dask.execution._running import Running
from hippo_dask.execution._state import DriverState
from hippo_dask.execution._spec import Point, StageSpec
from hippo_dask.execution._worker import run_stage
from hippo_dask.plan import Node
from hippo_dask.stages import Stage, StageTree

if TYPE_CHECKING:
    from hippo_dask.storage import CheckpointStore

__all__ = ["GPU", "Submission"]

logger = logging.getLogger("hippo_dask.execution._driver")

#: The Dask worker resource every stage asks for one of: a GPU (or a slot on a CPU machine).
GPU = "GPU"


class Submission(DriverState):
    """The driver's submission methods (a part of :class:`~hippo_dask.execution.Driver`)."""

    def _digest(self, node: Node, step: int) -> str:
        key = (node.owner.id, step)
        found = self._digests.get(key)
        if found is None:
            found = self._digests[key] = state_digest(node.owner, step, self.salt)
        return found

    def _checkpoint_name(self, node: Node, step: int) -> str:
        return self._digest(node, step)[:40]

    def _sources(self, stage: Stage) -> tuple[tuple[int, str], ...]:
        """Checkpoints on the stage's path at or before its start, latest first (up to 3)."""
        found: list[tuple[int, str]] = []
        if stage.load_from is not None:
            found.append((stage.start, stage.load_from))
        node: Node | None = stage.node
        limit = stage.start
        while node is not None and len(found) < 3:
            for step in reversed(node.checkpoint_steps):
                if step <= limit and (step, node.checkpoints[step]) not in found:
                    found.append((step, node.checkpoints[step]))
                    if len(found) >= 3:
                        break
            limit = node.start
            node = node.parent
        found.sort(key=lambda item: -item[0])
        return tuple(found)

    def _points(self, stage: Stage) -> tuple[Point, ...]:
        """Where the stage stops to report: its end (checkpoint, and metrics if requested).

        Every stage end is a request's end or a branch point, so it is saved: other stages
        resume there. What a stage reports depends only on the stage, never on the chain it
        was put in, so two drivers that plan the same stage submit the same Dask key.
        """
        points = {stage.stop: Point(stage.stop, stage.evaluate,
                                    self._checkpoint_name(stage.node, stage.stop))}
        # Long stages also save every checkpoint-interval seconds of (profiled) training, at
        # steps fixed in advance: if the worker dies, the driver finds them by name.
        every = max(1, int(self.checkpoint_interval / max(stage.node.profile(), 1e-9)))
        first = (stage.start // every + 1) * every
        for step in range(first, stage.stop, every):
            points[step] = Point(step, False, self._checkpoint_name(stage.node, step))
        if self.eval_every:
            first = (stage.start // self.eval_every + 1) * self.eval_every
            for step in range(first, stage.stop, self.eval_every):
                if step not in stage.node.metrics:
                    saved = points.get(step)
                    points[step] = Point(step, True, saved.checkpoint if saved else None)
        return tuple(points[s] for s in sorted(points))

    def _stage_key(self, stage: Stage, points: tuple[Point, ...]) -> str:
        h = hashlib.sha256()
        h.update(self._digest(stage.node, stage.start).encode())
        h.update(self._digest(stage.node, stage.stop).encode())
        h.update(repr(points).encode())
        key = f"hippo-stage-{stage.node.owner.id[:8]}-{stage.start}-{stage.stop}-{h.hexdigest()[:16]}"
        attempt = self._attempts.get(key)
        return key if attempt is None else f"{key}~{attempt}"

    def _submit(self, chain: list[Stage], worker: str, tree: StageTree, after: Running | None = None) -> None:
        previous = after.future if after is not None else None
        # The chain's first stage continues from ``after`` only when its state comes from it;
        # a chain queued behind another (lookahead) depends on it for order alone.
        chained = after is not None and chain[0].after is not None
        lookahead = after is not None and not chained
        began = None if self._queued.get(worker) else time.monotonic()
        keys: list[str] = []
        for stage in chain:
            points = self._points(stage)
            key = self._stage_key(stage, points)
            spec = StageSpec(
                key=key,
                trainer_cls=self.trainer_cls,
                config=self.config_of(stage.node.owner),
                trial=stage.node.owner,
                start=stage.start,
                stop=stage.stop,
                start_digest=self._digest(stage.node, stage.start),
                stop_digest=self._digest(stage.node, stage.stop),
                salt=self.salt,
                points=points,
                store=self._task_store(),
                sources=self._sources(stage),
                storage_timeout=self.storage_timeout,
                chained=chained,
            )
            deps = [previous] if previous is not None else []
            future = self.client.submit(
                run_stage, spec, *deps, key=key, workers=[worker], allow_other_workers=False,
                resources={GPU: 1}, priority=int(tree.remaining(stage)),
            )
            running = Running(key, stage.node, stage.start, stage.stop, worker,
                               {p.step: p for p in points}, future, lookahead=lookahead,
                               began=began)
            lookahead, began = False, None
            self._running[key] = running
            if self._recorder is not None:
                self._recorder.submitted(running)
            self._queued.setdefault(worker, []).append(key)
            keys.append(key)
            future.add_done_callback(self._callback(key))
            previous = future
            chained = True
        for key in keys:
            self._running[key].chain = keys
        logger.info("chain of %d stages (%d steps) to %s", len(chain), sum(s.steps for s in chain), worker)

    def _callback(self, key: str) -> Callable[[Any], None]:
        loop = self.loop

        def done(future: Any) -> None:  # runs in Dask's callback thread
            try:
                payload: tuple[str, Any, str] = ("ok", future.result(), "")
            except BaseException as exc:  # noqa: BLE001 - handed over to the loop
                text = ""
                try:
                    text = "".join(tb_module.format_tb(future.traceback()))
                except Exception:  # noqa: BLE001
                    pass
                payload = ("error", exc, text)
            try:
                loop.call_soon_threadsafe(self._done, key, payload)
            except RuntimeError:
                pass  # the loop is gone: the study was closed

        return done

    def _task_store(self) -> CheckpointStore:
        """The store as tasks carry it: a reference, with the store itself (and the credentials
        in its settings) sent to the workers once, not in every task."""
        if self._shipped_store is None:
            self._shipped_store = ship(self.client, self.store)
        return self._shipped_store

    def _renew_key(self, key: str) -> None:
        """The stage of ``key`` runs under a new name if submitted again: Dask may still hold
        (or be forgetting) the old one."""
        base = key.split("~", 1)[0]
        self._attempts[base] = self._attempts.get(base, 0) + 1
