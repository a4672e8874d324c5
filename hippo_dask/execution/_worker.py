"""The function a Dask worker runs for one stage, and the worker's memory of live trainers.

A critical path runs on one worker as a chain of stage tasks. Instead of handing the trainer to
Dask as task data (which would pickle a model between tasks), each stage leaves its trainer in
this process's small ``_LIVE`` table under the digest of the state it reached; the next stage of
the chain takes it from there. If it is not there (another worker, a restarted process, an
evicted entry) the stage resumes from a checkpoint instead: slower, never wrong, because
entries are matched by state digest.

The driver can add points to a running stage (a step somebody now needs a checkpoint or metrics
at) through :func:`add_points`, which ``Client.run`` calls on the worker while the stage runs in
the worker's executor thread. It can also take back stages queued here that have not started
(:func:`withdraw`), to run them on a worker that went idle first: a stage claims its key when it
starts, under the same lock, so a stage either runs here or nowhere here.
"""

from __future__ import annotations

import bisect
import logging
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hippo_dask.errors import CheckpointNotFoundError, CorruptCheckpointError
from hippo_dask.execution._identity import state_digest
from hippo_dask.execution._spec import Point, PointResult, StageReport, StageSpec
from hippo_dask.seq._base import native
from hippo_dask.storage._retry import with_retries
from hippo_dask.trainer import Trainer, check_metrics

__all__ = [
    "CHECKPOINT_FORMAT", "add_points", "add_points_async", "live_digests", "pending_points",
    "run_stage", "withdraw", "withdraw_async",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_LIVE_CAPACITY = 2
#: A stage trains in calls of about this many seconds, so points the driver adds while it runs
#: (a step somebody now needs) land in time. Trainers must give the same result for
#: ``train(a); train(b)`` as for ``train(a + b)``.
CHUNK_SECONDS = 0.5


@dataclass
class _Live:
    trainer: Trainer
    step: int
    digest: str
    hp: dict[str, Any]


_lock = threading.Lock()
_LIVE: OrderedDict[str, _Live] = OrderedDict()
_CONTROL: dict[str, list[Point]] = {}
_FINISHED: OrderedDict[str, None] = OrderedDict()
_STARTED: OrderedDict[str, None] = OrderedDict()
_WITHDRAWN: OrderedDict[str, None] = OrderedDict()
_REMEMBER = 10_000  # keys each of those keeps
_threads_set = False


def _remember(keys: OrderedDict[str, None], key: str) -> None:
    keys[key] = None
    while len(keys) > _REMEMBER:
        keys.popitem(last=False)


def add_points(key: str, points: list[Point]) -> bool:
    """Ask stage ``key`` (running or queued here) to also stop at ``points``.

    Returns ``False`` if the stage already finished; the driver then sees the points missing
    from its report and plans around them.
    """
    with _lock:
        if key in _FINISHED:
            return False
        _CONTROL.setdefault(key, []).extend(points)
        return True


async def add_points_async(key: str, points: list[Point]) -> bool:
    """:func:`add_points` as a coroutine, for ``Client.run(..., wait=False)``."""
    return add_points(key, points)


def pending_points() -> dict[str, list[int]]:
    """Steps the driver added to stages that have not picked them up yet, by stage key."""
    with _lock:
        return {key: [p.step for p in points] for key, points in _CONTROL.items()}


def live_digests() -> list[str]:
    """Digests of the states whose trainers this process keeps in memory (for tests)."""
    with _lock:
        return list(_LIVE)


def withdraw(keys: list[str]) -> bool:
    """Take back stages queued on this worker, the first of ``keys`` and those after it.

    All or nothing: ``False`` (and nothing changes) when the first has started or finished
    here; the others continue from it or queue behind it, so none of them has started either.
    A withdrawn stage that Dask still runs returns at once, skipped, without training.
    """
    with _lock:
        if not keys or keys[0] in _STARTED or keys[0] in _FINISHED:
            return False
        for key in keys:
            _remember(_WITHDRAWN, key)
        return True


async def withdraw_async(asks: Mapping[str, list[str]], dask_worker: Any = None) -> bool:
    """:func:`withdraw` for ``Client.run`` (which passes ``dask_worker``): ``asks`` maps worker
    addresses to their keys, so one broadcast serves several workers; each takes back its own."""
    address = str(dask_worker.address) if dask_worker is not None else _worker_address()
    return withdraw(list(asks.get(address, [])))


def _claim(key: str) -> bool:
    """Mark stage ``key`` started, unless the driver withdrew it first (then it is skipped
    once: a later submission of the same key, by another driver, runs)."""
    with _lock:
        if key in _WITHDRAWN:
            del _WITHDRAWN[key]
            return False
        _remember(_STARTED, key)
        return True


def _take_control(key: str) -> list[Point]:
    with _lock:
        return _CONTROL.pop(key, [])


def _finish(key: str) -> list[Point]:
    with _lock:
        _remember(_FINISHED, key)
        return _CONTROL.pop(key, [])


def _keep_live(live: _Live) -> None:
    with _lock:
        _LIVE[live.digest] = live
        _LIVE.move_to_end(live.digest)
        while len(_LIVE) > _LIVE_CAPACITY:
            _LIVE.popitem(last=False)


def _take_live(digest: str) -> _Live | None:
    with _lock:
        return _LIVE.pop(digest, None)


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


def _restore(spec: StageSpec, report: StageReport) -> _Live:
    live = _take_live(spec.start_digest)
    if live is not None and live.step == spec.start:
        report.resumed_from = "memory"
        return live
    for step, uri in spec.sources:
        try:
            state = with_retries(lambda: spec.store.load(uri), what=f"loading checkpoint {uri}",
                                 timeout=spec.storage_timeout)
            expected = state_digest(spec.trial, step, spec.salt)
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
    return _Live(spec.trainer_cls(dict(spec.config)), 0, state_digest(spec.trial, 0, spec.salt), {})


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
        k: v for k, v in values.items()
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
        key=spec.key, worker=_worker_address(), started=time.time(), finished=0.0,
        trained_steps=0, train_seconds=0.0, resumed_from="",
    )
    if not _claim(spec.key):  # the driver took it back for another worker
        report.skipped = True
        report.finished = time.time()
        return report
    if spec.chained and after and isinstance(after[0], StageReport) and (
        after[0].error is not None or after[0].skipped
    ):
        report.skipped = True
        report.finished = time.time()
        return report
    try:
        _train_stage(spec, report)
    except StageCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the driver with the traceback
        report.error = (type(exc).__name__, str(exc), "".join(traceback.format_tb(exc.__traceback__)))
    report.finished = time.time()
    return report


def _train_stage(spec: StageSpec, report: StageReport) -> None:
    _configure_threads()
    live = _restore(spec, report)
    step = live.step
    points: dict[int, Point] = {}
    for p in list(spec.points) + _take_control(spec.key):
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
        for p in _take_control(spec.key):
            if p.step <= step or p.step > spec.stop:
                if not (p.step in points and _covered(points[p.step], p)):
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
    for p in _finish(spec.key):
        if not (p.step in points and _covered(points[p.step], p)):
            report.missed.append(p.step)
    live.digest = spec.stop_digest
    _keep_live(live)


def _merge_point(points: dict[int, Point], point: Point) -> None:
    old = points.get(point.step)
    if old is None:
        points[point.step] = point
    else:
        points[point.step] = Point(
            point.step, old.evaluate or point.evaluate, old.checkpoint or point.checkpoint
        )


def _covered(have: Point, want: Point) -> bool:
    return (have.evaluate or not want.evaluate) and (have.checkpoint is not None or want.checkpoint is None)


def _handle_point(live: _Live, spec: StageSpec, point: Point | None, report: StageReport) -> None:
    if point is None:
        return
    result = PointResult(step=point.step, wall_time=time.time())
    uri = None
    if point.checkpoint is not None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "digest": state_digest(spec.trial, point.step, spec.salt),
            "step": point.step,
            "trainer": live.trainer.state_dict(),
        }
        name = point.checkpoint
        uri = with_retries(lambda: spec.store.save(name, state), what=f"saving checkpoint {name}",
                           timeout=spec.storage_timeout)
    metrics = None
    if point.evaluate:
        # Checked here, where the trainer returned it: a bad name or value fails this stage
        # (InvalidMetricsError, not retried) before anything of it is reported or stored.
        metrics = check_metrics(live.trainer.evaluate(), f"{type(live.trainer).__name__}.evaluate()")
    report.points.append(
        PointResult(step=point.step, metrics=metrics, checkpoint=uri, wall_time=result.wall_time)
    )

