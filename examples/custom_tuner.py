"""A custom tuner in 30 lines: "extend the leaders", on the digits CNN.

A tuner is a class with one coroutine, ``run(self, study)``, that asks for metrics with
``await study.train(trial, steps)``. The study answers from its plan when it can and trains
only what is missing, resuming from checkpoints, so a tuner never thinks about checkpoints,
workers or sharing. This one trains every trial a little, then keeps doubling the training of
the current leaders, and dropping the rest, until the budget of steps is reached.

    .venv/bin/python examples/custom_tuner.py
"""

from __future__ import annotations

import hippo_dask as hd
from hippo_dask import seq


class ExtendTheLeaders(hd.Tuner):
    """Train all trials ``start`` steps; then, doubling the steps each round, go on with the
    best ``keep`` trials until ``max_steps``. Deterministic: it uses no randomness at all."""

    def __init__(self, space, metric, mode="max", *, start, max_steps, keep=2):
        super().__init__(metric, mode)
        self.trials, self.start, self.max_steps, self.keep = list(space), start, max_steps, keep
        self.dropped: set[str] = set()

    async def run(self, study):
        alive, steps = self.trials, self.start
        while True:
            results = await hd.wait_all(study.train(t, steps) for t in alive)
            scored = [
                (self.score(r if isinstance(r, dict) else None), i) for i, r in enumerate(results)
            ]
            ranked = [alive[i] for _, i in sorted(scored, key=lambda s: (-s[0], s[1]))]
            if steps >= self.max_steps:
                return
            self.dropped.update(t.id for t in ranked[self.keep :])
            alive, steps = ranked[: self.keep], min(2 * steps, self.max_steps)

    def trial_status(self, trial):
        return "stopped" if trial.id in self.dropped else None


SPACE = hd.GridSpace(
    lr=[seq.StepLR(0.1, 0.1, [m]) for m in (150, 200, 250)] + [seq.Cosine(0.1, 300)],
    batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [100])],
    optimizer=["sgd", "sgd_momentum"],
)


if __name__ == "__main__":
    from hippo_dask.testing.digits import DigitsTrainer

    with hd.Study("digits-leaders", DigitsTrainer, storage="./hippo-runs") as study:
        result = study.tune(ExtendTheLeaders(SPACE, metric="val_acc", start=50, max_steps=400))
    print(
        result.trials[["optimizer", "lr", "batch_size", "steps", "status", "val_acc"]]
        .sort_values("steps", ascending=False)
        .to_string(index=False)
    )
    print("best:", result.best.config if result.best else None)
    s = result.stats
    print(
        f"requested {s.requested_steps} steps, executed {s.executed_steps} (merge rate {s.merge_rate:.2f})"
    )
