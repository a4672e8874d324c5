"""Garbage collection keeps what pending work and future trials need, and nothing else."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.cli import main
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import branching_grid as grid
from tests.helpers import executed, standalone, until


def checkpoint_files(study: hd.Study) -> set[str]:
    return {p.name for p in Path(study.root, "ckpt").glob("*.ckpt")}


def test_branch_points_are_kept_and_finished_ends_go(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    study = hd.Study("gc", SimulatedTrainer, storage=str(tmp_path), client=client)
    study.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    before = checkpoint_files(study)
    assert len(before) == 4  # the branch point at 30 and three trial ends at 60
    dry = study.gc(dry_run=True)
    assert len(dry.deleted) == 3 and checkpoint_files(study) == before
    report = study.gc()
    assert sorted(report.deleted) == sorted(dry.deleted) and report.kept == 1
    assert checkpoint_files(study) == before - {Path(u).name for u in report.deleted}
    branch = study.plan.nodes[0].checkpoints
    assert list(branch) == [30]
    # Metrics stay: the same grid again trains nothing; a longer one resumes at the branch point.
    trained = executed(log)
    assert study.tune(hd.tuners.Grid(grid(log), metric="score", steps=60)).stats.executed_steps == 0
    longer = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=70))
    assert executed(log) - trained == (70 - 30) + (70 - 30) + 70
    for record in longer.records:
        assert record.metrics is not None and record.metrics["score"] == standalone(
            record.trial, 70
        )


def test_keep_best_and_keep_all(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    study = hd.Study("best", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    orphan = Path(study.root, "ckpt", "0" * 40 + ".ckpt")
    orphan.write_bytes(b"left by a killed run")
    fresh = Path(study.root, "ckpt", "1" * 40 + ".ckpt")
    fresh.write_bytes(b"written a moment ago by a running stage")
    hour_ago = time.time() - 7200
    os.utime(orphan, (hour_ago, hour_ago))
    report = study.gc(keep="all")
    assert report.deleted == [] and [Path(u).name for u in report.orphans] == [orphan.name]
    assert not orphan.exists() and fresh.exists()
    with pytest.raises(hd.HippoError, match="needs metric"):
        study.gc(keep="best")
    report = study.gc(keep="best", metric="score", mode="max")
    assert result.best is not None
    winner = study.plan.latest_checkpoint(study._plan_trial(result.best.trial), 60)
    assert winner is not None and winner[0] == 60
    assert {p.name for p in Path(study.root, "ckpt").glob("*.ckpt")} == {
        Path(winner[1]).name,
        fresh.name,
    }


HELD_STEPS = 900


def test_gc_during_a_study_never_takes_what_it_resumes_from(client: Client, tmp_path: Path) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    study = hd.Study("busy", SimulatedTrainer, storage=str(tmp_path), client=client)
    study.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    ends = {
        Path(uri).name
        for node in study.plan.nodes
        for step, uri in node.checkpoints.items()
        if step == 60
    }
    assert len(ends) == 3
    # Two gated newcomers hold both workers; the extensions of the grid's trials from their
    # step-60 checkpoints wait, pending. The newcomers must be the longest chains by far, so
    # that they are scheduled first whatever seconds per step the plan estimates for them
    # (unmeasured nodes borrow their peers' measurements, which vary from run to run).
    held = [
        hd.Trial(
            lr=seq.Constant(v), batch_size=seq.MultiStep([32, 64], [20]), log=log, gate=[20, gate]
        )
        for v in (0.2, 0.3)
    ]
    trials = [*held, *grid(log)]
    steps = [HELD_STEPS] * len(held) + [90] * (len(trials) - len(held))

    async def scenario() -> list[dict[str, float]]:
        jobs = [asyncio.ensure_future(study.train(t, n)) for t, n in zip(trials, steps)]
        await until(lambda: sum(e.get("waiting") == 20 for e in read_log(log)) == 2, "both gates")
        report = await asyncio.get_running_loop().run_in_executor(
            None, lambda: hd.storage.collect_garbage(study.root, keep="best", metric="score")
        )
        left = {p.name for p in Path(study.root, "ckpt").glob("*.ckpt")}
        assert ends <= left  # where the pending extensions resume: kept
        assert len(report.deleted) == 1 and Path(report.deleted[0]).name not in ends  # step 30
        Path(gate).touch()
        try:
            return list(await asyncio.gather(*jobs))
        finally:
            await study._close_driver()

    trained = executed(log)
    results = asyncio.run(scenario())
    for trial, metrics, n in zip(trials, results, steps):
        assert metrics["score"] == standalone(trial, n)
    assert executed(log) - trained == 2 * HELD_STEPS + 3 * 30  # the extensions resumed from 60


def test_the_gc_command(client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = hd.Study("cli", SimulatedTrainer, storage=str(tmp_path), client=client)
    study.tune(hd.tuners.Grid(grid(str(tmp_path / "log")), metric="score", steps=60))
    assert main(["gc", str(tmp_path), "--name", "cli", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete 3 checkpoints and 0 orphaned files" in out and "kept 1" in out
    assert len(checkpoint_files(study)) == 4
    assert main(["gc", f"{tmp_path}/cli", "--keep", "best"]) == 2
    assert "needs metric" in capsys.readouterr().err
