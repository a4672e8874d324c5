"""Studies on a real Dask cluster with the simulated trainer: counts, exactness, reuse, placement.

The simulated trainer's "weights" are a hash chain over the values of every step trained and it
logs every ``train`` call to a file, so these tests see exactly what every worker process
trained, and whether the engine's splitting and resuming changed anything.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.execution._worker import pending_points
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import executed, make_client, standalone, until

STEPS = 60


def grid(log: str, **extra: list[object]) -> hd.GridSpace:
    return hd.GridSpace(
        lr=[
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 50]),
            seq.Warmup(5, 0.1, then=seq.Exponential(0.1, gamma=0.95)),
        ],
        batch_size=[seq.Constant(128), seq.MultiStep([128, 256], milestones=[25])],
        optimizer=["sgd", "adam"],
        log=[log],
        **extra,
    )


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster, client = make_client(2)
    with cluster, client:
        yield client


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_executed_steps_equal_unique_steps(tmp_path: Path, workers: int) -> None:
    log = str(tmp_path / "train.log")
    cluster, client = make_client(workers)
    with cluster, client:
        study = hd.Study("grid", SimulatedTrainer, storage=str(tmp_path), client=client)
        result = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=STEPS))
    unique = study.plan.stats().unique_steps
    assert executed(log) == unique == result.stats.executed_steps == result.stats.unique_steps
    assert result.stats.requested_steps == 12 * STEPS
    assert unique < 12 * STEPS
    assert (result.trials["status"] == "done").all() and len(result.trials) == 12
    if workers > 1:  # the work really was spread
        assert len({entry["pid"] for entry in read_log(log)}) > 1


def test_every_trial_equals_the_trial_trained_alone(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log)
    study = hd.Study("exact", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    by_id = {r.trial.id: r for r in result.records}
    for trial in space:
        assert by_id[trial.id].metrics == {"score": standalone(trial, STEPS), "steps": STEPS}
    best = max(result.records, key=lambda r: r.metrics["score"])  # type: ignore[index]
    assert result.best is not None and result.best.trial == best.trial


def test_a_rerun_trains_nothing_and_eval_trains_only_the_missing_steps(
    client: Client, tmp_path: Path
) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log)
    first = hd.Study("reuse", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = first.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    trained = executed(log)
    # The same script run again (a new Study object, a new journal session) trains nothing.
    again = hd.Study("reuse", SimulatedTrainer, storage=str(tmp_path), client=client)
    rerun = again.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    assert executed(log) == trained and rerun.stats.executed_steps == 0
    assert {r.trial.id: r.metrics for r in rerun.records} == {
        r.trial.id: r.metrics for r in result.records
    }
    # A step in the middle: resumed from the latest checkpoint at or before it.
    trial = next(iter(space))
    planned = again._plan_trial(trial)
    latest = again.plan.latest_checkpoint(planned, 40)
    assert latest is not None and latest[0] < 40
    metrics = again.eval(trial, 40)
    assert metrics == {"score": standalone(trial, 40), "steps": 40.0}
    assert executed(log) == trained + 40 - latest[0]
    assert again.eval(trial, 40) == metrics and executed(log) == trained + 40 - latest[0]


def test_without_sharing_every_trial_trains_from_scratch(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log)
    study = hd.Study("alone", SimulatedTrainer, storage=str(tmp_path), client=client, sharing=False)
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    assert executed(log) == 12 * STEPS == result.stats.executed_steps
    for r in result.records:
        assert r.metrics is not None and r.metrics["score"] == standalone(r.trial, STEPS)


def test_chains_pass_the_trainer_in_memory(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    study = hd.Study("chains", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=STEPS))
    roots = sum(1 for node in study.plan.nodes if node.parent is None)
    stats = result.stats
    assert stats.stages_from_scratch == roots
    assert stats.stages_resumed_in_memory >= 1
    assert stats.stages == (
        stats.stages_from_scratch
        + stats.stages_resumed_in_memory
        + stats.stages_resumed_from_checkpoint
    )
    # Every metric recorded went to the zarr store as well.
    frame = study.metrics_store.read()
    final = frame[frame["step"] == STEPS]
    assert len(final) == len(study.plan.nodes) - 0 and set(final["score"]) == {
        r.metrics["score"]
        for r in result.records  # type: ignore[index]
    }


def test_two_studies_on_one_client_run_each_stage_once(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log)
    one = hd.Study("shared", SimulatedTrainer, storage=str(tmp_path), client=client)
    two = hd.Study("shared", SimulatedTrainer, storage=str(tmp_path), client=client)

    async def both() -> list[hd.Result]:
        return list(
            await asyncio.gather(
                one.tune_async(hd.tuners.Grid(space, metric="score", steps=STEPS)),
                two.tune_async(hd.tuners.Grid(space, metric="score", steps=STEPS)),
            )
        )

    first, second = asyncio.run(both())
    assert executed(log) == one.plan.stats().unique_steps
    assert {r.trial.id: r.metrics for r in first.records} == {
        r.trial.id: r.metrics for r in second.records
    }


def test_a_failing_stage_fails_only_the_trials_that_need_it(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    space = grid(log, fail_at=[None, 40])
    study = hd.Study("failing", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    frame = result.trials.set_index("trial_id")
    for trial in space:
        row = frame.loc[trial.id]
        if trial.fixed["fail_at"] is None:
            assert row["status"] == "done"
        else:
            assert row["status"] == "failed" and row["error_type"] == "RuntimeError"
            assert "simulated failure past step 40" in row["error"]
    failed = [r for r in result.records if r.status == "failed"]
    assert len(failed) == 12 and all("train" in (r.traceback or "") for r in failed)


def test_a_running_stage_saves_a_step_somebody_now_needs(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    gate = str(tmp_path / "gate")
    # Switches batch size at 100, where the gate holds the stage until the test opens it.
    first = hd.Trial(
        lr=seq.Constant(0.1), batch_size=seq.MultiStep([64, 128], [100]), log=log, gate=[100, gate]
    )
    # Shares the first 150 steps with it, then decays: needs the state at step 150.
    second = hd.Trial(
        lr=seq.MultiStep([0.1, 0.01], [150]),
        batch_size=seq.MultiStep([64, 128], [100]),
        log=log,
        gate=[100, gate],
    )
    study = hd.Study("midway", SimulatedTrainer, storage=str(tmp_path), client=client)

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        long = asyncio.ensure_future(study.train(first, 300))
        # The gate holds the stage at step 100 until the test opens it.
        await until(lambda: any(e.get("waiting") == 100 for e in read_log(log)), "the gate")
        branch = asyncio.ensure_future(study.train(second, 200))
        await until(
            lambda: any(
                150 in steps
                for held in client.run(pending_points).values()
                for steps in held.values()
            ),
            "the running stage's worker to hold the new point",
        )
        Path(gate).touch()
        return await long, await branch

    async def main() -> tuple[dict[str, float], dict[str, float]]:
        try:
            return await scenario()
        finally:
            await study._close_driver()

    a, b = asyncio.run(main())
    assert a["score"] == standalone(first, 300) and b["score"] == standalone(second, 200)
    # Nothing trained twice: 300 steps of the first, 50 of the second after the branch.
    assert executed(log) == 300 + 50 == study.plan.stats().unique_steps
    node = study.plan.locate(study._plan_trial(first), 150)
    assert node is not None and 150 in node.checkpoints


def test_an_idle_worker_takes_over_a_chain_queued_behind_a_busy_one(
    client: Client, tmp_path: Path
) -> None:
    """Both workers are held in a stage; a third trial is queued behind the one with fewer steps
    left. When the other worker finishes first, it takes that queued trial over: the trial's
    result comes while the worker it was queued behind is still held, and nothing is trained
    twice."""
    logs = {name: str(tmp_path / f"{name}.log") for name in ("long", "short", "late")}
    gates = {name: str(tmp_path / f"{name}.gate") for name in ("long", "short")}
    long = hd.Trial(lr=seq.Constant(0.1), log=logs["long"], gate=[0, gates["long"]])
    short = hd.Trial(lr=seq.Constant(0.2), log=logs["short"], gate=[0, gates["short"]])
    late = hd.Trial(lr=seq.Constant(0.3), log=logs["late"])
    study = hd.Study("withdraw", SimulatedTrainer, storage=str(tmp_path), client=client)

    def held(name: str) -> bool:
        return any(e.get("waiting") == 0 for e in read_log(logs[name]))

    async def scenario() -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        first = asyncio.ensure_future(study.train(long, 40))
        second = asyncio.ensure_future(study.train(short, 20))
        await until(lambda: held("long") and held("short"), "both workers held at their first step")
        third = asyncio.ensure_future(study.train(late, 10))
        driver = study._driver
        assert driver is not None
        await until(
            lambda: any(
                len({f.chain[0] for f in driver.flights.queue(w)}) == 2
                for w in driver.flights.workers()
            ),
            "the late trial queued behind a held worker",
        )
        Path(gates["long"]).touch()  # the worker with more steps left finishes first
        done = await asyncio.wait_for(third, 60)
        assert not second.done() and held("short"), "the short trial's worker is still held"
        Path(gates["short"]).touch()
        return await first, await second, done

    async def main() -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        try:
            return await scenario()
        finally:
            await study._close_driver()

    with dask.config.set({"hippo.withdraw-after": 0}):
        a, b, c = asyncio.run(main())
    assert (a["score"], b["score"], c["score"]) == (
        standalone(long, 40),
        standalone(short, 20),
        standalone(late, 10),
    )
    # It was queued behind the short trial's worker (fewer steps left) and ran on the other.
    pid = {name: {e["pid"] for e in read_log(logs[name]) if "steps" in e} for name in logs}
    assert pid["late"] == pid["long"] != pid["short"]
    assert [executed(logs[n]) for n in ("long", "short", "late")] == [40, 20, 10]
    # Its stage records: submitted behind the held worker and withdrawn, then run and done.
    stages = study.metrics_store.read_stages(status=None)
    mine = stages[stages["node"] == study._plan_trial(late).id]
    assert sorted(mine["status"]) == ["cancelled", "done", "submitted", "submitted"]


def test_workers_without_the_gpu_resource_are_a_clear_error(tmp_path: Path) -> None:
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0", processes=False
        ) as cluster,
        Client(cluster) as plain,
    ):
        study = hd.Study("nogpu", SimulatedTrainer, storage=str(tmp_path), client=plain)
        with pytest.raises(hd.HippoError, match="--resources GPU=1"):
            study.eval(hd.Trial(lr=seq.Constant(0.1)), 5)


def test_s3_storage_on_a_real_endpoint(
    client: Client, tmp_path: Path, s3_server: object, s3_bucket: str
) -> None:
    log = str(tmp_path / "train.log")
    options = s3_server.storage_options  # type: ignore[attr-defined]
    space = grid(log)
    study = hd.Study(
        "s3", SimulatedTrainer, storage=f"{s3_bucket}/runs", client=client, storage_options=options
    )
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    assert executed(log) == study.plan.stats().unique_steps
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    checkpoints = fs.ls(f"{s3_bucket}/runs/s3/ckpt")
    assert len(checkpoints) >= 12
    plan_files = fs.ls(f"{s3_bucket}/runs/s3/plan")
    assert plan_files and not any("testing" in fs.cat(f).decode() for f in plan_files)
    rerun = hd.Study(
        "s3", SimulatedTrainer, storage=f"{s3_bucket}/runs", client=client, storage_options=options
    ).tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    assert rerun.stats.executed_steps == 0
    assert {r.trial.id: r.metrics for r in rerun.records} == {
        r.trial.id: r.metrics for r in result.records
    }
    assert os.path.exists(log)


def test_learning_curves_cover_every_trial_including_shared_prefixes(
    client: Client, tmp_path: Path
) -> None:
    log = str(tmp_path / "train.log")
    study = hd.Study(
        "curves", SimulatedTrainer, storage=str(tmp_path), client=client, eval_every=10
    )
    result = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=STEPS))
    curves = study.curves(result)
    assert set(curves["trial_id"]) == {r.trial.id for r in result.records}
    for record in result.records:
        curve = curves[curves["trial_id"] == record.trial.id]
        assert list(curve["step"]) == list(range(10, STEPS + 1, 10))
        assert list(curve["steps"]) == list(map(float, range(10, STEPS + 1, 10)))
        assert curve["score"].iloc[-1] == record.metrics["score"]  # type: ignore[index]
        assert curve["score"].iloc[1] == standalone(record.trial, 20)
    assert executed(log) == result.stats.unique_steps  # eval points cost no extra training
