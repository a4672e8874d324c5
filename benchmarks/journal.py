"""Journal compaction (issue 12): reopen and refresh a plan of 10k and 100k requests, with and
without a snapshot.

A journal only grows, so opening a study by replaying every segment costs more every day it
runs. A snapshot (``SearchPlan.compact``, ``hippo-dask compact``, a ``Study`` on close) holds the
replayed plan; opening reads it and only the segments it does not hold.

The history: ``N`` requests for ``N`` distinct trials of the planner benchmark's grid
(``benchmarks/planner.py``: three sequential hyper-parameters, 200 steps, shared prefixes), each
with its metrics, a profile and a checkpoint at its first branch point, written by one writer
that flushes every 100 requests (``N / 100`` segments, ``4 N`` records). With ``--reruns R`` the
study is then run ``R - 1`` more times (each a new session asking for the same ``N`` requests,
whose answers are in the plan: ``N`` more request records each), so the history grows while the
plan does not. Then, per size, on local disk:

- reopen: ``SearchPlan.open`` of the study: a full replay; from the snapshot; and from the
  snapshot after ``compact(prune=True)`` deleted the segments it holds (nothing left to list);
- refresh: after another writer journals 100 more requests with their metrics (one segment),
  ``plan.refresh()`` of a plan opened each way, and a refresh that finds nothing new;
- compact: writing the snapshot, and its size next to the segments'.

Timings are wall-clock (``time.perf_counter``), the fastest of ``--repeat`` runs (the journal is
built once per size). Each size runs in its own process.

    .venv/bin/python benchmarks/journal.py                  # 10k and 100k
    .venv/bin/python benchmarks/journal.py --sizes 10000 --repeat 3
    .venv/bin/python benchmarks/journal.py --reruns 5       # the same plans, 5 runs of history
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import hippo_dask as hd
from hippo_dask.plan import SearchPlan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from planner import build_space, draw

STEPS = 200
PER_SEGMENT = 100


def best(repeat: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def write_history(root: str, trials: list[hd.Trial], reruns: int = 1) -> None:
    plan = SearchPlan.open(root)
    for i, trial in enumerate(trials):
        request = plan.add(trial, STEPS)
        plan.record_metrics(request.node, STEPS, {"score": i / len(trials), "loss": 1.0})
        plan.record_profile(request.node, 0.01)
        branch = max(request.node.start, 1)
        plan.record_checkpoint(plan.locate(trial, branch), branch, f"ckpt/{i}.ckpt")  # type: ignore[arg-type]
        if (i + 1) % PER_SEGMENT == 0:
            plan.flush()
    plan.flush()
    for _ in range(reruns - 1):
        with SearchPlan.open(root) as rerun:
            for i, trial in enumerate(trials):
                assert rerun.add(trial, STEPS).done
                if (i + 1) % PER_SEGMENT == 0:
                    rerun.flush()


def folder_bytes(path: str, suffix: str) -> int:
    return sum(
        os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.endswith(suffix)
    )


def measure(size: int, repeat: int, reruns: int = 1) -> dict[str, Any]:
    configs = draw(build_space(), size + PER_SEGMENT)
    trials = [hd.Trial(**c) for c in configs]
    base, more = trials[:size], trials[size:]
    work = tempfile.mkdtemp(prefix="hippo-journal-")
    try:
        root = os.path.join(work, "study")
        started = time.perf_counter()
        write_history(root, base, reruns)
        out: dict[str, Any] = {
            "size": size,
            "reruns": reruns,
            "write_s": time.perf_counter() - started,
        }
        segments = [n for n in os.listdir(os.path.join(root, "plan")) if n.endswith(".jsonl")]
        out["segments"] = len(segments)
        out["records"] = (3 + reruns) * size
        out["segments_mb"] = folder_bytes(os.path.join(root, "plan"), ".jsonl") / 1e6

        out["reopen_replay_s"] = best(repeat, lambda: SearchPlan.open(root))
        replayed = SearchPlan.open(root)
        started = time.perf_counter()
        replayed.compact()
        out["compact_s"] = time.perf_counter() - started
        out["snapshot_mb"] = folder_bytes(os.path.join(root, "plan", "snapshots"), ".snap") / 1e6
        out["reopen_snapshot_s"] = best(repeat, lambda: SearchPlan.open(root))
        from_snapshot = SearchPlan.open(root)
        assert from_snapshot.stats() == replayed.stats() and from_snapshot.since_snapshot == 0

        pruned_root = os.path.join(work, "pruned")
        shutil.copytree(root, pruned_root)
        SearchPlan.open(pruned_root).compact(prune=True)
        out["reopen_pruned_s"] = best(repeat, lambda: SearchPlan.open(pruned_root))

        # Refresh: nothing new, then one new segment of 100 requests with their metrics.
        readers = {
            "replay": replayed,
            "snapshot": from_snapshot,
            "pruned": SearchPlan.open(pruned_root),
        }
        for name, reader in readers.items():
            out[f"refresh_empty_{name}_s"] = best(repeat, reader.refresh)
        for _name, target in (("replay", root), ("pruned", pruned_root)):
            with SearchPlan.open(target) as writer:
                for i, trial in enumerate(more):
                    request = writer.add(trial, STEPS)
                    writer.record_metrics(request.node, STEPS, {"score": float(i), "loss": 1.0})
        for name, reader in readers.items():
            gc.collect()
            started = time.perf_counter()
            applied = reader.refresh()
            out[f"refresh_new_{name}_s"] = time.perf_counter() - started
            assert applied == 2 * PER_SEGMENT, (name, applied)
            assert reader.stats().requests == reruns * size + PER_SEGMENT
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| requests (runs) | segments (records, MB) | snapshot MB (compact s) | reopen: replay | "
        "reopen: snapshot | reopen: snapshot, pruned | refresh +100 requests: replay / snapshot "
        "/ pruned | refresh, nothing new: replay / snapshot / pruned |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['size']:,} ({r['reruns']}) | {r['segments']:,} ({r['records']:,}, {r['segments_mb']:.1f}) | "
            f"{r['snapshot_mb']:.1f} ({r['compact_s']:.2f}) | {r['reopen_replay_s']:.2f} s | "
            f"{r['reopen_snapshot_s']:.2f} s | {r['reopen_pruned_s']:.2f} s | "
            f"{r['refresh_new_replay_s'] * 1e3:.0f} / {r['refresh_new_snapshot_s'] * 1e3:.0f} / "
            f"{r['refresh_new_pruned_s'] * 1e3:.0f} ms | "
            f"{r['refresh_empty_replay_s'] * 1e3:.1f} / {r['refresh_empty_snapshot_s'] * 1e3:.1f} "
            f"/ {r['refresh_empty_pruned_s'] * 1e3:.1f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--reruns", type=int, default=1, help="runs of the study that wrote the history (default 1)"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("error", hd.HippoWarning)  # a clean journal: any warning is a bug
    if args.one is not None:
        print(json.dumps(measure(args.one, args.repeat, args.reruns)))
        return
    rows = []
    for size in args.sizes:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(size),
                "--repeat",
                str(args.repeat),
                "--reruns",
                str(args.reruns),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise SystemExit(done.stderr)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows))


if __name__ == "__main__":
    main()
