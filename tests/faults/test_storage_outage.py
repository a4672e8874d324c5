"""The S3 endpoint goes down during a study: writes retry, the study goes on when it is back,
and if it stays down past the limit the study stops with a clear error, the journal intact.

Each test runs its own moto server, stops it while one stage is held by the simulated
trainer's gate, and (in the first test) starts it again on the same port once a worker has seen
its checkpoint write fail.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
from moto.server import ThreadedMotoServer

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.storage._retry import transient_failures
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import executed, make_client, standalone, until


class Endpoint:
    """A moto S3 server the test can stop and start again on the same port."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.host, self.port = self.server.get_host_and_port()
        self.options: dict[str, Any] = {
            "key": "testing",
            "secret": "testing",
            "endpoint_url": f"http://{self.host}:{self.port}",
            # Fail fast while down; the engine's own retries ride out the outage.
            "config_kwargs": {
                "retries": {"max_attempts": 1},
                "connect_timeout": 1,
                "read_timeout": 5,
            },
        }
        # moto keeps buckets in this process across servers: a fresh name per test
        self.root = f"s3://outage-{uuid.uuid4().hex[:12]}/runs"
        s3fs.S3FileSystem(**self.options).mkdir(self.root.split("/")[2])

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    served = Endpoint()
    yield served
    served.stop()


def trials(log: str, gate: str) -> list[hd.Trial]:
    grid = hd.GridSpace(lr=[seq.StepLR(0.1, 0.1, [30]), seq.Constant(0.05)], log=[log])
    held = hd.Trial(
        lr=seq.Constant(0.2), batch_size=seq.MultiStep([32, 64], [50]), log=log, gate=[50, gate]
    )
    return [*grid, held]


def test_the_study_rides_out_an_outage(tmp_path: Path, endpoint: Endpoint) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    todo = trials(log, gate)
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study(
            "outage",
            SimulatedTrainer,
            storage=endpoint.root,
            client=client,
            storage_options=endpoint.options,
            storage_timeout=120,
        )

        async def scenario() -> list[dict[str, float]]:
            jobs = [asyncio.ensure_future(study.train(t, 100)) for t in todo]
            await until(lambda: any(e.get("waiting") == 50 for e in read_log(log)), "the gate")
            endpoint.stop()
            before = sum(client.run(transient_failures).values())
            Path(gate).touch()  # the held stage finishes and cannot save its checkpoint
            await until(
                lambda: sum(client.run(transient_failures).values()) > before,
                "a worker to retry its checkpoint write",
            )
            endpoint.start()
            try:
                return list(await asyncio.gather(*jobs))
            finally:
                await study._close_driver()

        results = asyncio.run(scenario())
    for trial, metrics in zip(todo, results):
        assert metrics["score"] == standalone(trial, 100)
    reopened = SearchPlan.open(f"{endpoint.root}/outage", endpoint.options)
    assert reopened.stats().pending == 0 and reopened.stats().requests == len(todo)
    store = study.checkpoints
    for node in reopened.nodes:
        for uri in node.checkpoints.values():
            assert store.load(uri)["format"] == 1


def test_an_outage_past_the_limit_stops_the_study_cleanly(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    todo = trials(log, gate)
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study(
            "outage",
            SimulatedTrainer,
            storage=endpoint.root,
            client=client,
            storage_options=endpoint.options,
            storage_timeout=2,
        )

        async def scenario() -> None:
            jobs = [asyncio.ensure_future(study.train(t, 100)) for t in todo]
            await until(lambda: any(e.get("waiting") == 50 for e in read_log(log)), "the gate")
            endpoint.stop()
            Path(gate).touch()
            try:
                await asyncio.gather(*jobs)
            finally:
                await study._close_driver()

        with pytest.raises(hd.StorageError, match="unreachable for more than 2 s"):
            asyncio.run(scenario())
    endpoint.start()
    reopened = SearchPlan.open(f"{endpoint.root}/outage", endpoint.options)
    assert reopened.stats().requests == len(todo)  # the journal reopens, every request kept
    assert "testing" not in repr(reopened)


def test_during_an_outage_the_study_goes_on_and_results_wait_for_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver retries its journal off the event loop: the callers' coroutines, reports and
    submissions go on meanwhile, and a result is returned only once it is journaled. (Retrying
    with blocking sleeps froze the loop, so nothing could run until the limit ran out.)"""
    log = str(tmp_path / "train.log")
    trial = hd.Trial(lr=seq.MultiStep([0.1, 0.01], [10]), log=log)
    cluster, client = make_client(1)
    with cluster, client:
        study = hd.Study(
            "journal-outage",
            SimulatedTrainer,
            storage=str(tmp_path / "runs"),
            client=client,
            storage_timeout=120,
        )
        journal = study.plan._journal
        assert journal is not None
        real_append = journal.append
        state = {"down": True, "failed": 0}

        def append(records: Any) -> None:
            if state["down"]:
                state["failed"] += 1
                raise ConnectionError("storage down (test)")
            real_append(records)

        monkeypatch.setattr(journal, "append", append)

        async def scenario() -> dict[str, float]:
            job = asyncio.ensure_future(study.train(trial, 20))
            # Both need this loop: the stage's report handled, and this coroutine polling.
            await until(
                lambda: executed(log) == 20 and state["failed"] >= 3,
                "the stage to train while the journal write is retried",
            )
            await asyncio.sleep(0)
            assert not job.done()  # trained, but not journaled: not returned yet
            state["down"] = False
            try:
                return await job
            finally:
                await study._close_driver()

        metrics = asyncio.run(scenario())
    assert metrics["score"] == standalone(trial, 20)
    reopened = SearchPlan.open(str(tmp_path / "runs" / "journal-outage"))
    assert reopened.stats().pending == 0
    assert [m["score"] for n in reopened.nodes for m in n.metrics.values() if m["steps"] == 20] == [
        metrics["score"]
    ]
