"""The digits grid study on SLURM: Dask workers as SLURM jobs, one per GPU, no sbatch script.

Run it on a login node (or inside a SLURM job, see below); it submits the worker jobs itself
through dask-jobqueue, runs the study, and cancels the jobs when done::

    python examples/slurm_digits.py --partition gpu --gpus-per-job 2 --jobs 2 --walltime 01:00:00 \\
        --prologue "module load cuda" --prologue "conda activate hippo-dask" \\
        --storage /shared/scratch/$USER/hippo-runs

    # CPU-only partition (or the single-node SLURM `make slurm-up` starts on this machine):
    python examples/slurm_digits.py --gpus-per-job 0 --jobs 2 --cores 1 --memory 2GB --interface lo

``--adaptive 1 8`` scales between 1 and 8 jobs with the number of stages ready to run. The
storage must be reachable from the workers: a shared file system path, or ``s3://bucket/prefix``
(credentials from the environment or ``--storage-option key=value``). Run the same command again
after a crash, a cancelled job or a finished run: nothing done is trained again.

Running the driver itself as a SLURM job (so nothing stays on the login node)::

    sbatch -p cpu -c 1 --mem 4G -t 04:00:00 --wrap "python examples/slurm_digits.py --partition gpu ..."

The driver's job only needs a core; the worker jobs it submits must be able to reach it (pass
``--interface`` with the cluster's network, e.g. ``ib0``, if the default is not routable).
"""

from __future__ import annotations

import argparse
import logging
import time

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.digits import DigitsTrainer

SPACE = hd.GridSpace(
    lr=[
        *[
            seq.StepLR(0.1, gamma=0.1, milestones=[m1, m2])
            for m1 in (300, 400)
            for m2 in (450, 550)
        ],
        seq.Warmup(50, 0.1, then=seq.Exponential(0.1, gamma=0.996)),
        seq.Warmup(50, 0.1, then=seq.StepLR(0.1, gamma=0.1, milestones=[350, 500])),
    ],
    batch_size=[seq.Constant(32), seq.MultiStep([32, 64], milestones=[300])],
    optimizer=["sgd", "sgd_momentum"],
    seed=[0],
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--storage", default="./hippo-runs", help="shared path or s3://bucket/prefix"
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option, e.g. endpoint_url=https://...",
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--gpus-per-job", type=int, default=1, help="0: CPU workers")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--adaptive", type=int, nargs=2, metavar=("MIN", "MAX"))
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--walltime", default="01:00:00")
    parser.add_argument("--cores", type=int, help="per job (default: one per worker)")
    parser.add_argument("--memory", help="per job, e.g. 32GB (default: 4 GiB per worker)")
    parser.add_argument("--interface", help="network interface of workers and scheduler, e.g. ib0")
    parser.add_argument(
        "--prologue",
        action="append",
        default=[],
        help="a line to run in each job first (module load ..., conda activate ...)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    options: dict[str, object] = {"job_script_prologue": args.prologue}
    for key in ("cores", "memory", "interface"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.interface:
        options["scheduler_options"] = {"interface": args.interface}
    started = time.monotonic()
    with hd.cluster.slurm(
        gpus_per_job=args.gpus_per_job,
        jobs=args.jobs,
        partition=args.partition,
        account=args.account,
        walltime=args.walltime,
        adaptive=tuple(args.adaptive) if args.adaptive else None,
        **options,
    ) as client:
        print(client.cluster.job_script())
        storage_options = dict(item.split("=", 1) for item in args.storage_option)
        study = hd.Study(
            "digits-slurm",
            DigitsTrainer,
            storage=args.storage,
            client=client,
            storage_options=storage_options,
        )
        print(
            f"{len(SPACE)} trials x {args.steps} steps; storage {study.root}; "
            f"dashboard {client.dashboard_link}"
        )
        result = study.tune(hd.tuners.Grid(SPACE, metric="val_acc", mode="max", steps=args.steps))
        frame = study.metrics_store.read_stages()
        names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
        jobs = sorted({str(names[a]).split("-")[0] for a in frame["worker"] if a in names})

    best = result.best
    if best is not None:
        print(f"\nBest: {best.config}\n      {best.metrics}")
    s = result.stats
    print(
        f"\nSteps requested {s.requested_steps:,}, unique {s.unique_steps:,}, executed "
        f"{s.executed_steps:,}; {s.stages} stages in SLURM jobs {', '.join(jobs) or '-'}; "
        f"wall-clock {time.monotonic() - started:.1f} s with the jobs' start."
    )


if __name__ == "__main__":
    main()
