"""What the driver does for clusters whose workers come and go: the wall-time rule and the
demand it publishes for adaptive scaling.

The wall-time rule: a worker started with ``--lifetime`` (SLURM jobs' workers retire before the
wall time) gets only stages whose estimated time (steps x profiled seconds per step; 1 s per
step before anything is profiled) fits in what it has left. First against a fake client whose
worker list and lifetimes the test sets, then on real Dask workers with real lifetimes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from distributed import Client, Nanny, Scheduler, SpecCluster

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.execution._driver import DEMAND_KEY, Driver, fitting, worker_deadline
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import FsspecCheckpointStore
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import make_client, standalone, until


class FakeFuture:
    def __init__(self, key: str) -> None:
        self.key = key

    def add_done_callback(self, callback: Any) -> None:
        pass  # never finishes: the test looks at what was submitted where


class FakeScheduler:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.metadata: dict[str, Any] = {}
        self.published = asyncio.Event()

    async def identity(self, n_workers: int = -1) -> dict[str, Any]:
        return {
            "workers": {
                a: {"resources": {"GPU": 1}, "status": "running"} for a in self.client.workers
            }
        }

    async def set_metadata(self, keys: list[str], value: Any) -> None:
        self.metadata[keys[-1]] = value
        self.published.set()


class FakeClient:
    """The part of distributed.Client the driver uses, over a worker list the test sets. Its
    coroutines run on the caller's loop (``loop.asyncio_loop`` is ``None``).

    ``workers``: address -> ``(seconds left, lifetime)``, or ``None`` for no lifetime.
    """

    def __init__(self, workers: dict[str, tuple[float, float] | None]) -> None:
        self.workers = workers
        self.scheduler = FakeScheduler(self)
        self.submitted: list[tuple[str, str]] = []  # (worker, stage key)
        self.loop = SimpleNamespace(asyncio_loop=None)

    def run(
        self,
        function: Any,
        *args: Any,
        workers: list[str],
        asynchronous: bool = False,
        **kwargs: Any,
    ) -> Any:
        assert function is worker_deadline and asynchronous
        now = time.time()

        async def answer() -> dict[str, Any]:
            return {
                w: None
                if self.workers[w] is None
                else (now + self.workers[w][0], self.workers[w][1], 1)
                for w in workers
            }

        return answer()

    def submit(
        self, function: Any, spec: Any, *deps: Any, key: str, workers: list[str], **kwargs: Any
    ) -> FakeFuture:
        self.submitted.append((workers[0], key))
        return FakeFuture(key)

    def cancel(self, futures: Any, asynchronous: bool = False) -> Any:
        async def nothing() -> None:
            pass

        return nothing()

    def register_plugin(self, plugin: Any, name: str) -> None:
        """Where the driver installs its tables and the checkpoint store on the workers (no
        workers here)."""


def stages(client: FakeClient) -> list[tuple[str, int, int]]:
    """(worker, start, stop) of every submitted stage."""
    out = []
    for worker, key in client.submitted:
        start, stop = key.split("~")[0].split("-")[3:5]
        out.append((worker, int(start), int(stop)))
    return out


async def schedule(
    tmp_path: Path,
    workers: dict[str, tuple[float, float] | None],
    requests: list[tuple[hd.Trial, int]],
) -> tuple[FakeClient, Any]:
    client = FakeClient(workers)
    driver = Driver(
        plan=SearchPlan(),
        client=client,
        trainer_cls=SimulatedTrainer,  # type: ignore[arg-type]
        config_of=lambda t: dict(t.fixed),
        checkpoints=FsspecCheckpointStore(str(tmp_path / "ckpt")),
    )
    waiting = [asyncio.ensure_future(driver.request(t, steps)) for t, steps in requests]
    await asyncio.wait_for(client.scheduler.published.wait(), 30)  # the end of the first pass
    demand = dict(client.scheduler.metadata)
    await driver.close()
    await asyncio.gather(*waiting, return_exceptions=True)
    return client, next(iter(demand.values()))[0] if demand else None


A = hd.Trial(lr=seq.Constant(0.1))
B = hd.Trial(lr=seq.MultiStep([0.1, 0.01], [60]))


def test_a_stage_goes_to_the_worker_that_has_the_time(tmp_path: Path) -> None:
    # 100 steps at 1 s per step (nothing profiled yet): 100 s; "short" has 50 s left.
    client, demand = asyncio.run(
        schedule(tmp_path, {"tcp://a-short": (50, 3600), "tcp://b-long": None}, [(A, 100)])
    )
    assert stages(client) == [("tcp://b-long", 0, 100)]
    assert demand == 1


def test_no_worker_with_the_time_means_no_start_and_a_demand_for_one(tmp_path: Path) -> None:
    client, demand = asyncio.run(schedule(tmp_path, {"tcp://short": (50, 3600)}, [(A, 100)]))
    assert client.submitted == []
    assert demand == 1  # adaptive scaling asks for a fresh worker


def test_a_chain_is_cut_where_it_stops_fitting(tmp_path: Path) -> None:
    # Shared 0..60 then two branches of 40: the critical path is 0..60, 60..100 (100 s); 70 s left.
    client, _ = asyncio.run(schedule(tmp_path, {"tcp://short": (70, 3600)}, [(A, 100), (B, 100)]))
    assert stages(client) == [("tcp://short", 0, 60)]


def test_workers_without_a_lifetime_take_everything(tmp_path: Path) -> None:
    client, demand = asyncio.run(schedule(tmp_path, {"tcp://w": None}, [(A, 100), (B, 100)]))
    assert stages(client) == [("tcp://w", 0, 60), ("tcp://w", 60, 100)]
    assert demand == 1  # one busy worker; the other branch waits for the shared prefix


def test_a_stage_longer_than_any_lifetime_starts_on_a_fresh_enough_worker(tmp_path: Path) -> None:
    # 100 s of work, workers live 60 s: it can never fit, so it goes where half a life is left
    # and moves on through its periodic checkpoints.
    client, _ = asyncio.run(schedule(tmp_path, {"tcp://fresh": (40, 60)}, [(A, 100)]))
    assert stages(client) == [("tcp://fresh", 0, 100)]
    # ... unless a worker where it does fit is idle.
    client, _ = asyncio.run(
        schedule(tmp_path, {"tcp://a-fresh": (40, 60), "tcp://b-long": None}, [(A, 100)])
    )
    assert stages(client) == [("tcp://b-long", 0, 100)]
    client, _ = asyncio.run(schedule(tmp_path, {"tcp://old": (20, 60)}, [(A, 100)]))
    assert client.submitted == []


def test_fitting_is_pure_arithmetic() -> None:
    chain: list[Any] = [SimpleNamespace(seconds=s) for s in (10, 20, 30)]
    assert fitting(chain, float("inf")) == chain
    assert fitting(chain, 60) == chain
    assert fitting(chain, 59) == chain[:2]
    assert fitting(chain, 9) == []
    assert fitting([SimpleNamespace(seconds=500)], 70, lifetime=150) == []  # under half left
    assert len(fitting([SimpleNamespace(seconds=500)], 100, lifetime=180)) == 1  # can never fit


def test_workers_tell_when_they_retire() -> None:
    cluster, client = make_client(1, lifetime="600s")
    with cluster, client:
        ((deadline, lifetime, pid),) = client.run(worker_deadline).values()
        assert lifetime == 600 and pid != os.getpid()
        assert time.time() + 540 < deadline <= time.time() + 600
    cluster, client = make_client(1)
    with cluster, client:
        assert list(client.run(worker_deadline).values()) == [None]


def test_on_real_workers_the_long_stage_goes_to_the_long_lived_worker(tmp_path: Path) -> None:
    spec = {
        name: {
            "cls": Nanny,
            "options": {"nthreads": 1, "resources": {"GPU": 1}, "host": "127.0.0.1", **options},
        }
        for name, options in {"short": {"lifetime": "60s"}, "long": {}}.items()
    }
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
    }
    with SpecCluster(workers=spec, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
        study = hd.Study(
            "lifetimes", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client
        )
        long_trial, short_trial = hd.Trial(lr=seq.Constant(0.1)), hd.Trial(lr=seq.Constant(0.2))

        async def both() -> list[dict[str, float]]:
            try:  # 100 s estimated (1 s per step until profiled): only "long" has the time
                return list(
                    await asyncio.gather(study.train(long_trial, 100), study.train(short_trial, 30))
                )
            finally:
                await study._close_driver()

        results = asyncio.run(both())
        stage_rows = study.metrics_store.read_stages()
    assert results[0]["score"] == standalone(long_trial, 100)
    assert results[1]["score"] == standalone(short_trial, 30)
    where = {int(row.step): names[row.worker] for row in stage_rows.itertuples()}
    assert where == {100: "long", 30: "short"}


def test_the_driver_publishes_its_demand_and_withdraws_it_at_the_end(tmp_path: Path) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    trials = [hd.Trial(lr=seq.Constant(lr), log=log, gate=[0, gate]) for lr in (0.1, 0.2, 0.3)]
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study("demand", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)

        def published() -> list[int]:
            return [v[0] for v in (client.get_metadata([DEMAND_KEY], None) or {}).values()]

        async def scenario() -> list[int]:
            jobs = [asyncio.ensure_future(study.train(t, 20)) for t in trials]
            await until(
                lambda: sum(e.get("waiting") == 0 for e in read_log(log)) == 2, "two held stages"
            )
            # Three ready chains, two workers: two busy, one more would be used.
            await until(lambda: published() == [3], "the demand of three workers")
            Path(gate).touch()
            try:
                await asyncio.gather(*jobs)
            finally:
                await study._close_driver()
            return published()

        assert asyncio.run(scenario()) == [0]


@pytest.mark.parametrize("minimum", [0, 1])
def test_adaptive_scaling_follows_the_published_demand(minimum: int) -> None:
    from distributed import LocalCluster

    from hippo_dask.cluster._slurm import StageDemandAdaptive

    async def go() -> tuple[int, int]:
        async with (
            LocalCluster(
                n_workers=0, asynchronous=True, dashboard_address="127.0.0.1:0"
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            adaptive = StageDemandAdaptive(cluster, minimum=minimum, maximum=10, interval="1h")
            before = await adaptive.safe_target()
            await client.set_metadata([DEMAND_KEY, "driver-1"], [3, time.time()])
            await client.set_metadata([DEMAND_KEY, "driver-2"], [2, time.time()])
            await client.set_metadata([DEMAND_KEY, "dead"], [7, time.time() - 3600])
            after = await adaptive.safe_target()
            adaptive.stop()
            return before, after

    assert asyncio.run(go()) == (minimum, 5)
