"""Trainers that raise, and metrics that are NaN: the study goes on and says what happened."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import executed, standalone

STEPS = 60


def grid(log: str, **extra: list[object]) -> hd.GridSpace:
    return hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [30]), seq.StepLR(0.1, 0.1, [40]), seq.Constant(0.05)],
        batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [20])],
        log=[log],
        **extra,
    )


@pytest.mark.parametrize("method", ["__init__", "setup", "train", "evaluate", "state_dict"])
def test_a_raising_trainer_fails_its_trials_and_only_those(
    client: Client, tmp_path: Path, method: str
) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log, fail_in=[None, [method, 0]])
    study = hd.Study("raising", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    by_id = {r.trial.id: r for r in result.records}
    assert len(by_id) == 12
    for trial in space:
        record = by_id[trial.id]
        if trial.fixed["fail_in"] is None:
            assert record.status == "done"
            assert record.metrics is not None and record.metrics["score"] == standalone(
                trial, STEPS
            )
        else:
            assert record.status == "failed" and record.error_type == "ValueError"
            assert f"simulated failure in {method}" in (record.error or "")
            assert record.traceback and "_maybe_fail" in record.traceback
    frame = result.trials.set_index("trial_id")
    assert (frame["status"] == "failed").sum() == 6
    assert result.best is not None and result.best.trial.fixed["fail_in"] is None


def test_retries_run_a_failed_stage_again(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log, fail_in=[["train", 25]], fail_once=[str(tmp_path / "failed-once")])
    study = hd.Study("retry", SimulatedTrainer, storage=str(tmp_path), client=client, retries=1)
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    assert all(r.status == "done" for r in result.records)
    assert (tmp_path / "failed-once").exists()
    for r in result.records:
        assert r.metrics is not None and r.metrics["score"] == standalone(r.trial, STEPS)


def test_non_finite_metrics_are_kept_and_rank_worst(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log, nan=[False, True, "inf", "-inf"])
    study = hd.Study("nan", SimulatedTrainer, storage=str(tmp_path), client=client)
    for mode in ("max", "min"):
        result = study.tune(hd.tuners.Grid(space, metric="score", mode=mode, steps=STEPS))
        odd = [r for r in result.records if r.trial.fixed["nan"] is not False]
        assert len(odd) == 18
        assert all(not math.isfinite(r.metrics["score"]) for r in odd)  # type: ignore[index]
        assert result.best is not None and result.best.trial.fixed["nan"] is False
    assert executed(log) == study.plan.stats().unique_steps  # the second tune reused everything
    frame = study.metrics_store.read()
    assert frame["score"].isna().sum() == 6
    assert (frame["score"] == math.inf).sum() == 6 and (frame["score"] == -math.inf).sum() == 6
    reopened = SearchPlan.open(study.root)
    scores = [m["score"] for n in reopened.nodes for m in n.metrics.values()]
    assert sum(math.isnan(v) for v in scores) == 6 and sum(math.isinf(v) for v in scores) == 12


def test_a_metric_the_trainer_never_returns_stops_the_study(client: Client, tmp_path: Path) -> None:
    study = hd.Study("metric", SimulatedTrainer, storage=str(tmp_path), client=client)
    with pytest.raises(hd.HippoError, match=r"metric 'accuracy'.*returns \['score', 'steps'\]"):
        study.tune(hd.tuners.Grid(grid(str(tmp_path / "log")), metric="accuracy", steps=STEPS))
