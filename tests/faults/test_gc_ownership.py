"""gc deletes only what its study owns, and never what anybody still needs.

- Checkpoint locations are journaled relative to the study root, so a copied study resolves
  its own files, and gc of the copy never touches the original; locations from older journals
  (full URIs) or foreign records never make gc delete outside the study's ``ckpt/``.
- A running stage's periodic checkpoints are held by its driver's lease, whatever their age.
- A request journaled while gc runs keeps the checkpoint it resumes from.
- Temporaries of writers killed mid-write are collected once old enough.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import dask.config
import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.cli import main
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import FsspecCheckpointStore, collect_garbage
from hippo_dask.storage._leases import modification_time
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import branching_grid as grid
from tests.helpers import executed, kill_worker, make_client, standalone, until

HOURS_AGO = 7200.0


def files(root: str | Path) -> dict[str, bytes]:
    """Every checkpoint file of a study root, by name, with its bytes."""
    return {p.name: p.read_bytes() for p in Path(root, "ckpt").glob("*.ckpt")}


def backdate(*paths: Path, seconds: float = HOURS_AGO) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def test_gc_of_a_copied_study_never_touches_the_original(
    client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(tmp_path / "train.log")
    original = hd.Study("owned", SimulatedTrainer, storage=str(tmp_path / "a"), client=client)
    result = original.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    assert result.best is not None
    before = files(original.root)
    assert len(before) == 4  # the branch point at 30 and three trial ends at 60
    copy = tmp_path / "b" / "owned"
    shutil.copytree(original.root, copy)

    assert main(["gc", str(copy), "--keep", "best", "--metric", "score"]) == 0
    assert "deleted 3 checkpoints" in capsys.readouterr().out
    assert files(original.root) == before  # the original lost nothing
    assert len(files(copy)) == 1
    for node in original.plan.nodes:  # journaled relative to the study root
        assert all(loc.startswith("ckpt/") for loc in node.checkpoints.values())

    # The original resumes with zero retraining: the grid again trains nothing, and every
    # trial extended to 90 resumes from its own step-60 checkpoint.
    trained = executed(log)
    again = hd.Study("owned", SimulatedTrainer, storage=str(tmp_path / "a"), client=client)
    assert again.tune(hd.tuners.Grid(grid(log), metric="score", steps=60)).stats.executed_steps == 0
    assert executed(log) == trained
    longer = again.tune(hd.tuners.Grid(grid(log), metric="score", steps=90))
    assert executed(log) - trained == 3 * 30
    for record in longer.records:
        assert record.metrics is not None and record.metrics["score"] == standalone(
            record.trial, 90
        )
    # The copy resolves its own files: its best trial resumes from the copy's checkpoint.
    trained = executed(log)
    copied = hd.Study("owned", SimulatedTrainer, storage=str(tmp_path / "b"), client=client)
    assert copied.eval(result.best.trial, 90)["score"] == standalone(result.best.trial, 90)
    assert executed(log) - trained == 30


def test_gc_of_a_study_copied_to_another_bucket_prefix(
    client: Client, tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    import s3fs

    log = str(tmp_path / "train.log")
    options = s3_server.storage_options
    original = hd.Study(
        "owned", SimulatedTrainer, storage=f"{s3_bucket}/a", client=client, storage_options=options
    )
    original.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    fs = s3fs.S3FileSystem(**options)

    def objects(root: str) -> dict[str, bytes]:
        fs.invalidate_cache()
        return {
            p.rsplit("/", 1)[-1]: fs.cat_file(p)
            for p in fs.find(f"{root}/ckpt")
            if p.endswith(".ckpt")
        }

    before = objects(original.root)
    assert len(before) == 4
    copy = f"{s3_bucket}/b/owned"
    for path in fs.find(original.root):
        fs.copy(path, f"{copy}/{path.split('/a/owned/', 1)[1]}")
    # Credentials from the environment (the s3_server fixture sets AWS_*), as users run it.
    assert (
        main(
            [
                "gc",
                copy,
                "--keep",
                "best",
                "--metric",
                "score",
                "--endpoint-url",
                s3_server.endpoint_url,
            ]
        )
        == 0
    )
    assert objects(original.root) == before and len(objects(copy)) == 1
    trained = executed(log)
    again = hd.Study(
        "owned", SimulatedTrainer, storage=f"{s3_bucket}/a", client=client, storage_options=options
    )
    longer = again.tune(hd.tuners.Grid(grid(log), metric="score", steps=90))
    assert executed(log) - trained == 3 * 30  # every trial resumed from its step-60 checkpoint
    for record in longer.records:
        assert record.metrics is not None and record.metrics["score"] == standalone(
            record.trial, 90
        )


def test_old_journals_and_foreign_locations_never_reach_outside_the_study(
    client: Client, tmp_path: Path
) -> None:
    log = str(tmp_path / "train.log")
    study = hd.Study("legacy", SimulatedTrainer, storage=str(tmp_path / "a"), client=client)
    # Journal full URIs, as studies did before locations were relative to the root.
    study.checkpoints = FsspecCheckpointStore(f"{study.root}/ckpt")
    result = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    assert result.best is not None
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"somebody else's file")
    backdate(victim)
    loser = next(r.trial for r in result.records if r.trial != result.best.trial)
    with SearchPlan.open(study.root) as plan:
        node = plan.locate(study._plan_trial(loser), 50)
        assert node is not None and all(os.path.isabs(loc) for loc in node.checkpoints.values())
        plan.record_checkpoint(node, 50, str(victim))  # a hostile or foreign record
    before = files(study.root)
    copy = tmp_path / "b" / "legacy"
    shutil.copytree(study.root, copy)

    report = collect_garbage(str(copy), keep="best", metric="score", orphan_age=0)
    assert len(report.deleted) == 3 and report.foreign == [str(victim)]
    assert all(loc.startswith("ckpt/") for loc in report.deleted + report.orphans)
    assert victim.read_bytes() == b"somebody else's file"
    assert files(study.root) == before and len(files(copy)) == 1
    # The copy resolves the old full URIs to its own files of the same names (the original's
    # are still there, so only what it reads proves it): its best trial resumes at 60.
    trained = executed(log)
    copied = hd.Study("legacy", SimulatedTrainer, storage=str(tmp_path / "b"), client=client)
    assert copied.eval(result.best.trial, 90)["score"] == standalone(result.best.trial, 90)
    assert executed(log) - trained == 30
    # gc of the original itself never deletes the foreign file either.
    report = collect_garbage(study.root, keep="best", metric="score", orphan_age=0)
    assert report.foreign == [str(victim)] and victim.exists()


def test_a_running_stage_keeps_its_periodic_checkpoints(tmp_path: Path) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    # One stage of 100 steps, saving every 10 (unmeasured: 1 s per step for planning), held
    # by the gate at step 40 after it saved 10, 20, 30 and 40.
    held = hd.Trial(
        lr=seq.Constant(0.1), batch_size=seq.MultiStep([32, 64], [40]), log=log, gate=[40, gate]
    )
    cluster, client = make_client(1)
    with dask.config.set({"hippo.checkpoint-interval": 10}), cluster, client:
        study = hd.Study("long", SimulatedTrainer, storage=str(tmp_path), client=client)
        ckpt = Path(study.root, "ckpt")

        async def scenario() -> dict[str, float]:
            job = asyncio.ensure_future(study.train(held, 100))
            await until(lambda: any(e.get("waiting") == 40 for e in read_log(log)), "the gate")
            periodic = sorted(ckpt.glob("*.ckpt"))
            assert len(periodic) == 4
            backdate(*periodic)  # the stage has been running for hours
            report = await asyncio.get_running_loop().run_in_executor(
                None, lambda: collect_garbage(study.root, keep="all", orphan_age=60)
            )
            assert report.orphans == [] and report.held == 4
            assert all(p.exists() for p in periodic)
            # Pre-empted now, the stage resumes from its step-40 checkpoint elsewhere.
            victim = next(e["pid"] for e in read_log(log) if e.get("waiting") == 40)
            await kill_worker(client, victim)
            Path(gate).touch()
            try:
                return await job
            finally:
                await study._close_driver()

        metrics = asyncio.run(scenario())
    assert metrics["score"] == standalone(held, 100)
    assert executed(log) == 40 + 60  # nothing trained twice
    # A lease its driver stopped refreshing (killed) holds nothing: the files it named are
    # orphans again, and the lease goes too.
    lease = ckpt / ".leases" / "killeddriver.json"
    orphan = ckpt / ("0" * 40 + ".ckpt")
    lease.write_text(json.dumps({"format": 1, "interval": 60, "checkpoints": [orphan.stem]}))
    orphan.write_bytes(b"saved by a stage of the killed driver")
    backdate(lease, orphan)
    report = collect_garbage(study.root, keep="all", orphan_age=60)
    assert [Path(u).name for u in report.orphans] == [orphan.name] and report.held == 0
    assert not orphan.exists() and not lease.exists()


@pytest.mark.parametrize("when", ["before its forget records", "after its forget records"])
def test_a_request_journaled_during_gc_keeps_what_it_resumes_from(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    log = str(tmp_path / "train.log")
    study = hd.Study("racing", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    assert result.best is not None
    loser = next(r.trial for r in result.records if r.trial != result.best.trial)
    found = study.plan.latest_checkpoint(study._plan_trial(loser), 90)
    assert found is not None and found[0] == 60  # keep=best dooms it: no pending request needs it
    target = Path(study.root, found[1])
    # Another driver's plan, read before the collection, journals a request that resumes from
    # that checkpoint while gc runs: right before or right after gc journals what it forgets.
    other = SearchPlan.open(study.root)
    flush = SearchPlan.flush
    fired: list[str] = []

    def interleaved(plan: SearchPlan) -> None:
        if plan is other or fired:
            flush(plan)
            return
        if when.startswith("after"):
            flush(plan)
        fired.append(when)
        other.add(study._plan_trial(loser), 90)
        flush(other)
        if when.startswith("before"):
            flush(plan)

    monkeypatch.setattr(SearchPlan, "flush", interleaved)
    report = collect_garbage(study.root, keep="best", metric="score")
    monkeypatch.undo()
    assert fired == [when]
    assert target.exists()
    assert len(report.deleted) == 2 and target.name not in {Path(u).name for u in report.deleted}
    # The request resumes from it: 30 steps, none retrained.
    trained = executed(log)
    again = hd.Study("racing", SimulatedTrainer, storage=str(tmp_path), client=client)
    assert again.plan.latest_checkpoint(study._plan_trial(loser), 90) == found
    assert again.eval(loser, 90)["score"] == standalone(loser, 90)
    assert executed(log) - trained == 30


def test_temporaries_of_killed_writers_are_collected(
    client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = hd.Study("temps", SimulatedTrainer, storage=str(tmp_path), client=client)
    study.tune(hd.tuners.Grid(grid(str(tmp_path / "log")), metric="score", steps=60))
    root = Path(study.root)
    zarr_dirs = sorted(
        (p for p in root.joinpath("metrics.zarr").rglob("*") if p.is_dir()),
        key=lambda p: len(p.parts),
    )
    deepest = zarr_dirs[-1]
    (root / "ckpt" / ".leases").mkdir(exist_ok=True)  # on object stores: no folder
    (root / "plan" / "snapshots").mkdir(exist_ok=True)

    def plant(tag: str) -> list[Path]:
        paths = [
            root / "ckpt" / f".{tag * 40}.ckpt.{tag * 16}.tmp",
            root / "ckpt" / ".leases" / f".driver{tag}.json.{tag * 16}.tmp",
            root / "plan" / f".00000000000000000001-{tag * 8}-000001.jsonl.tmp",
            root / "plan" / f".probe-00000000000000000001-{tag * 8}",
            root / "plan" / "snapshots" / f".00000000000000000001-{tag * 8}.snap.tmp",
            root / "metrics.zarr" / f"zarr.{tag * 32}.partial",
            deepest / f"0.{tag * 32}.partial",
        ]
        for path in paths:
            path.write_bytes(b"cut short")
        return paths

    old, fresh = plant("a"), plant("b")
    backdate(*old)
    lookalikes = [
        root / "ckpt" / "notes.tmp",
        root / "plan" / "README.tmp",
        root / "metrics.zarr" / "results.partial",
        deepest / "0.abc.partial",
    ]
    for path in lookalikes:
        path.write_bytes(b"not a temporary of ours")
    backdate(*lookalikes)
    checkpoints = files(root)
    rows = len(study.metrics_store.read())

    report = study.gc(keep="all", orphan_age=600)  # temporaries: the orphan age by default
    assert not any(p.exists() for p in old) and all(p.exists() for p in fresh + lookalikes)
    assert sorted(report.temporaries) == sorted(str(p) for p in old)
    assert main(["gc", str(root), "--keep", "all", "--temp-age", "0.001"]) == 0
    assert "7 temporary files" in capsys.readouterr().out
    assert not any(p.exists() for p in fresh) and all(p.exists() for p in lookalikes)
    # What the writers committed is untouched.
    assert files(root) == checkpoints
    assert len(study.metrics_store.read()) == rows
    assert SearchPlan.open(study.root).stats() == study.plan.stats()


def test_a_driver_reads_forgets_journaled_before_its_requests(
    client: Client, tmp_path: Path
) -> None:
    # The other half of the protocol: a running driver whose plan still holds a checkpoint
    # that gc (another process) forgot and deleted since the driver last read the journal
    # journals its new request, then reads the journal before planning it, so no stage tries
    # to load the deleted file.
    log = str(tmp_path / "train.log")
    study = hd.Study("stale", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(hd.tuners.Grid(grid(log), metric="score", steps=60))
    assert result.best is not None
    loser = next(
        r.trial
        for r in result.records
        if r.trial != result.best.trial and r.trial.sequences["lr"] != seq.Constant(0.05)
    )
    found = study.plan.latest_checkpoint(study._plan_trial(loser), 90)
    assert found is not None and found[0] == 60

    async def scenario() -> dict[str, float]:
        await study.train(result.best.trial, 60)  # the driver is up, its plan read
        report = await asyncio.get_running_loop().run_in_executor(
            None, lambda: collect_garbage(study.root, keep="best", metric="score")
        )
        assert Path(found[1]).name in {Path(u).name for u in report.deleted}
        assert study.plan.latest_checkpoint(study._plan_trial(loser), 90) == found  # stale
        # New worker processes: no trainer left in memory, states come from storage.
        await asyncio.get_running_loop().run_in_executor(None, client.restart)
        await until(
            lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 2,
            "the workers to come back",
        )
        try:
            return await study.train(loser, 90)
        finally:
            await study._close_driver()

    trained = executed(log)
    # No periodic reads of the journal during the test: only the one after the request.
    with (
        warnings.catch_warnings(record=True) as caught,
        dask.config.set({"hippo.refresh-interval": 3600}),
    ):
        warnings.simplefilter("always")
        metrics = asyncio.run(scenario())
    assert metrics["score"] == standalone(loser, 90)
    assert [str(w.message) for w in caught if "unusable" in str(w.message)] == []
    assert executed(log) - trained == 90  # the branch point at 30 went too: from scratch


def test_an_unreadable_fresh_lease_stops_orphan_deletion(
    client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # gc cannot tell what a lease it cannot parse protects: while it is younger than the orphan
    # age no unreferenced file goes; once older, it is a dead driver's and goes itself.
    study = hd.Study("garbled", SimulatedTrainer, storage=str(tmp_path), client=client)
    study.tune(hd.tuners.Grid(grid(str(tmp_path / "log")), metric="score", steps=60))
    ckpt = Path(study.root, "ckpt")
    orphan = ckpt / ("0" * 40 + ".ckpt")
    orphan.write_bytes(b"saved by a running stage, or left by a killed one")
    backdate(orphan)
    (ckpt / ".leases").mkdir(exist_ok=True)
    lease = ckpt / ".leases" / "garbled.json"
    lease.write_bytes(b'{"format": 1, "interval": 60, "checkpoints": ["../../etc/passwd"]}')
    assert main(["gc", study.root, "--keep", "all", "--orphan-age", "600"]) == 0
    out, err = capsys.readouterr()
    assert "0 orphaned files" in out and "garbled.json is unusable" in err
    assert orphan.exists() and lease.exists()
    backdate(lease)
    report = collect_garbage(study.root, keep="all", orphan_age=600)
    assert [Path(u).name for u in report.orphans] == [orphan.name] and report.problems == []
    assert not orphan.exists() and not lease.exists()


def test_a_listing_without_a_modification_time_never_counts_as_old() -> None:
    # adlfs says last_modified, older gcsfs an ISO string under updated; a listing that says
    # nothing must not read as 1970 (every file "hours old": deleted at once).
    new_year = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert modification_time({"mtime": 5.0}) == 5.0
    assert modification_time({"last_modified": new_year}) == new_year.timestamp()
    assert modification_time({"updated": "2026-01-01T00:00:00.000Z"}) == new_year.timestamp()
    for unknown in ({}, {"mtime": "soon"}, {"created": 0}):
        assert modification_time(unknown) == math.inf
        assert not time.time() - modification_time(unknown) >= 3600.0  # never old enough


def test_ages_are_counted_on_the_storage_clock_not_gc_hosts(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gc on a host whose clock runs two hours ahead of the storage's: a file written just now
    # (an unreferenced checkpoint, as a stage in flight writes them) is not two hours old.
    study = hd.Study("clock", SimulatedTrainer, storage=str(tmp_path), client=client)
    study.tune(hd.tuners.Grid(grid(str(tmp_path / "log")), metric="score", steps=60))
    just_written = Path(study.root, "ckpt", "written-just-now.ckpt")
    just_written.write_bytes(b"a stage's newest state")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + HOURS_AGO)
    report = study.gc(keep="all", orphan_age=600)
    assert just_written.exists() and report.orphans == []
    assert not list(Path(study.root, "plan").glob(".probe-gc-*"))  # the clock probe is gone
    monkeypatch.setattr(time, "time", real)
    backdate(just_written)  # and once it is old on the storage's clock, it goes
    assert [Path(p).name for p in study.gc(keep="all", orphan_age=600).orphans] == [
        just_written.name
    ]
