"""Planner scale: from ``add`` of every trial to a stage tree with its critical path.

Goal (issue): 10,000 trials x 3 sequential hyper-parameters x 200 steps in <= 2 s and <= 500 MB
on a 2-core machine, growing near-linearly to 100,000 trials.

The space is a grid of three sequential hyper-parameters (learning rate in six families,
batch size and momentum constant or switching at various steps) with more than 100,000
configurations. ``N`` trials are the first ``N`` of one fixed shuffle of the grid (numpy seed
0), so the 1k trials are among the 10k, which are among the 100k.

Every size runs in a fresh subprocess, so its peak memory is its own: peak RSS is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that process (interpreter, numpy and
hippo_dask included; "RSS before trials" is the RSS after imports and space construction).
Timings are wall-clock (``time.perf_counter``), the fastest of ``--repeat`` fresh processes;
the CPU-time column (``time.process_time``) shows how much of the wall time was this process's
own work when other jobs share the two cores.

    .venv/bin/python benchmarks/planner.py                      # 1k, 10k, 100k + persistence
    .venv/bin/python benchmarks/planner.py --sizes 1000 10000
    .venv/bin/python benchmarks/planner.py --profile 10000      # cProfile of add + stage tree
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import Request, SearchPlan, Stage, StageTree

GOAL_TRIALS = 10_000
GOAL_SECONDS = 2.0
GOAL_MB = 500.0


# -- the space --------------------------------------------------------------------------------


def build_space() -> hd.GridSpace:
    """A ResNet-style grid: 116 lr x 30 batch-size x 36 momentum schedules = 125,280 trials."""
    lr: list[seq.Sequence] = []
    # StepLR: the classic 10x decays at different epochs (Hippo's Table 2 "StepLR" family).
    for v0 in (0.2, 0.1, 0.05, 0.02):
        for gamma in (0.1, 0.2):
            for milestones in ([90, 135], [100, 150], [60, 120, 160], [80, 160], [50, 100, 150]):
                lr.append(seq.StepLR(v0, gamma=gamma, milestones=milestones))  # 40
    # Linear warm-up, then exponential decay.
    for warm in (5, 10):
        for target in (0.2, 0.1, 0.05):
            for gamma in (0.99, 0.98, 0.97, 0.95):
                lr.append(seq.Warmup(warm, target, then=seq.Exponential(target, gamma)))  # 24
    # Linear warm-up, then step decay (shares the ramp with the exponential ones).
    for warm in (5, 10):
        for target in (0.2, 0.1):
            for milestones in ([85, 130], [95, 145]):
                lr.append(seq.Warmup(warm, target, then=seq.StepLR(target, 0.1, milestones)))  # 8
    # Cosine annealing over the run, or a bit longer.
    for v0 in (0.2, 0.1, 0.05, 0.02):
        for t_max in (200, 250):
            lr.append(seq.Cosine(v0, t_max))  # 8
    # Cosine with warm restarts (SGDR).
    for v0 in (0.2, 0.1, 0.05):
        for t_0 in (25, 50):
            for t_mult in (1, 2):
                lr.append(seq.CosineWarmRestarts(v0, t_0, t_mult=t_mult))  # 12
    # Triangular cyclic learning rates.
    for base in (0.001, 0.01):
        for top in (0.1, 0.2):
            for up in (10, 25, 50):
                for down in (None, 2 * up):
                    lr.append(seq.Cyclic(base, top, step_size_up=up, step_size_down=down))  # 24
    # Batch size: constant, or doubled (or doubled twice) at some step.
    batch: list[seq.Sequence] = [seq.Constant(b) for b in (64, 128, 256, 512)]
    for low in (64, 128, 256):
        for switch in (30, 50, 70, 100, 150):
            batch.append(seq.MultiStep([low, 2 * low], milestones=[switch]))  # 15
    for low in (64, 128):
        for first, second in ((50, 100), (60, 120), (70, 140), (100, 150)):
            batch.append(seq.MultiStep([low, 2 * low, 4 * low], milestones=[first, second]))  # 8
    batch.append(seq.MultiStep([32, 64, 128, 256], milestones=[40, 80, 120]))
    batch.append(seq.MultiStep([128, 256, 512], milestones=[25, 75]))
    batch.append(seq.MultiStep([256, 128], milestones=[100]))  # 30 in all
    # Momentum: constant, or raised / lowered at some step.
    momentum: list[seq.Sequence] = [seq.Constant(m) for m in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)]
    for before, after in (
        (0.9, 0.99),
        (0.8, 0.9),
        (0.5, 0.9),
        (0.9, 0.95),
        (0.85, 0.95),
        (0.99, 0.9),
    ):
        for switch in (20, 50, 100, 150):
            momentum.append(seq.MultiStep([before, after], milestones=[switch]))  # 24
    for marks in ([30, 60], [50, 100], [100, 150]):
        momentum.append(seq.MultiStep([0.5, 0.9, 0.99], milestones=marks))  # 3
    for marks in ([20, 40, 80], [50, 100, 150], [25, 50, 75]):
        momentum.append(seq.MultiStep([0.8, 0.9, 0.95, 0.99], milestones=marks))  # 3
    return hd.GridSpace(lr=lr, batch_size=batch, momentum=momentum)  # 36 momentum


def draw(space: hd.GridSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` configurations of the grid shuffled with ``seed`` (no trial built yet)."""
    axes = list(space.axes.items())
    shape = tuple(len(options) for _, options in axes)
    total = int(np.prod(shape))
    if n > total:
        raise SystemExit(f"--sizes: the grid has {total} configurations, asked for {n}")
    order = np.random.default_rng(seed).permutation(total)[:n]
    index = np.unravel_index(order, shape)
    return [
        {name: options[int(index[a][i])] for a, (name, options) in enumerate(axes)}
        for i in range(n)
    ]


# -- one measurement (runs in its own process) ------------------------------------------------


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def plan_and_tree(
    plan: SearchPlan, trials: list[hd.Trial], steps: int
) -> tuple[float, float, float, list[Request], StageTree, list[Stage]]:
    """What is timed: ``add`` every trial (keeping the request handles, as a tuner does), then
    the stage tree and its critical path. Returns wall seconds of both, CPU seconds of all."""
    cpu = time.process_time()
    t0 = time.perf_counter()
    requests = [plan.add(trial, steps) for trial in trials]
    t1 = time.perf_counter()
    tree = plan.stage_tree()
    path = tree.critical_path()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, time.process_time() - cpu, requests, tree, path


def measure(n: int, steps: int, seed: int) -> dict[str, Any]:
    space = build_space()
    configs = draw(space, n, seed)
    gc.collect()
    base = _rss_mb()
    t0 = time.perf_counter()
    trials = [hd.Trial(**config) for config in configs]
    build = time.perf_counter() - t0
    plan = SearchPlan()
    add, tree_s, cpu, requests, tree, path = plan_and_tree(plan, trials, steps)
    peak = _rss_mb()
    stats = plan.stats()
    return {
        "kind": "memory",
        "trials": n,
        "grid": len(space),
        "build": build,
        "add": add,
        "tree": tree_s,
        "cpu": cpu,
        "rss_base": base,
        "rss_peak": peak,
        "depth": sum(r.node.depth + 1 for r in requests) / n,
        "requested": stats.requested_steps,
        "unique": stats.unique_steps,
        "merge_rate": stats.merge_rate,
        "nodes": stats.nodes,
        "stages": len(tree),
        "stage_steps": tree.total_steps,
        "path_stages": len(path),
        "path_steps": sum(s.steps for s in path),
        "path_seconds": sum(s.seconds for s in path),
    }


def measure_persist(n: int, steps: int, seed: int) -> dict[str, Any]:
    space = build_space()
    trials = [hd.Trial(**config) for config in draw(space, n, seed)]
    gc.collect()
    base = _rss_mb()
    with tempfile.TemporaryDirectory(prefix="hippo-bench-") as root:
        t0 = time.perf_counter()
        plan = SearchPlan.open(root)
        for trial in trials:
            plan.add(trial, steps)
        t1 = time.perf_counter()
        plan.flush()
        t2 = time.perf_counter()
        written = plan.stats()
        del plan
        gc.collect()
        t3 = time.perf_counter()
        again = SearchPlan.open(root)
        t4 = time.perf_counter()
        tree = again.stage_tree()
        path = tree.critical_path()
        t5 = time.perf_counter()
        journal = sum(
            os.path.getsize(os.path.join(folder, f))
            for folder, _, files in os.walk(root)
            for f in files
        )
        replayed = again.stats()
    if replayed != written:
        raise SystemExit(f"replay differs: wrote {written}, replayed {replayed}")
    return {
        "kind": "persist",
        "trials": n,
        "open_add": t1 - t0,
        "flush": t2 - t1,
        "reopen": t4 - t3,
        "tree": t5 - t4,
        "journal_mb": journal / 2**20,
        "rss_base": base,
        "rss_peak": _rss_mb(),
        "unique": replayed.unique_steps,
        "merge_rate": replayed.merge_rate,
        "stages": len(tree),
        "path_stages": len(path),
    }


def profile(n: int, steps: int, seed: int, top: int) -> None:
    space = build_space()
    trials = [hd.Trial(**config) for config in draw(space, n, seed)]
    profiler = cProfile.Profile()
    plan = SearchPlan()
    profiler.enable()
    plan_and_tree(plan, trials, steps)
    profiler.disable()
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        print(f"## {n} trials: add + stage_tree + critical_path, by {key}\n")
        print(out.getvalue())


# -- the driver -------------------------------------------------------------------------------

_TIMES = ("build", "add", "tree", "cpu", "open_add", "flush", "reopen")


def _child(args: list[str], repeat: int) -> dict[str, Any]:
    """Run one measurement ``repeat`` times, each in a fresh process: fastest times, largest RSS."""
    best: dict[str, Any] = {}
    for _ in range(repeat):
        command = [sys.executable, os.path.abspath(__file__), *args]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if not best:
            best = row
            continue
        for key in _TIMES:
            if key in row:
                best[key] = min(best[key], row[key])
        best["rss_peak"] = max(best["rss_peak"], row["rss_peak"])
    return best


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| trials | build trials (s) | plan.add (s) | stage tree + critical path (s) "
        "| add -> tree (s) | add -> tree CPU (s) | us/trial (add -> tree) "
        "| growth vs previous row | peak RSS (MB) "
        "| RSS before trials (MB) | requested steps | unique steps | merge rate | plan nodes "
        "| mean nodes on a trial's path | stages | critical path (stages / steps / est. s) |"
    )
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    previous: dict[str, Any] | None = None
    for r in rows:
        total = r["add"] + r["tree"]
        growth = (
            ""
            if previous is None
            else (
                f"{total / (previous['add'] + previous['tree']):.1f}x time for "
                f"{r['trials'] / previous['trials']:.0f}x trials"
            )
        )
        lines.append(
            f"| {r['trials']:,} | {r['build']:.2f} | {r['add']:.2f} | {r['tree']:.2f} "
            f"| {total:.2f} | {r['cpu']:.2f} | {1e6 * total / r['trials']:.0f} | {growth} "
            f"| {r['rss_peak']:.0f} "
            f"| {r['rss_base']:.0f} | {r['requested']:,} | {r['unique']:,} "
            f"| {r['merge_rate']:.2f} | {r['nodes']:,} | {r['depth']:.2f} | {r['stages']:,} "
            f"| {r['path_stages']} / {r['path_steps']} / {r['path_seconds']:.0f} |"
        )
        previous = r
    return "\n".join(lines)


def _persist_table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| journaled plan (local dir) | open + add (s) | flush (s) | journal (MB) "
            "| reopen + replay (s) | stage tree + critical path after replay (s) | peak RSS (MB) "
            "| unique steps | merge rate | stages |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {r['trials']:,} trials | {r['open_add']:.2f} | {r['flush']:.2f} "
            f"| {r['journal_mb']:.1f} | {r['reopen']:.2f} | {r['tree']:.2f} | {r['rss_peak']:.0f} "
            f"| {r['unique']:,} | {r['merge_rate']:.2f} | {r['stages']:,} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000, 10_000, 100_000],
        help="numbers of trials (default: 1000 10000 100000)",
    )
    parser.add_argument("--steps", type=int, default=200, help="steps each trial asks for")
    parser.add_argument("--seed", type=int, default=0, help="seed of the grid's shuffle")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="fresh processes per row; the fastest times are shown (default 3)",
    )
    parser.add_argument(
        "--persist",
        type=int,
        default=GOAL_TRIALS,
        help="trials for the journaled (SearchPlan.open) row; 0 skips it",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="instead of the table, cProfile add + stage tree for N trials",
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown by --profile")
    parser.add_argument("--child", choices=["memory", "persist"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.steps < 1 or args.repeat < 1 or args.persist < 0:
        parser.error("--sizes, --steps and --repeat must be >= 1, --persist >= 0")

    if args.profile:
        profile(args.profile, args.steps, args.seed, args.top)
        return 0
    if args.child == "memory":
        print(json.dumps(measure(args.sizes[0], args.steps, args.seed)))
        return 0
    if args.child == "persist":
        print(json.dumps(measure_persist(args.sizes[0], args.steps, args.seed)))
        return 0

    common = ["--steps", str(args.steps), "--seed", str(args.seed)]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# planner: {args.steps} steps per trial, 3 sequential hyper-parameters, grid of "
        f"{len(build_space()):,}; {os.cpu_count()} CPUs (load average {load} at start), "
        f"Python {sys.version.split()[0]}, numpy {np.__version__}, hippo_dask "
        f"{hd.__version__}; best of {args.repeat} fresh processes per row\n",
        flush=True,
    )
    rows = []
    for n in sorted(args.sizes):
        rows.append(_child(["--child", "memory", "--sizes", str(n), *common], args.repeat))
    print(_table(rows))
    if args.persist:
        print()
        persisted = _child(
            ["--child", "persist", "--sizes", str(args.persist), *common], args.repeat
        )
        print(_persist_table(persisted))
    print()
    print(
        "Times: wall clock (time.perf_counter). Peak RSS: resource.getrusage(RUSAGE_SELF)"
        ".ru_maxrss of the fresh process that measured the row (interpreter and imports "
        "included)."
    )
    for r in rows:
        if r["trials"] == GOAL_TRIALS:
            total = r["add"] + r["tree"]
            ok = total <= GOAL_SECONDS and r["rss_peak"] <= GOAL_MB
            print(
                f"Goal ({GOAL_TRIALS:,} trials, add -> stage tree + critical path, <= "
                f"{GOAL_SECONDS:g} s and <= {GOAL_MB:.0f} MB): {total:.2f} s, "
                f"{r['rss_peak']:.0f} MB -> {'met' if ok else 'MISSED'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
