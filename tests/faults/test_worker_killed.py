"""A worker process killed in the middle of a stage: the study finishes with the same results.

The gate of the simulated trainer holds one stage at a known step, the test kills that worker's
process with SIGKILL (its nanny starts a new one under a new address), then opens the gate. The
driver notices the worker left, cancels what was pinned to it, and plans again from the latest
checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import executed, kill_worker, make_client, standalone, until

STEPS = 200


def space(log: str, gate: str) -> list[hd.Trial]:
    grid = hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [60, 120]), seq.StepLR(0.1, 0.1, [60, 150]), seq.Constant(0.05)],
        batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [100])],
        log=[log],
    )
    # One more trial whose stage the gate holds at step 140 (its batch size changes there).
    held = hd.Trial(
        lr=seq.Constant(0.2), batch_size=seq.MultiStep([32, 64], [140]), log=log, gate=[140, gate]
    )
    return [*grid, held]


def test_a_worker_killed_mid_stage_costs_only_its_unsaved_steps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    trials = space(log, gate)
    caplog.set_level(logging.WARNING, logger="hippo_dask")
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study("killed", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)

        async def scenario() -> list[dict[str, float]]:
            jobs = [asyncio.ensure_future(study.train(t, STEPS)) for t in trials]
            await until(lambda: any(e.get("waiting") == 140 for e in read_log(log)), "the gate")
            victim = next(e["pid"] for e in read_log(log) if e.get("waiting") == 140)
            await kill_worker(client, victim)
            Path(gate).touch()
            try:
                return list(await asyncio.gather(*jobs))
            finally:
                await study._close_driver()

        results = asyncio.run(scenario())
    assert any(
        re.search(r"left with \d+ stage\(s\); planning them again", r.getMessage())
        for r in caplog.records
    )
    for trial, metrics in zip(trials, results):
        assert metrics["score"] == standalone(trial, STEPS)
    # Work lost: at most what the killed stage trained since its last checkpoint.
    unique = study.plan.stats().unique_steps
    assert unique <= executed(log) <= unique + 140
    # The zarr store holds each final metric exactly once.
    frame = study.metrics_store.read()
    final = frame[frame["step"] == STEPS]
    assert (
        len(final) == len(final.drop_duplicates(subset=["trial", "step"])) == len(study.plan.nodes)
    )


def test_a_stage_that_keeps_killing_its_worker_fails_its_trials_instead_of_looping(
    tmp_path: Path,
) -> None:
    log = str(tmp_path / "train.log")
    space = hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [30]), seq.Constant(0.05)], crash_at=[None, 45], log=[log]
    )
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study(
            "crashing", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client
        )
        result = study.tune(hd.tuners.Grid(space, metric="score", steps=60))
    for record in result.records:
        if record.trial.fixed["crash_at"] is None:
            assert record.status == "done"
            assert record.metrics is not None and record.metrics["score"] == standalone(
                record.trial, 60
            )
        else:
            assert record.status == "failed" and record.error_type == "WorkerLost"
            assert "left 3 times" in (record.error or "")
    # Its stage records: lost with two workers, failed with the third; none left open.
    frame = study.metrics_store.read_stages(status=None)
    for node in study.plan.nodes:
        if node.owner.fixed["crash_at"] is None or node.parent is not None:
            continue
        mine = frame[frame["node"] == node.owner.id]
        ends = mine[mine["status"] != "submitted"]
        ends = ends.sort_values("finished")
        assert (ends["status"] == "lost").sum() >= 2
        assert ends["status"].iloc[-1] == "failed" and ends["error"].iloc[-1] == "WorkerLost"
        assert ends["started"].isna().all()  # no worker reported these
        assert (mine["status"] == "submitted").sum() == len(ends)
