"""The driver's stage records: one when it submits a stage, one when the stage ends, and how.

A single-worker cluster makes the order exact: a second chain is queued behind the first on the
same worker. The simulated trainer's gate holds the first stage, so the test sees the stages in
flight (submitted, nothing ended) without sleeping; a trainer that raises ends its stage failed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import make_client, standalone, until

STEPS = 20


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster, client = make_client(1)
    with cluster, client:
        yield client


def held(log: str, gate: str) -> list[hd.Trial]:
    """Two trials of a root each; the gate holds whichever starts first at step 0."""
    return [hd.Trial(lr=seq.Constant(lr), log=log, gate=[0, gate]) for lr in (0.1, 0.2)]


def by_node(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Each node's record statuses in the order of their events (a submission, an end)."""
    when = frame["finished"].fillna(frame["started"])
    out: dict[str, list[str]] = {}
    for row in frame.assign(when=when).sort_values("when", kind="stable").itertuples():
        out.setdefault(str(row.node), []).append(str(row.status))
    return out


def nodes(study: hd.Study) -> dict[str, hd.Trial]:
    """The ids stage records name the plan's nodes by (their owners'), and those owners."""
    return {n.owner.id: n.owner for n in study.plan.nodes}


def balanced(frame: pd.DataFrame) -> bool:
    """Every submission has exactly one ending record (the driver closed)."""
    counts = frame.groupby(["node", "start_step", "step", "worker"])["status"].agg(
        lambda s: ((s == "submitted").sum(), (s != "submitted").sum())
    )
    return all(a == b for a, b in counts)


def test_stages_are_recorded_when_submitted_and_when_done(client: Client, tmp_path: Path) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    trials = held(log, gate)
    study = hd.Study("records", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)
    store = study.metrics_store
    seen: dict[str, pd.DataFrame] = {}

    async def scenario() -> list[dict[str, float]]:
        jobs = [asyncio.ensure_future(study.train(t, STEPS)) for t in trials]
        try:
            await until(lambda: any(e.get("waiting") == 0 for e in read_log(log)), "a held stage")
            # both chains are submitted, the second queued behind the held one
            await until(lambda: len(store.read_stages(status=None)) == 2, "two submissions")
            seen["held"] = store.read_stages(status=None)
            seen["finished"] = store.read_stages()
            Path(gate).touch()
            return list(await asyncio.gather(*jobs))
        finally:
            await study._close_driver()

    results = asyncio.run(scenario())
    assert [r["score"] for r in results] == [standalone(t, STEPS) for t in trials]
    worker = next(iter(client.scheduler_info(n_workers=-1)["workers"]))

    held_frame = seen["held"]
    assert held_frame["status"].tolist() == ["submitted", "submitted"]
    assert set(held_frame["node"]) == set(nodes(study)) and len(nodes(study)) == 2
    assert held_frame["worker"].tolist() == [worker, worker]
    assert held_frame["finished"].isna().all() and held_frame["started"].is_monotonic_increasing
    assert seen["finished"].empty  # nothing finished: what callers of read_stages() see

    frame = store.read_stages(status=None)
    assert by_node(frame) == {n: ["submitted", "done"] for n in nodes(study)}
    assert balanced(frame) and set(frame["worker"]) == {worker}
    assert (frame["error"] == "").all()
    done = store.read_stages()
    assert len(done) == 2 and (done["status"] == "done").all()
    submitted = frame[frame["status"] == "submitted"].set_index("node")["started"]
    first, second = done.sort_values("started").itertuples()
    # a stage starts on its worker after it was submitted; the queued one after the first ended
    assert first.started >= submitted[first.node] - 1.0
    assert second.started >= first.finished
    assert submitted[second.node] < first.finished


def test_a_stage_that_raises_is_recorded_failed_with_its_error(
    client: Client, tmp_path: Path
) -> None:
    log = str(tmp_path / "train.log")
    space = hd.GridSpace(lr=[seq.Constant(0.1)], fail_in=[None, ["train", 0]], log=[log])
    study = hd.Study("failing", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    assert sorted(r.status for r in result.records) == ["done", "failed"]
    failing = next(i for i, t in nodes(study).items() if t.fixed["fail_in"] is not None)
    fine = next(i for i, t in nodes(study).items() if t.fixed["fail_in"] is None)
    frame = study.metrics_store.read_stages(status=None)
    assert by_node(frame) == {failing: ["submitted", "failed"], fine: ["submitted", "done"]}
    row = frame[frame["status"] == "failed"].iloc[0]
    assert row["error"] == "ValueError" and row["start_step"] == 0 and row["step"] == STEPS
    assert math.isfinite(row["started"]) and row["finished"] >= row["started"]  # it did run
    assert balanced(frame)
    assert study.metrics_store.read_stages()["node"].tolist() == [fine]


def test_a_stage_run_again_after_an_error_is_recorded_retried_then_done(
    client: Client, tmp_path: Path
) -> None:
    log = str(tmp_path / "train.log")
    space = hd.GridSpace(
        lr=[seq.Constant(0.1), seq.Constant(0.2)],
        fail_in=[["train", 0]],
        fail_once=[str(tmp_path / "failed-once")],
        log=[log],
    )
    study = hd.Study(
        "retried", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client, retries=1
    )
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=STEPS))
    assert all(r.status == "done" for r in result.records)
    frame = study.metrics_store.read_stages(status=None)
    statuses = sorted(by_node(frame).values())
    assert statuses == [["submitted", "done"], ["submitted", "retried", "submitted", "done"]]
    assert frame.loc[frame["status"] == "retried", "error"].tolist() == ["ValueError"]
    assert balanced(frame) and len(study.metrics_store.read_stages()) == 2


def test_stages_in_flight_when_the_study_closes_are_recorded_cancelled(
    client: Client, tmp_path: Path
) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    trials = held(log, gate)
    study = hd.Study("closed", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)
    store = study.metrics_store

    async def scenario() -> None:
        jobs = [asyncio.ensure_future(study.train(t, STEPS)) for t in trials]
        await until(lambda: any(e.get("waiting") == 0 for e in read_log(log)), "a held stage")
        await study._close_driver()  # what a tuner that stops, or Ctrl-C, does
        await asyncio.gather(*jobs, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        Path(gate).touch()  # let the worker's thread go
    frame = store.read_stages(status=None)
    assert by_node(frame) == {n: ["submitted", "cancelled"] for n in nodes(study)}
    cancelled = frame[frame["status"] == "cancelled"]
    assert cancelled["started"].isna().all() and cancelled["finished"].notna().all()
    assert store.read_stages().empty
