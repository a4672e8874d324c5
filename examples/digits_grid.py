"""Grid search over learning-rate and batch-size schedules of a small CNN on sklearn's digits.

Run it with ``make demo`` (or ``.venv/bin/python examples/digits_grid.py``). It starts a Dask
cluster on this machine (one worker per GPU, or one per core), trains every configuration of
the grid, sharing each common prefix of schedules, and prints the trials, the best one, and
what sharing saved. Run it again: everything is in ``./hippo-runs/``, so nothing is retrained.

The trainer is :class:`hippo_dask.testing.digits.DigitsTrainer`; read it as the example of how
to write a resumable :class:`hippo_dask.Trainer`.
"""

from __future__ import annotations

import argparse
import logging

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.digits import DigitsTrainer

STEPS = 600  # minibatches; about 13 epochs at batch size 32

SPACE = hd.GridSpace(
    lr=[
        # Step decays that agree for the first 300 steps, then branch at 300, 400, 450, 550.
        *[
            seq.StepLR(0.1, gamma=0.1, milestones=[m1, m2])
            for m1 in (300, 400)
            for m2 in (450, 550)
        ],
        # Two warm-ups that share their ramp.
        seq.Warmup(50, 0.1, then=seq.Exponential(0.1, gamma=0.996)),
        seq.Warmup(50, 0.1, then=seq.StepLR(0.1, gamma=0.1, milestones=[350, 500])),
    ],
    batch_size=[
        seq.Constant(32),
        seq.MultiStep([32, 64], milestones=[300]),
        seq.MultiStep([32, 128], milestones=[300]),
    ],
    optimizer=["sgd", "sgd_momentum"],
    seed=[0],
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="./hippo-runs", help="where the study is kept")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with hd.Study("digits-grid", DigitsTrainer, storage=args.storage) as study:
        print(
            f"{len(SPACE)} trials x {args.steps} steps on {len(study.client.nthreads())} "
            f"workers; storage {study.root}"
        )
        result = study.tune(hd.tuners.Grid(SPACE, metric="val_acc", mode="max", steps=args.steps))

    table = result.trials.sort_values("val_acc", ascending=False)
    columns = ["optimizer", "lr", "batch_size", "val_acc", "val_loss", "status"]
    with_pandas_width = table[columns].head(10).to_string(index=False, max_colwidth=48)
    print("\nTop 10 trials by validation accuracy:")
    print(with_pandas_width)
    best = result.best
    if best is not None:
        print(f"\nBest: {best.config}\n      {best.metrics}")
    s = result.stats
    print(
        f"\nSteps requested {s.requested_steps:,}, unique after merging {s.unique_steps:,} "
        f"(merge rate {s.merge_rate:.2f}), executed by this run {s.executed_steps:,}."
        f"\nStages {s.stages}: {s.stages_resumed_in_memory} continued in worker memory, "
        f"{s.stages_resumed_from_checkpoint} from a checkpoint, {s.stages_from_scratch} from scratch."
        f"\nWorker-seconds used {s.worker_seconds:.1f}; a trial-by-trial run would have used "
        f"about {s.trial_by_trial_seconds:.1f} (saved {s.saved_seconds:.1f}). "
        f"Wall-clock {s.wall_seconds:.1f} s."
    )
    if s.executed_steps == 0:
        print(
            "Nothing was trained: every answer came from the stored plan. "
            "Delete the storage folder to train again."
        )


if __name__ == "__main__":
    main()
