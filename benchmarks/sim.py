"""Scheduler simulation: a simulated trainer on W Dask workers, against the lower bound.

Goal (issue): end-to-end time of a grid study within 1.15x of the lower bound
``max(critical path, unique work / W)`` for W in 1, 2, 4, 8, and scheduling overhead under
20 ms per stage; compared with ``sharing=False`` on the same machinery.

The trainer is :class:`hippo_dask.testing.simulated.SimulatedTrainer` with a fixed
``seconds_per_step``: it sleeps, so compute is simulated without loading the CPU and eight
workers fit on a two-core machine. The space (``build_space``) is a grid of four learning-rate
schedules (constant, or StepLR decays at different steps, so they share prefixes) x three
batch-size schedules (constant, or doubled at different steps) x four optimizers: 48 trials.
Its merge rate, unique steps, stage tree and critical path are computed exactly from an
in-memory :class:`hippo_dask.SearchPlan` of the same trials before anything runs.

For every W a fresh ``LocalCluster(n_workers=W, threads_per_worker=1, resources={"GPU": 1})``
is started and warmed (imports, a checkpoint round trip on every worker, and a tiny warm-up
study), so process start-up and first imports are not counted. Then the grid runs with
``sharing=True`` and with ``sharing=False``, each on a fresh storage root; the time of
``study.tune(...)`` is measured with ``time.perf_counter``.

The driver is instrumented from outside (instance-level wrappers installed by this script, no
library change): every stage report (worker timestamps), when the driver received it, when
each stage was submitted, and how long the driver spent scheduling, handling reports, asking
the scheduler for its workers, flushing the journal and writing the zarr metrics. The
definitions of every column are printed with the table (and kept in ``DEFINITIONS``).

A run that does not finish in ``60 s + 5 x`` its single-worker work is stopped with the
driver's state (an engine hang must not hang the benchmark).

    .venv/bin/python benchmarks/sim.py                       # W = 1 2 4 8, writes RESULTS.md
    .venv/bin/python benchmarks/sim.py --quick               # smoke test, writes nothing
    .venv/bin/python benchmarks/sim.py --workers 8 --seconds-per-step 0.01 --no-record
    .venv/bin/python benchmarks/sim.py --workers 4 --trace /tmp/sim.json   # per-stage dump
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import heapq
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan, Stage, StageTree
from hippo_dask.testing.simulated import SimulatedTrainer

GOAL_RATIO = 1.15
GOAL_OVERHEAD_MS = 20.0
RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Scheduler simulation (benchmarks/sim.py)"
GAPS = [
    "Dask: next task already submitted (in-chain hand-over)",
    "report: worker -> client (Dask)",
    "report: client -> driver loop (loop busy)",
    "driver: report handling + scheduling (+ start-up)",
    "Dask: submitted -> started",
]

DEFINITIONS = """\
Definitions (all times wall clock; worker and driver timestamps share the host's clock):

- **wall**: `time.perf_counter()` around `study.tune(hd.tuners.Grid(...))` (run as
  `asyncio.run(study.tune_async(...))` under a watchdog, which is what `tune` does), fresh storage root,
  warmed workers (imports, a checkpoint round trip and a tiny warm-up study before timing).
- **LB** (lower bound) = `max(critical path, unique work / W)` x seconds per step. Unique work:
  the plan's unique steps (`sharing=True`) or trials x steps (`sharing=False`); critical path:
  steps of `plan.stage_tree().critical_path()` of a fresh in-memory plan (profile 1.0).
- **ideal**: makespan of a zero-overhead critical-path list schedule of the same stage tree on W
  workers (a stage starts when its parent stage is done, highest remaining time first). It is
  >= LB when the tree cannot keep W workers busy at the start (few roots) - that part of
  wall/LB is the space's shape, not the engine.
- **speed-up**: wall of `sharing=False` / wall of `sharing=True` at the same W.
- **worker-side ms/stage**: sum over stages of `finished - started - train_seconds` (the
  `StageReport` a worker returns: restore from memory or checkpoint, `setup`, checkpoint
  writes, `evaluate`, bookkeeping in `run_stage`) / stages. Scheduling overhead inside the task.
- **dispatch gap ms/stage**: for every stage, the time its worker sat idle before it from the
  moment the worker was free *and* the stage's starting state existed (its producing stage -
  the previous stage of the chain or the stage that wrote its checkpoint - had finished, or
  the run started for stages from scratch), summed and divided by stages. It is cut at the
  driver's timestamps into: the next task was already submitted (Dask's hand-over between
  chained stages), the report travelling worker -> scheduler -> client (the client's future
  done callback), the report waiting for the driver's event loop (busy with other reports),
  the driver handling reports and scheduling until it submits (plus start-up: adding the
  requests and the first schedule), and Dask from submission to start. Scheduling overhead
  outside the task.
- **sched ms/stage** = worker-side + dispatch gap: the scheduling overhead per stage that the
  20 ms goal is checked against.
- **idle-while-ready ms/stage** (cross-check): worker-seconds during which some worker was idle
  while some stage whose starting state existed had not started (`min(idle workers, ready
  stages)` integrated over the run), / stages. Independent of which worker got which stage.
- **(wall-LB)/stage ms**: (wall - LB) / stages: the crude end-to-end measure (it also counts
  the tree's shape: see ideal). **(wall-ideal)/stage ms** takes the shape out.
"""


# -- the space ---------------------------------------------------------------------------------


def build_space(steps: int, seconds_per_step: float, optimizers: int = 4) -> hd.GridSpace:
    """4 lr x 3 batch-size schedules x ``optimizers`` optimizers (48 trials by default).

    Milestones are fractions of ``steps``, so the tree's shape (and merge rate) does not
    depend on ``steps``: lr constant, or x0.1 at (1/2, 3/4), (1/2, 9/10), (3/4, 9/10) of the
    run; batch size constant, or doubled at 1/4 or 1/2 of the run.
    """

    def at(fraction: float) -> int:
        return max(1, min(steps - 1, round(steps * fraction)))

    lr = [seq.Constant(0.1)] + [
        seq.StepLR(0.1, gamma=0.1, milestones=[at(a), at(b)])
        for a, b in ((0.5, 0.75), (0.5, 0.9), (0.75, 0.9))
    ]
    batch = [seq.Constant(128)] + [
        seq.MultiStep([128, 256], milestones=[at(m)]) for m in (0.25, 0.5)
    ]
    names = ["sgd", "adam", "adamw", "rmsprop", "lamb", "lion", "adagrad", "nadam"]
    return hd.GridSpace(
        lr=lr, batch_size=batch, optimizer=names[:optimizers], seconds_per_step=[seconds_per_step]
    )


@dataclass
class Shape:
    """What the plan says about the grid before anything runs (in steps)."""

    trials: int
    steps: int
    requested: int
    unique: int
    merge_rate: float
    nodes: int
    stages: int
    critical_path: int
    tree: StageTree = field(repr=False)


def shape_of(trials: list[hd.Trial], steps: int, *, sharing: bool) -> Shape:
    plan = SearchPlan()
    for trial in trials:
        # Without sharing every trial is its own root, as Study isolates it.
        plan.add(trial if sharing else hd.Trial(**trial.config, _hippo_isolate=trial.id), steps)
    stats = plan.stats()
    tree = plan.stage_tree()
    path = tree.critical_path()
    return Shape(
        len(trials),
        steps,
        stats.requested_steps,
        stats.unique_steps,
        stats.merge_rate,
        stats.nodes,
        len(tree),
        sum(s.steps for s in path),
        tree,
    )


def list_schedule(tree: StageTree, workers: int) -> float:
    """Makespan (steps) of critical-path list scheduling of ``tree`` on ``workers``, no overhead."""
    index = {id(s): i for i, s in enumerate(tree.stages)}
    ready = [(-tree.remaining(s), index[id(s)], s) for s in tree.roots]
    heapq.heapify(ready)
    running: list[tuple[float, int, Stage]] = []
    now, free = 0.0, workers
    while ready or running:
        while free and ready:
            _, i, stage = heapq.heappop(ready)
            heapq.heappush(running, (now + stage.steps, i, stage))
            free -= 1
        now, _, stage = heapq.heappop(running)
        free += 1
        for child in stage.children:
            heapq.heappush(ready, (-tree.remaining(child), index[id(child)], child))
    return now


# -- instrumentation (from outside the library) ------------------------------------------------


@dataclass
class Trace:
    reports: list[Any] = field(default_factory=list)
    received: dict[str, float] = field(default_factory=dict)  # key -> driver got the report
    submitted: dict[str, float] = field(default_factory=dict)  # key -> driver submitted it
    seen: dict[str, float] = field(
        default_factory=dict
    )  # key -> client's future done (Dask thread)
    timers: dict[str, list[float]] = field(default_factory=dict)  # name -> durations (s)

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        bucket = self.timers.setdefault(name, [])

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                bucket.append(time.perf_counter() - began)

        return wrapper


def _timed_async(trace: Trace, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    bucket = trace.timers.setdefault(name, [])

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - began)

    return wrapper


def instrument(driver: Any, trace: Trace) -> None:
    """Wrap the driver's parts on this instance only: timings and per-stage timestamps."""
    if getattr(driver, "_sim_trace", None) is trace:
        return
    driver._sim_trace = trace
    driver.on_report.append(trace.reports.append)
    submission = driver.submission

    done = submission.on_done  # what a finished future calls on the driver's loop

    def on_done(key: str, payload: Any) -> None:
        trace.received.setdefault(key, time.time())
        done(key, payload)

    submission.on_done = trace.timed("report handling (_done)", on_done)

    submit = submission.submit

    def on_submit(action: Any, tree: Any) -> None:
        now = time.time()
        submit(action, tree)
        for flight in driver.flights.queue(action.worker)[-len(action.chain) :]:
            trace.submitted.setdefault(flight.key, now)
            flight.future.add_done_callback(
                lambda _, key=flight.key: trace.seen.setdefault(key, time.time())
            )

    submission.submit = trace.timed("submit a chain (_submit)", on_submit)
    driver._schedule = _timed_async(trace, "schedule pass (_schedule)", driver._schedule)
    driver.dask.workers = _timed_async(
        trace, "scheduler identity RPC (workers)", driver.dask.workers
    )
    driver.plan.flush = trace.timed("journal flush (plan.flush)", driver.plan.flush)
    driver.plan.stage_tree = trace.timed("stage tree (plan.stage_tree)", driver.plan.stage_tree)
    if driver.recorder is not None:
        metrics = driver.recorder.metrics
        metrics.append = trace.timed("zarr metrics append", metrics.append)
        # Called in a worker thread (the driver batches its metric writes off its event loop).
        metrics.append_stages = trace.timed("zarr stages append", metrics.append_stages)


class TracedStudy(hd.Study):
    """A Study whose driver is instrumented as soon as it exists."""

    trace: Trace

    def _ensure_driver(self) -> Any:
        driver = super()._ensure_driver()
        instrument(driver, self.trace)
        return driver


# -- analysis of one run -----------------------------------------------------------------------


def analyse(
    trace: Trace, t0: float, t1: float, workers: int, seconds_per_step: float
) -> dict[str, Any]:
    """Per-stage timelines -> overhead figures (see DEFINITIONS). ``t0``/``t1``: tune, time.time()."""
    reports = sorted(trace.reports, key=lambda r: r.started)
    by_uri: dict[str, Any] = {}
    for r in reports:
        for p in r.points:
            if p.checkpoint is not None:
                by_uri[p.checkpoint] = r
    by_worker: dict[str, list[Any]] = {}
    for r in reports:
        by_worker.setdefault(r.worker, []).append(r)

    producer: dict[str, Any] = {}
    before: dict[str, Any] = {}  # key -> the stage its worker ran just before it
    for lane in by_worker.values():
        previous = None
        for r in lane:
            before[r.key] = previous
            if r.resumed_from == "memory":
                producer[r.key] = previous
            elif r.resumed_from != "scratch":
                producer[r.key] = by_uri.get(r.resumed_from)
            previous = r

    ready: dict[str, float] = {}
    hand_over: list[float] = []  # in-chain: previous stage finished -> this one started
    to_driver: list[float] = []  # cross-chain: producer finished -> driver has its report
    dispatch: list[float] = []  # cross-chain: submitted -> started on a worker
    for r in reports:
        p = producer.get(r.key)
        ready[r.key] = p.finished if p is not None else t0
        if p is None:
            continue
        if r.resumed_from == "memory":
            hand_over.append(r.started - p.finished)
        else:
            got = trace.received.get(p.key)
            sent = trace.submitted.get(r.key)
            if got is not None:
                to_driver.append(got - p.finished)
            if sent is not None:
                prior = before.get(r.key)
                dispatch.append(
                    r.started - max(sent, p.finished, prior.finished if prior is not None else t0)
                )

    # Integrate min(idle workers, ready-but-not-started stages) over [t0, t1].
    marks = sorted(
        {
            t0,
            t1,
            *(min(max(x, t0), t1) for r in reports for x in (ready[r.key], r.started, r.finished)),
        }
    )
    idle_ready = 0.0
    for a, b in zip(marks, marks[1:]):
        mid = (a + b) / 2
        idle = workers - sum(1 for r in reports if r.started <= mid < r.finished)
        pending = sum(1 for r in reports if min(ready[r.key], r.started) <= mid < r.started)
        idle_ready += max(0, min(idle, pending)) * (b - a)

    # Each worker's gap before each of its stages, from the moment both the worker was free and
    # the stage's starting state existed, cut at the driver's and Dask's timestamps.
    gaps = dict.fromkeys(GAPS, 0.0)
    for lane in by_worker.values():
        previous = None
        for r in lane:
            free = max(previous.finished if previous is not None else t0, ready[r.key])
            sent = trace.submitted.get(r.key, t0)
            if r.started > free:
                if sent <= free:
                    gaps[GAPS[0]] += r.started - free
                else:
                    # The report the driver waited for: the later of the worker's previous
                    # stage and the stage that produced this one's starting state.
                    informers = [x for x in (previous, producer.get(r.key)) if x is not None]
                    last = max(informers, key=lambda x: trace.received.get(x.key, t0), default=None)
                    got = min(max(free, trace.received.get(last.key, t0) if last else t0), sent)
                    seen = min(max(free, trace.seen.get(last.key, t0) if last else t0), got)
                    gaps[GAPS[1]] += seen - free
                    gaps[GAPS[2]] += got - seen
                    gaps[GAPS[3]] += sent - got
                    gaps[GAPS[4]] += r.started - sent
            previous = r

    stages = len(reports)
    busy = sum(r.finished - r.started for r in reports)
    train = sum(r.train_seconds for r in reports)
    steps = sum(r.trained_steps for r in reports)
    return {
        "stages": stages,
        "executed_steps": steps,
        "busy": busy,
        "train": train,
        "trainer_excess": train - steps * seconds_per_step,
        "worker_side": busy - train,
        "idle_ready": idle_ready,
        "gaps": gaps,
        "idle_total": workers * (t1 - t0) - busy,
        "resumed": {
            "memory": sum(r.resumed_from == "memory" for r in reports),
            "checkpoint": sum(r.resumed_from not in ("memory", "scratch") for r in reports),
            "scratch": sum(r.resumed_from == "scratch" for r in reports),
        },
        "hand_over": hand_over,
        "to_driver": to_driver,
        "dispatch": dispatch,
        "timers": {k: list(v) for k, v in trace.timers.items()},
        "lanes": {
            w: [
                (r.key, r.started - t0, r.finished - t0, r.trained_steps, r.resumed_from)
                for r in lane
            ]
            for w, lane in by_worker.items()
        },
        "stage_log": [
            {
                "key": r.key,
                "worker": r.worker,
                "resumed": r.resumed_from,
                "producer": getattr(producer.get(r.key), "key", None),
                "ready": ready[r.key] - t0,
                "started": r.started - t0,
                "finished": r.finished - t0,
                "received": trace.received.get(r.key, t0) - t0,
                "submitted": trace.submitted.get(r.key, t0) - t0,
            }
            for r in reports
        ],
    }


# -- running -----------------------------------------------------------------------------------


def _warm_worker() -> int:
    """Imports and a checkpoint round trip, so the first timed stage pays neither."""
    import hippo_dask.execution  # noqa: F401
    import hippo_dask.testing.simulated  # noqa: F401
    import hippo_dask.torch  # noqa: F401
    from hippo_dask.storage import FsspecCheckpointStore

    store = FsspecCheckpointStore(f"memory://hippo-sim-warm-{os.getpid()}/ckpt")
    uri = store.save(
        "warm",
        {"format": 1, "digest": "x", "step": 0, "trainer": {"digest": "x", "steps": 0, "hp": {}}},
    )
    store.load(uri)
    return os.getpid()


async def _tune_or_give_up(study: TracedStudy, tuner: hd.Tuner, limit: float) -> hd.Result:
    """``study.tune_async(tuner)``, or a clear failure (with the driver's state) after ``limit``."""
    task = asyncio.ensure_future(study.tune_async(tuner))
    done, _ = await asyncio.wait([task], timeout=limit)
    if task in done:
        return task.result()
    driver = study._driver
    state = "no driver"
    if driver is not None:
        state = (
            f"stages in flight {len(driver.flights)}, waiting requests "
            f"{driver.waiters.count()}, workers the driver lost "
            f"{sorted(driver.reports.dead)}, workers the scheduler has "
            f"{sorted(study.client.sync(study.client.scheduler.identity, n_workers=-1)['workers'])}"
        )
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise SystemExit(
        f"study {study.name!r} did not finish within {limit:.0f} s (engine hang?): {state}"
    )


def run_one(
    client: Any, space: hd.GridSpace, steps: int, *, sharing: bool, name: str, limit: float = 600.0
) -> tuple[float, hd.Result, Trace, float, float]:
    trace = Trace()
    with tempfile.TemporaryDirectory(prefix="hippo-sim-") as root:
        study = TracedStudy(name, SimulatedTrainer, storage=root, client=client, sharing=sharing)
        study.trace = trace
        tuner = hd.tuners.Grid(space, metric="score", steps=steps)
        t0 = time.time()
        began = time.perf_counter()
        result = asyncio.run(_tune_or_give_up(study, tuner, limit))  # what study.tune does
        wall = time.perf_counter() - began
        t1 = time.time()
        study.close()
    if (result.trials["status"] != "done").any():
        raise SystemExit(f"some trials did not finish: {result.trials['status'].value_counts()}")
    return wall, result, trace, t0, t1


def run_workers(
    workers: int,
    space: hd.GridSpace,
    steps: int,
    seconds_per_step: float,
    shapes: dict[bool, Shape],
    unshared: bool,
) -> list[dict[str, Any]]:
    from distributed import Client, LocalCluster

    rows = []
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            resources={"GPU": 1},
            dashboard_address="127.0.0.1:0",
            processes=True,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        pids = client.run(_warm_worker)
        assert len(pids) == workers
        # A tiny study touches every code path once (driver imports, zarr, journal, tasks).
        warm = hd.GridSpace(lr=[seq.Constant(0.1)], optimizer=[f"w{i}" for i in range(workers)])
        run_one(client, warm, 2, sharing=True, name="warm", limit=60)
        for sharing in (True, False) if unshared else (True,):
            shape = shapes[sharing]
            print(f"  W={workers} sharing={sharing}: running ...", flush=True)
            wall, result, trace, t0, t1 = run_one(
                client,
                space,
                steps,
                sharing=sharing,
                name="shared" if sharing else "unshared",
                limit=60 + 5 * shape.unique * seconds_per_step,
            )
            info = analyse(trace, t0, t1, workers, seconds_per_step)
            lb_steps = max(shape.critical_path, shape.unique / workers)
            ideal_steps = list_schedule(shape.tree, workers)
            row = {
                "workers": workers,
                "sharing": sharing,
                "wall": wall,
                "lb": lb_steps * seconds_per_step,
                "ideal": ideal_steps * seconds_per_step,
                "stats": {
                    k: getattr(result.stats, k)
                    for k in (
                        "trials",
                        "requested_steps",
                        "unique_steps",
                        "merge_rate",
                        "executed_steps",
                        "stages",
                        "worker_seconds",
                        "stages_resumed_in_memory",
                        "stages_resumed_from_checkpoint",
                        "stages_from_scratch",
                    )
                },
                **info,
            }
            expected = shape.unique
            if result.stats.executed_steps != expected:
                print(f"  ! executed {result.stats.executed_steps} steps, expected {expected}")
            rows.append(row)
            print(
                f"  W={workers} sharing={sharing}: {wall:.2f} s (LB {row['lb']:.2f} s, ideal "
                f"{row['ideal']:.2f} s), {info['stages']} stages",
                flush=True,
            )
    return rows


# -- reporting ---------------------------------------------------------------------------------


def _ms(seconds: float, stages: int) -> float:
    return 1000.0 * seconds / stages if stages else 0.0


def _q(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    return f"{1000 * statistics.median(values):.0f} / {1000 * p90:.0f} / {1000 * max(values):.0f}"


def main_table(rows: list[dict[str, Any]]) -> str:
    walls = {(r["workers"], r["sharing"]): r["wall"] for r in rows}
    lines = [
        "| W | sharing | stages | wall (s) | LB (s) | wall / LB | ideal (s) | wall / ideal "
        "| speed-up vs unshared | worker-side ms/stage | dispatch gap ms/stage "
        "| sched ms/stage | idle-while-ready ms/stage | (wall-LB)/stage ms "
        "| (wall-ideal)/stage ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = r["stages"]
        other = walls.get((r["workers"], False))
        speed = f"{other / r['wall']:.2f}x" if r["sharing"] and other else "-"
        ws, gap = _ms(r["worker_side"], n), _ms(sum(r["gaps"].values()), n)
        lines.append(
            f"| {r['workers']} | {'yes' if r['sharing'] else 'no'} | {n} | {r['wall']:.2f} "
            f"| {r['lb']:.2f} | **{r['wall'] / r['lb']:.3f}** | {r['ideal']:.2f} "
            f"| {r['wall'] / r['ideal']:.3f} | {speed} | {ws:.1f} | {gap:.1f} | **{ws + gap:.1f}** "
            f"| {_ms(r['idle_ready'], n):.1f} | {_ms(r['wall'] - r['lb'], n):.0f} "
            f"| {_ms(r['wall'] - r['ideal'], n):.0f} |"
        )
    return "\n".join(lines)


def driver_table(rows: list[dict[str, Any]]) -> str:
    names = [
        "schedule pass (_schedule)",
        "scheduler identity RPC (workers)",
        "stage tree (plan.stage_tree)",
        "submit a chain (_submit)",
        "report handling (_done)",
        "journal flush (plan.flush)",
        "zarr metrics append",
        "zarr stages append",
    ]
    names = [n for n in names if any(n in r["timers"] for r in rows)]
    head = " | ".join(f"{n}: calls, ms each, s total" for n in names)
    lines = [
        "| W | sharing | resumed memory / ckpt / scratch | in-chain hand-over ms "
        "(median / p90 / max) | producer done -> driver has its report ms "
        "| submitted (or worker free, if later) -> started ms | trainer excess s | " + head + " |",
        "|" + "---|" * (8 + len(names)),
    ]
    for r in rows:
        res = r["resumed"]
        cells = []
        for n in names:
            t = r["timers"].get(n, [])
            cells.append(f"{len(t)}, {1000 * statistics.mean(t):.1f}, {sum(t):.2f}" if t else "-")
        lines.append(
            f"| {r['workers']} | {'yes' if r['sharing'] else 'no'} "
            f"| {res['memory']} / {res['checkpoint']} / {res['scratch']} | {_q(r['hand_over'])} "
            f"| {_q(r['to_driver'])} | {_q(r['dispatch'])} "
            f"| {r['trainer_excess']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def gap_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| W | sharing | dispatch gap ms/stage | " + " | ".join(GAPS) + " |",
        "|" + "---|" * (3 + len(GAPS)),
    ]
    for r in rows:
        n = r["stages"]
        cells = [f"{_ms(r['gaps'][name], n):.1f}" for name in GAPS]
        lines.append(
            f"| {r['workers']} | {'yes' if r['sharing'] else 'no'} "
            f"| {_ms(sum(r['gaps'].values()), n):.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    shared = [r for r in rows if r["sharing"]]
    out = []
    worst = max(shared, key=lambda r: r["wall"] / r["lb"])
    ratio_ok = all(r["wall"] / r["lb"] <= GOAL_RATIO for r in shared)
    out.append(
        f"Goal 1 (sharing=True, wall <= {GOAL_RATIO}x LB for every W): "
        f"{'met' if ratio_ok else 'MISSED'} (worst {worst['wall'] / worst['lb']:.3f} at "
        f"W={worst['workers']}; wall/ideal there {worst['wall'] / worst['ideal']:.3f})"
    )
    sched = [(_ms(r["worker_side"] + sum(r["gaps"].values()), r["stages"]), r) for r in shared]
    worst_ms, r = max(sched, key=lambda x: x[0])
    out.append(
        f"Goal 2 (scheduling overhead < {GOAL_OVERHEAD_MS:g} ms per stage, sharing=True): "
        f"{'met' if worst_ms < GOAL_OVERHEAD_MS else 'MISSED'} (worst {worst_ms:.1f} ms at "
        f"W={r['workers']})"
    )
    exact = all(r["stats"]["executed_steps"] == r["stats"]["unique_steps"] for r in rows)
    out.append(
        f"Executed steps == the plan's unique steps in every run: {'yes' if exact else 'NO'}"
    )
    return out


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import dask
    import distributed

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({cpu}, load average {load}), Linux {platform.release()}, Python "
        f"{platform.python_version()}, dask/distributed {dask.__version__}/"
        f"{distributed.__version__}, hippo_dask {hd.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="numbers of workers W (default: 1 2 4 8)",
    )
    parser.add_argument(
        "--seconds-per-step",
        type=float,
        default=0.005,
        help="simulated compute per step (default 0.005)",
    )
    parser.add_argument("--steps", type=int, default=300, help="steps every trial trains (300)")
    parser.add_argument(
        "--optimizers",
        type=int,
        default=4,
        choices=range(1, 9),
        help="optimizer axis size: trials = 12 x this (default 4)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: W = 1 2, 60 steps, 0.002 s/step; records nothing",
    )
    parser.add_argument("--no-unshared", action="store_true", help="skip sharing=False")
    parser.add_argument("--no-record", action="store_true", help=f"do not append to {RESULTS.name}")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to append to")
    parser.add_argument("--trace", type=Path, help="write per-stage lanes and timers as JSON")
    args = parser.parse_args(argv)
    command = "python benchmarks/sim.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv)
    )
    if args.quick:
        args.workers, args.steps, args.seconds_per_step = [1, 2], 60, 0.002
        args.no_record = True
    if min(args.workers) < 1 or args.steps < 8 or args.seconds_per_step <= 0:
        parser.error("--workers >= 1, --steps >= 8 and --seconds-per-step > 0")
    logging.getLogger("distributed").setLevel(logging.WARNING)

    space = build_space(args.steps, args.seconds_per_step, args.optimizers)
    trials = list(space)
    shapes = {
        True: shape_of(trials, args.steps, sharing=True),
        False: shape_of(trials, args.steps, sharing=False),
    }
    s = shapes[True]
    header = (
        f"{s.trials} trials x {args.steps} steps at {args.seconds_per_step:g} s/step: requested "
        f"{s.requested} steps, unique {s.unique} -> merge rate p = {s.requested}/{s.unique} = "
        f"{s.merge_rate:.4f}; {s.nodes} plan nodes, stage tree of {s.stages} stages, critical "
        f"path {s.critical_path} steps ({s.critical_path * args.seconds_per_step:.2f} s); "
        f"without sharing: {shapes[False].unique} steps in {shapes[False].stages} stages"
    )
    print(f"# {header}\n# {machine()}\n", flush=True)
    lb_line = ", ".join(
        f"W={w}: LB {max(s.critical_path, s.unique / w) * args.seconds_per_step:.2f} s / ideal "
        f"{list_schedule(s.tree, w) * args.seconds_per_step:.2f} s"
        for w in args.workers
    )
    print(f"# sharing=True {lb_line}\n", flush=True)

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for workers in args.workers:
        rows.extend(
            run_workers(
                workers, space, args.steps, args.seconds_per_step, shapes, not args.no_unshared
            )
        )
    total = time.perf_counter() - started

    table, details = main_table(rows), driver_table(rows) + "\n\n" + gap_table(rows)
    verdicts = verdict(rows)
    print()
    print(table)
    print()
    print(details)
    print()
    print("\n".join(verdicts))
    print(f"\n(benchmark total {total:.0f} s)")
    if args.trace:
        args.trace.write_text(json.dumps(rows, indent=1, default=str))
    if not args.no_record:
        record(args.results, command, header, table, details, verdicts, total)
    return 0


def engine_version() -> str:
    """``engine at commit <hash>``: the last commit that touched the package (``+ local
    changes`` when it differs from that commit), or ``engine as installed`` outside git."""
    package = Path(hd.__file__).resolve().parent
    git = ["git", "-C", str(package)]
    try:
        commit = subprocess.run(
            [*git, "log", "-1", "--format=%h", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "engine as installed"
    if not commit:
        return "engine as installed"
    return f"engine at commit {commit}" + (" + local changes" if dirty else "")


def record(
    path: Path,
    command: str,
    header: str,
    table: str,
    details: str,
    verdicts: list[str],
    total: float,
) -> None:
    """Append a dated run under the section heading (creating the section if needed)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    run = "\n".join(
        [
            f"### Run of {datetime.date.today().isoformat()} - {engine_version()}",
            "",
            f"Command: `{command}` (benchmark total {total:.0f} s)",
            "",
            f"Machine: {machine()}",
            "",
            f"Space: {header}",
            "",
            table,
            "",
            "Driver and Dask details (latencies: median / p90 / max over stages):",
            "",
            details,
            "",
            *[f"- {v}" for v in verdicts],
            "",
        ]
    )
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{DEFINITIONS}\n"
    # Insert this run at the end of the section (before the next "## " heading, if any).
    start = text.index(HEADING)
    nxt = text.find("\n## ", start + len(HEADING))
    if nxt == -1:
        text = text.rstrip("\n") + "\n\n" + run
    else:
        text = text[:nxt].rstrip("\n") + "\n\n" + run + "\n" + text[nxt:]
    path.write_text(text, encoding="utf-8")
    print(f"appended to {path}")


if __name__ == "__main__":
    sys.exit(main())
