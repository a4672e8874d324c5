"""How a placement decision becomes Dask tasks: keys, points, sources, one task per stage.

A chain is submitted as one Dask task per stage, pinned to its worker and linked by
dependencies, so the trainer passes from stage to stage in the worker's memory. What a stage
reports depends only on the stage, never on the chain it was put in, so two drivers that plan
the same stage submit the same Dask key; a stage planned again after a loss, a retry or a
withdrawal runs under a new one (:meth:`Submission.renew`).
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback as tb_module
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hippo_dask.execution._dask import DaskCalls
from hippo_dask.execution._flights import Flight, Flights
from hippo_dask.execution._identity import state_digest
from hippo_dask.execution._placement import AddPoint, Submit
from hippo_dask.execution._spec import Point, StageSpec
from hippo_dask.execution._worker import run_stage
from hippo_dask.plan import Node, Stage, StageTree
from hippo_dask.trial import Trial

if TYPE_CHECKING:
    import asyncio

    from hippo_dask.execution._recorder import Recorder
    from hippo_dask.storage import CheckpointStore
    from hippo_dask.trainer import Trainer

__all__ = ["Payload", "Submission", "stage_points"]

logger = logging.getLogger("hippo_dask.execution._driver")

#: What a finished stage future hands the driver's loop: ("ok", report, "") or
#: ("error", exception, traceback text).
Payload = tuple[str, Any, str]


def stage_points(
    stage: Stage, checkpoint_interval: float, eval_every: int | None = None
) -> dict[int, tuple[bool, bool]]:
    """Where a stage stops: step -> ``(evaluate, save)``.

    Every stage end is a request's end or a branch point, so it is saved (other stages resume
    there), and evaluated when a request ends there. Long stages also save every
    ``checkpoint_interval`` seconds of (profiled) training, at steps fixed in advance, so a
    worker that dies loses little and the driver finds those files by name. With
    ``eval_every``, metrics are also measured every that many steps (learning curves).
    """
    points = {stage.stop: (stage.evaluate, True)}
    every = max(1, int(checkpoint_interval / max(stage.node.profile(), 1e-9)))
    first = (stage.start // every + 1) * every
    for step in range(first, stage.stop, every):
        points[step] = (False, True)
    if eval_every:
        first = (stage.start // eval_every + 1) * eval_every
        for step in range(first, stage.stop, eval_every):
            if step not in stage.node.metrics:
                points[step] = (True, points.get(step, (False, False))[1])
    return dict(sorted(points.items()))


class Submission:
    """Carries out :class:`~hippo_dask.execution._placement.Submit` and
    :class:`~hippo_dask.execution._placement.AddPoint` actions on Dask, adding to the flights.

    Owns the names: state digests, checkpoint names and Dask keys (with their attempts).
    ``on_done(key, payload)`` is called on ``loop`` when a stage's future finishes.
    """

    def __init__(
        self,
        *,
        dask: DaskCalls,
        flights: Flights,
        loop: asyncio.AbstractEventLoop,
        trainer_cls: type[Trainer],
        config_of: Callable[[Trial], dict[str, Any]],
        fingerprint: str,
        checkpoint_interval: float,
        eval_every: int | None,
        storage_timeout: float,
        on_done: Callable[[str, Payload], None],
        recorder: Recorder | None,
    ) -> None:
        self.dask = dask
        self.flights = flights
        self.loop = loop
        self.trainer_cls = trainer_cls
        self.config_of = config_of
        self.fingerprint = fingerprint
        self.checkpoint_interval = checkpoint_interval
        self.eval_every = eval_every
        self.storage_timeout = storage_timeout
        self.on_done = on_done
        self.recorder = recorder
        #: The checkpoint store as tasks carry it (set once installed on the workers).
        self.store: CheckpointStore | None = None
        self._digests: dict[tuple[str, int], str] = {}
        self._attempts: dict[str, int] = {}  # keys resubmitted get a new name

    # -- names ------------------------------------------------------------------------------------

    def digest(self, node: Node, step: int) -> str:
        """The digest of the state after ``step`` steps along ``node``'s path."""
        key = (node.owner.id, step)
        found = self._digests.get(key)
        if found is None:
            found = self._digests[key] = state_digest(node.owner, step, self.fingerprint)
        return found

    def checkpoint_name(self, node: Node, step: int) -> str:
        """The name of the checkpoint file of that state."""
        return self.digest(node, step)[:40]

    def renew(self, key: str) -> None:
        """The stage of ``key`` runs under a new name if submitted again: Dask may still hold
        (or be forgetting) the old one."""
        base = key.split("~", 1)[0]
        self._attempts[base] = self._attempts.get(base, 0) + 1

    def _key(self, stage: Stage, points: tuple[Point, ...]) -> str:
        h = hashlib.sha256()
        h.update(self.digest(stage.node, stage.start).encode())
        h.update(self.digest(stage.node, stage.stop).encode())
        h.update(repr(points).encode())
        key = (
            f"hippo-stage-{stage.node.owner.id[:8]}-{stage.start}-{stage.stop}-{h.hexdigest()[:16]}"
        )
        attempt = self._attempts.get(key)
        return key if attempt is None else f"{key}~{attempt}"

    def _points(self, stage: Stage) -> tuple[Point, ...]:
        return tuple(
            Point(step, evaluate, self.checkpoint_name(stage.node, step) if save else None)
            for step, (evaluate, save) in stage_points(
                stage, self.checkpoint_interval, self.eval_every
            ).items()
        )

    @staticmethod
    def _sources(stage: Stage) -> tuple[tuple[int, str], ...]:
        """Checkpoints on the stage's path at or before its start, latest first (up to 3)."""
        found: list[tuple[int, str]] = []
        if stage.load_from is not None:
            found.append((stage.start, stage.load_from))
        limit = stage.start
        for node in stage.node.ancestors(inclusive=True):
            if len(found) >= 3:
                break
            for step in reversed(node.checkpoint_steps):
                if step <= limit and (step, node.checkpoints[step]) not in found:
                    found.append((step, node.checkpoints[step]))
                    if len(found) >= 3:
                        break
            limit = node.start
        found.sort(key=lambda item: -item[0])
        return tuple(found)

    # -- actions ----------------------------------------------------------------------------------

    def submit(self, action: Submit, tree: StageTree) -> None:
        """Submit ``action.chain`` to ``action.worker`` as one pinned task per stage."""
        assert self.store is not None, "install the store on the workers first"
        worker, chain = action.worker, action.chain
        after: Flight | None = None
        if action.continues is not None:
            after = self.flights.get(action.continues)
        elif action.behind:
            last = self.flights.last(worker)
            after = self.flights.get(last) if last is not None else None
        previous = after.future if after is not None else None
        # The chain's first stage continues from ``after`` only when its state comes from it;
        # a chain queued behind another (lookahead) depends on it for order alone.
        chained = after is not None and chain[0].after is not None
        lookahead = after is not None and not chained
        began = None if self.flights.busy(worker) else time.monotonic()
        flights: list[Flight] = []
        for stage in chain:
            points = self._points(stage)
            key = self._key(stage, points)
            spec = StageSpec(
                key=key,
                trainer_cls=self.trainer_cls,
                config=self.config_of(stage.node.owner),
                trial=stage.node.owner,
                start=stage.start,
                stop=stage.stop,
                start_digest=self.digest(stage.node, stage.start),
                stop_digest=self.digest(stage.node, stage.stop),
                fingerprint=self.fingerprint,
                points=points,
                store=self.store,
                sources=self._sources(stage),
                storage_timeout=self.storage_timeout,
                chained=chained,
            )
            deps = [previous] if previous is not None else []
            future = self.dask.submit(
                run_stage, spec, *deps, key=key, worker=worker, priority=int(tree.remaining(stage))
            )
            flight = Flight(
                key,
                stage.node,
                stage.start,
                stage.stop,
                worker,
                {p.step: p for p in points},
                future,
                lookahead=lookahead,
                began=began,
            )
            lookahead, began = False, None
            flights.append(flight)
            if self.recorder is not None:
                self.recorder.submitted(flight)
            previous = future
            chained = True
        self.flights.add_chain(worker, flights)
        for flight in flights:
            flight.future.add_done_callback(self._callback(flight.key))
        logger.info(
            "chain of %d stages (%d steps) to %s", len(chain), sum(s.steps for s in chain), worker
        )

    def add_point(self, action: AddPoint) -> None:
        """Have flight ``action.key`` also stop (save, maybe evaluate) at ``action.step``."""
        flight = self.flights.get(action.key)
        if flight is None:
            return
        point = Point(action.step, action.evaluate, self.checkpoint_name(flight.node, action.step))
        self.flights.add_points(action.key, [point])
        logger.debug("asking stage %s for points %s", action.key, [action.step])
        self.dask.add_points(flight.worker, action.key, [point])

    def _callback(self, key: str) -> Callable[[Any], None]:
        loop, on_done = self.loop, self.on_done

        def done(future: Any) -> None:  # runs in Dask's callback thread
            try:
                payload: Payload = ("ok", future.result(), "")
            except BaseException as exc:  # noqa: BLE001 - handed over to the loop
                text = ""
                try:
                    text = "".join(tb_module.format_tb(future.traceback()))
                except Exception:  # noqa: BLE001
                    pass
                payload = ("error", exc, text)
            try:
                loop.call_soon_threadsafe(on_done, key, payload)
            except RuntimeError:
                pass  # the loop is gone: the study was closed

        return done
