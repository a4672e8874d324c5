"""The digits study on SLURM against the same study on the embedded cluster.

Two figures for issue 6, measured in one run on the single-node SLURM that ``make slurm-up``
starts on this machine (CPU workers: ``gpus_per_job=0``, one worker per job):

- **time to the first stage**: from the call ``hd.cluster.slurm(...)`` to the moment the first
  stage started training (its ``started`` time in the metrics store), with the study started
  right after the call. It covers ``sbatch``, the job starting, the worker connecting, the
  worker importing torch and loading the data, and the driver's first submission.
- **study wall-clock**: the same grid study (the demo's) on SLURM jobs
  and on ``hd.cluster.local`` with the same number of workers, each on fresh storage, timed
  two ways: from asking for the cluster to the result (what a user waits for), and from
  ``study.tune`` to the result on a cluster whose workers are already up.

    make slurm-up && .venv/bin/python benchmarks/slurm.py [--jobs 2] [--steps 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from digits_grid import SPACE  # noqa: E402

import hippo_dask as hd  # noqa: E402
from hippo_dask.testing.digits import DigitsTrainer  # noqa: E402

JOB = {
    "gpus_per_job": 0,
    "walltime": "00:30:00",
    "cores": 1,
    "memory": "2GB",
    "interface": "lo",
    "scheduler_options": {"interface": "lo", "dashboard_address": "127.0.0.1:0"},
}


def study_on(client: Any, storage: str, steps: int) -> tuple[float, hd.Result, hd.Study]:
    """Run the grid study on ``client``; return its ``tune`` wall-clock, result and study."""
    study = hd.Study("digits", DigitsTrainer, storage=storage, client=client)
    began = time.perf_counter()
    result = study.tune(hd.tuners.Grid(SPACE, metric="val_acc", steps=steps))
    return time.perf_counter() - began, result, study


def measure(kind: str, jobs: int, steps: int) -> dict[str, Any]:
    """Cold (cluster start + study) and warm (a second study on the running cluster) figures."""
    row: dict[str, Any] = {"kind": kind}
    asked = time.time()
    began = time.perf_counter()
    if kind == "slurm":
        logs = tempfile.mkdtemp(prefix="hippo-slurm-logs-")  # the jobs write here until cancelled
        client = hd.cluster.slurm(jobs=jobs, log_directory=logs, **JOB)
    else:
        client = hd.cluster.local(n_workers=jobs, gpus=[])
    with client:
        row["cluster call s"] = time.perf_counter() - began
        with tempfile.TemporaryDirectory() as storage:
            cold, result, study = study_on(client, storage, steps)
            row["cold s"] = time.perf_counter() - began
            stages = study.metrics_store.read_stages()
            row["first stage s"] = float(stages["started"].min()) - asked
            row["executed"] = result.stats.executed_steps
            row["best"] = (
                result.best.metrics["val_acc"] if result.best and result.best.metrics else None
            )
            names = {
                a: str(w["name"]) for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
            }
            row["workers"] = sorted({names.get(a, a) for a in stages["worker"]})
        with tempfile.TemporaryDirectory() as storage:
            row["warm s"], again, _ = study_on(client, storage, steps)
            assert again.stats.executed_steps == row["executed"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs = local workers")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    rows = [measure("slurm", args.jobs, args.steps), measure("local", args.jobs, args.steps)]
    print(
        f"# digits grid: {len(SPACE)} trials x {args.steps} steps, {args.jobs} workers "
        f"(SLURM: {args.jobs} jobs of one CPU worker); {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| cluster | cluster call returns (s) | call -> first stage training (s) "
        "| call -> result (s) | study on warm workers (s) | executed steps | best val_acc | workers |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['cluster call s']:.1f} | {r['first stage s']:.1f} | {r['cold s']:.1f} "
            f"| {r['warm s']:.1f} | {r['executed']:,} | {r['best']:.4f} | {', '.join(r['workers'])} |"
        )
    slurm, local = rows
    print(
        f"\nSLURM / local: {slurm['cold s'] / local['cold s']:.2f}x from the cluster call, "
        f"{slurm['warm s'] / local['warm s']:.2f}x on warm workers; same executed steps and best: "
        f"{slurm['executed'] == local['executed'] and slurm['best'] == local['best']}"
    )


if __name__ == "__main__":
    main()
