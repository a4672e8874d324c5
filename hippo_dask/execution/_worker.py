"""The function a Dask worker runs for one stage, and each worker's tables of stages.

A critical path runs on one worker as a chain of stage tasks. Instead of handing the trainer to
Dask as task data (which would pickle a model between tasks), each stage leaves its trainer in
its worker's :class:`StageTables` under the digest of the state it reached; the next stage of
the chain takes it from there. If it is not there (another worker, a restarted process, an
evicted entry) the stage resumes from a checkpoint instead: slower, never wrong, because
entries are matched by state digest.

The driver can add points to a running stage (a step somebody now needs a checkpoint or metrics
at) through :func:`add_points_async`, which ``Client.run`` calls on the worker while the stage
runs in the worker's executor thread. It can also take back stages queued here that have not
started (:func:`withdraw_async`), to run them on a worker that went idle first: a stage claims
its key when it starts, under the same lock, so a stage either runs here or nowhere here.

The tables live in a Dask worker plugin the driver registers (:data:`TABLES`), one per worker,
so two workers in one process (an in-process cluster) never share a trainer or a claim.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from hippo_dask.errors import CheckpointNotFoundError, CorruptCheckpointError
from hippo_dask.execution._identity import state_digest
from hippo_dask.execution._spec import Point, PointResult, StageReport, StageSpec
from hippo_dask.seq import native
from hippo_dask.storage import with_retries
from hippo_dask.trainer import Trainer, check_metrics

__all__ = [
    "CHECKPOINT_FORMAT",
    "TABLES",
    "StageTables",
    "add_points_async",
    "pending_points",
    "run_stage",
    "withdraw_async",
    "worker_deadline",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
#: Trainers a worker keeps in memory for the next stage of a chain.
_LIVE_CAPACITY = 2
#: A stage trains in calls of about this many seconds, so points the driver adds while it runs
#: (a step somebody now needs) land in time. Trainers must give the same result for
#: ``train(a); train(b)`` as for ``train(a + b)``.
CHUNK_SECONDS = 0.5
#: The name the stage tables plugin is registered under, on every worker.
TABLES = "hippo-stages"
_REMEMBER = 10_000  # keys each key table keeps
_threads_set = False  # torch's thread count is the process's, set once


@dataclass
class _Live:
    trainer: Trainer
    step: int
    digest: str
    hp: dict[str, Any]


def _remember(keys: OrderedDict[str, None], key: str) -> None:
    keys[key] = None
    while len(keys) > _REMEMBER:
        keys.popitem(last=False)


class StageTables(WorkerPlugin):
    """One worker's memory of stages: live trainers, points the driver added, and the keys that
    started, finished or were withdrawn here. Registered by the driver as a worker plugin
    (:data:`TABLES`); every worker unpickles its own, empty copy."""

    idempotent = True  # registering again (another driver) keeps the tables a worker has
    name = TABLES

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self._control: dict[str, list[Point]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._started: OrderedDict[str, None] = OrderedDict()
        self._withdrawn: OrderedDict[str, None] = OrderedDict()

    def __reduce__(self) -> tuple[Any, ...]:
        return (StageTables, ())  # what travels is the class: each worker starts empty

    def add_points(self, key: str, points: list[Point]) -> bool:
        """Ask stage ``key`` (running or queued here) to also stop at ``points``.

        Returns ``False`` if the stage already finished; the driver then sees the points missing
        from its report and plans around them.
        """
        with self._lock:
            if key in self._finished:
                return False
            self._control.setdefault(key, []).extend(points)
            return True

    def pending_points(self) -> dict[str, list[int]]:
        """Steps the driver added to stages that have not picked them up yet, by stage key."""
        with self._lock:
            return {key: [p.step for p in points] for key, points in self._control.items()}

    def withdraw(self, keys: list[str]) -> bool:
        """Take back stages queued on this worker, the first of ``keys`` and those after it.

        All or nothing: ``False`` (and nothing changes) when the first has started or finished
        here; the others continue from it or queue behind it, so none of them has started
        either. A withdrawn stage that Dask still runs returns at once, skipped, untrained.
        """
        with self._lock:
            if not keys or keys[0] in self._started or keys[0] in self._finished:
                return False
            for key in keys:
                _remember(self._withdrawn, key)
            return True

    def claim(self, key: str) -> bool:
        """Mark stage ``key`` started, unless the driver withdrew it first (then it is skipped
        once: a later submission of the same key, by another driver, runs)."""
        with self._lock:
            if key in self._withdrawn:
                del self._withdrawn[key]
                return False
            _remember(self._started, key)
            return True

    def take_control(self, key: str) -> list[Point]:
        """The points added to ``key`` since the last look."""
        with self._lock:
            return self._control.pop(key, [])

    def finish(self, key: str) -> list[Point]:
        """``key`` is done: points added from now on are refused; returns the last ones."""
        with self._lock:
            _remember(self._finished, key)
            return self._control.pop(key, [])

    def keep_live(self, live: _Live) -> None:
        """Keep a stage's trainer for the next stage of its chain (the oldest go first)."""
        with self._lock:
            self._live[live.digest] = live
            self._live.move_to_end(live.digest)
            while len(self._live) > _LIVE_CAPACITY:
                self._live.popitem(last=False)

    def take_live(self, digest: str) -> _Live | None:
        """The trainer kept at state ``digest``, if any (it leaves the table)."""
        with self._lock:
            return self._live.pop(digest, None)


#: Tables of a process that runs stages outside a Dask worker (tests, a debugger).
_OUTSIDE = StageTables()


def _tables(dask_worker: Any = None) -> StageTables:
    """This worker's tables (the plugin), or the process's own outside a worker."""
    if dask_worker is None:
        try:
            from distributed import get_worker

            dask_worker = get_worker()
        except ValueError:
            return _OUTSIDE
    tables = getattr(dask_worker, "plugins", {}).get(TABLES)
    return tables if isinstance(tables, StageTables) else _OUTSIDE


async def add_points_async(key: str, points: list[Point], dask_worker: Any = None) -> bool:
    """:meth:`StageTables.add_points` on the worker ``Client.run`` calls this on."""
    return _tables(dask_worker).add_points(key, points)


def pending_points(dask_worker: Any = None) -> dict[str, list[int]]:
    """:meth:`StageTables.pending_points` of the worker ``Client.run`` calls this on."""
    return _tables(dask_worker).pending_points()


async def withdraw_async(asks: Mapping[str, list[str]], dask_worker: Any = None) -> bool:
    """:meth:`StageTables.withdraw` for ``Client.run`` (which passes ``dask_worker``): ``asks``
    maps worker addresses to their keys, so one broadcast serves several workers; each takes
    back its own."""
    address = str(dask_worker.address) if dask_worker is not None else _worker_address()
    return _tables(dask_worker).withdraw(list(asks.get(address, [])))


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


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return "local"


def _cancelled(key: str) -> bool:
    """Whether Dask gave up on task ``key`` while it runs (its client left, or cancelled it).

    Dask cannot interrupt a running task's thread; a stage that checks this between training
    calls stops instead of training on for nobody, holding a GPU.
    """
    try:
        from distributed import get_worker

        task = get_worker().state.tasks.get(key)
    except (ValueError, AttributeError):
        return False
    return task is None or task.state in ("cancelled", "released", "forgotten")


class StageCancelled(Exception):
    """The stage's task was cancelled while it ran; what it trained so far is dropped."""


def _configure_threads() -> None:
    """One torch thread per worker thread: reproducible, and no oversubscription."""
    global _threads_set
    if _threads_set or "torch" not in sys.modules:
        return
    try:
        from distributed import get_worker

        threads = int(get_worker().state.nthreads)
    except (ValueError, AttributeError):
        threads = 1
    import torch

    torch.set_num_threads(max(1, threads))
    _threads_set = True


def _restore(spec: StageSpec, report: StageReport, tables: StageTables) -> _Live:
    live = tables.take_live(spec.start_digest)
    if live is not None and live.step == spec.start:
        report.resumed_from = "memory"
        return live
    for step, uri in spec.sources:
        try:
            state = with_retries(
                functools.partial(spec.store.load, uri),
                what=f"loading checkpoint {uri}",
                timeout=spec.storage_timeout,
            )
            expected = state_digest(spec.trial, step, spec.fingerprint)
            if state.get("digest") != expected or state.get("format") != CHECKPOINT_FORMAT:
                raise CorruptCheckpointError(
                    f"checkpoint {uri} holds a different state than its name says"
                )
        except (CheckpointNotFoundError, CorruptCheckpointError) as exc:
            logger.warning("stage %s: cannot use checkpoint %s: %s", spec.key, uri, exc)
            report.bad_checkpoints.append((uri, f"{type(exc).__name__}: {exc}"))
            continue
        trainer = spec.trainer_cls(dict(spec.config))
        trainer.load_state_dict(state["trainer"])
        report.resumed_from = uri
        return _Live(trainer, step, expected, {})
    report.resumed_from = "scratch"
    return _Live(
        spec.trainer_cls(dict(spec.config)), 0, state_digest(spec.trial, 0, spec.fingerprint), {}
    )


def _change_steps(spec: StageSpec, start: int) -> list[int]:
    """Steps in ``(start, stop)`` where some sequential value differs from the step before."""
    changes: set[int] = set()
    for sequence in spec.trial.sequences.values():
        values = sequence.values(start, spec.stop)
        if len(values) > 1:
            changes.update((np.flatnonzero(values[1:] != values[:-1]) + start + 1).tolist())
    return sorted(changes)


def _values_at(spec: StageSpec, step: int) -> dict[str, Any]:
    return {
        name: native(seq.values(step, step + 1)[0], seq.kind)
        for name, seq in spec.trial.sequences.items()
    }


def _setup(live: _Live, spec: StageSpec, step: int) -> None:
    values = _values_at(spec, step)
    fresh = not live.hp
    changed = {
        k: v
        for k, v in values.items()
        if fresh or k not in live.hp or type(live.hp[k]) is not type(v) or live.hp[k] != v
    }
    if changed:
        live.trainer.setup(changed)
        live.hp.update(changed)


def run_stage(spec: StageSpec, *after: Any) -> StageReport:
    """Train one stage on this worker and report metrics, checkpoints and timings.

    ``after`` are the reports of stages this one waits for (Dask passes them in). A trainer
    that raises does not fail the Dask task: the error goes back in the report, so stages that
    only queue behind this one on the worker still run; a stage that continues from it
    (``spec.chained``) sees the failure in its first argument and skips itself.
    """
    report = StageReport(
        key=spec.key,
        worker=_worker_address(),
        started=time.time(),
        finished=0.0,
        trained_steps=0,
        train_seconds=0.0,
        resumed_from="",
    )
    tables = _tables()
    if not tables.claim(spec.key):  # the driver took it back for another worker
        report.skipped = True
        report.finished = time.time()
        return report
    if (
        spec.chained
        and after
        and isinstance(after[0], StageReport)
        and (after[0].error is not None or after[0].skipped)
    ):
        report.skipped = True
        report.finished = time.time()
        return report
    try:
        _train_stage(spec, report, tables)
    except StageCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the driver with the traceback
        report.error = (
            type(exc).__name__,
            str(exc),
            "".join(traceback.format_tb(exc.__traceback__)),
        )
    report.finished = time.time()
    return report


def _train_stage(spec: StageSpec, report: StageReport, tables: StageTables) -> None:
    _configure_threads()
    live = _restore(spec, report, tables)
    step = live.step
    points: dict[int, Point] = {}
    for p in list(spec.points) + tables.take_control(spec.key):
        _merge_point(points, p)
    changes = set(_change_steps(spec, step))
    boundaries = sorted(changes | {p for p in points if p > step} | {spec.stop})
    _setup(live, spec, step)
    _handle_point(live, spec, points.get(step), report)
    chunk = 1  # steps per train() call: grows until a call takes about CHUNK_SECONDS
    while step < spec.stop:
        if _cancelled(spec.key):
            raise StageCancelled(f"{spec.key} cancelled at step {step}")
        if step in changes:
            _setup(live, spec, step)
        for p in tables.take_control(spec.key):
            if p.step <= step or p.step > spec.stop:
                if not (p.step in points and points[p.step].covers(p)):
                    report.missed.append(p.step)
                continue
            _merge_point(points, p)
            if p.step not in boundaries:
                bisect.insort(boundaries, p.step)
        target = min(boundaries[bisect.bisect_right(boundaries, step)], step + chunk)
        began = time.perf_counter()
        live.trainer.train(target - step)
        elapsed = time.perf_counter() - began
        report.train_seconds += elapsed
        report.trained_steps += target - step
        per_step = elapsed / (target - step)
        chunk = max(1, int(CHUNK_SECONDS / per_step)) if per_step > 0 else spec.stop
        step = live.step = target
        _handle_point(live, spec, points.get(step), report)
    for p in tables.finish(spec.key):
        if not (p.step in points and points[p.step].covers(p)):
            report.missed.append(p.step)
    live.digest = spec.stop_digest
    tables.keep_live(live)


def _merge_point(points: dict[int, Point], point: Point) -> None:
    old = points.get(point.step)
    points[point.step] = point if old is None else old.merge(point)


def _handle_point(live: _Live, spec: StageSpec, point: Point | None, report: StageReport) -> None:
    if point is None:
        return
    result = PointResult(step=point.step, wall_time=time.time())
    uri = None
    if point.checkpoint is not None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "digest": state_digest(spec.trial, point.step, spec.fingerprint),
            "step": point.step,
            "trainer": live.trainer.state_dict(),
        }
        name = point.checkpoint
        uri = with_retries(
            lambda: spec.store.save(name, state),
            what=f"saving checkpoint {name}",
            timeout=spec.storage_timeout,
        )
    metrics = None
    if point.evaluate:
        # Checked here, where the trainer returned it: a bad name or value fails this stage
        # (InvalidMetricsError, not retried) before anything of it is reported or stored.
        metrics = check_metrics(
            live.trainer.evaluate(), f"{type(live.trainer).__name__}.evaluate()"
        )
    report.points.append(
        PointResult(step=point.step, metrics=metrics, checkpoint=uri, wall_time=result.wall_time)
    )
