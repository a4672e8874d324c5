"""Exactness with real torch training: a shared grid study equals every trial trained alone.

The digits CNN trains on CPU with one thread and deterministic algorithms, so "equal" means
bitwise: the same final weights tensor for tensor, and the same validation metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from distributed import Client, LocalCluster

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.digits import DigitsTrainer

STEPS = 60

SPACE = hd.GridSpace(
    lr=[
        seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
        seq.StepLR(0.1, gamma=0.1, milestones=[30, 50]),
        seq.Warmup(5, 0.1, then=seq.Exponential(0.1, gamma=0.97)),
    ],
    batch_size=[seq.Constant(32), seq.MultiStep([32, 64], milestones=[20])],
    optimizer=["sgd", "sgd_momentum"],
    seed=[0],
)


def alone(trial: hd.Trial, steps: int) -> DigitsTrainer:
    """The trial trained without the engine: one step at a time, setup on every change."""
    trainer = DigitsTrainer(dict(trial.fixed))
    current: dict[str, object] = {}
    for step in range(steps):
        changed = {k: v for k, v in trial.values_at(step).items() if current.get(k) != v}
        if changed:
            trainer.setup(changed)
            current.update(changed)
        trainer.train(1)
    return trainer


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, resources={"GPU": 1}, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_shared_grid_equals_every_trial_trained_alone(client: Client, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # as on the single-threaded workers
    study = hd.Study("digits", DigitsTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(SPACE, metric="val_acc", steps=STEPS))
    assert result.stats.executed_steps == result.stats.unique_steps < result.stats.requested_steps
    assert (
        result.stats.stages_resumed_in_memory > 0
        and result.stats.stages_resumed_from_checkpoint > 0
    )
    by_id = {r.trial.id: r for r in result.records}
    for trial in SPACE:
        reference = alone(trial, STEPS)
        assert by_id[trial.id].metrics == reference.evaluate()
        found = study.plan.latest_checkpoint(study._plan_trial(trial), STEPS)
        assert found is not None and found[0] == STEPS
        weights = study.checkpoints.load(found[1])["trainer"]["model"]
        expected = reference.model.state_dict()
        assert weights.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(weights[name], tensor), f"{trial}: {name} differs"
    assert result.best is not None
    assert result.best.metrics == max(
        (r.metrics for r in result.records), key=lambda m: m["val_acc"]
    )  # type: ignore[arg-type,index,return-value]
