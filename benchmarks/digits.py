"""Real training, shared against trial by trial: the demo's digits grid, with and without sharing.

Both runs use the same Dask cluster (workers warmed up first, so process start-up is not
counted), fresh storage, and the same grid; the only difference is ``Study(sharing=...)``.
The goal (issue 3): the wall-clock ratio unshared / shared is at least 0.8 x the grid's merge
rate, i.e. sharing turns nearly all of the saved steps into saved time. Steps are not all equal
(a batch of 128 costs about three of 32, and schedules that change every step cost a ``setup``
per step), so the table also gives the compute merge rate: seconds inside ``Trainer.train``
without sharing over seconds with it, measured in the same run.

    .venv/bin/python benchmarks/digits.py [--workers 2] [--steps 600] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from digits_grid import SPACE  # noqa: E402

import hippo_dask as hd  # noqa: E402
from hippo_dask.plan import SearchPlan
from hippo_dask.testing.digits import DigitsTrainer, digits_data  # noqa: E402


def warm() -> None:
    """Pay a worker's one-time start-up before timing: torch's imports (the first optimizer
    alone imports torch._dynamo and sympy, ~1.5 s), the data, the first step."""
    import torch

    torch.set_num_threads(1)
    digits_data()
    trainer = DigitsTrainer({"optimizer": "sgd", "seed": 0})
    trainer.setup({"lr": 0.1, "batch_size": 32})
    trainer.train(1)


def run(client: Client, steps: int, sharing: bool) -> tuple[float, hd.Result]:
    with tempfile.TemporaryDirectory() as storage:
        study = hd.Study("digits", DigitsTrainer, storage=storage, client=client, sharing=sharing)
        began = time.perf_counter()
        result = study.tune(hd.tuners.Grid(SPACE, metric="val_acc", steps=steps))
        return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    plan = SearchPlan()
    for trial in SPACE:
        plan.add(trial, args.steps)
    merge = plan.stats().merge_rate
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            resources={"GPU": 1},
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(warm)
        rows = []
        for _ in range(args.repeat):
            shared_s, shared = run(client, args.steps, True)
            alone_s, alone = run(client, args.steps, False)
            rows.append((shared_s, shared, alone_s, alone))
    print(
        f"# digits grid: {len(SPACE)} trials x {args.steps} steps, {args.workers} workers, "
        f"merge rate {merge:.2f}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| run | executed steps shared / alone | wall s shared | wall s alone | speed-up "
        "| speed-up / merge rate | train-s shared / alone (compute merge rate) "
        "| speed-up / compute merge rate | worker-s shared / alone | best val_acc shared / alone |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, (shared_s, shared, alone_s, alone) in enumerate(rows, 1):
        speedup = alone_s / shared_s
        compute = alone.stats.train_seconds / shared.stats.train_seconds
        best_a = (
            shared.best.metrics["val_acc"] if shared.best and shared.best.metrics else float("nan")
        )
        best_b = (
            alone.best.metrics["val_acc"] if alone.best and alone.best.metrics else float("nan")
        )
        print(
            f"| {i} | {shared.stats.executed_steps:,} / {alone.stats.executed_steps:,} "
            f"| {shared_s:.1f} | {alone_s:.1f} | {speedup:.2f}x | {speedup / merge:.2f} "
            f"| {shared.stats.train_seconds:.1f} / {alone.stats.train_seconds:.1f} ({compute:.2f}) "
            f"| {speedup / compute:.2f} "
            f"| {shared.stats.worker_seconds:.1f} / {alone.stats.worker_seconds:.1f} "
            f"| {best_a:.4f} / {best_b:.4f} |"
        )
    ok = all(a / s >= 0.8 * merge for s, _, a, _ in rows)
    print(
        f"\nGoal (speed-up >= 0.8 x merge rate = {0.8 * merge:.2f}x): {'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
