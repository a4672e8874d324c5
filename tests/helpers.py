"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

from distributed import Client, LocalCluster

import hippo_dask as hd
from hippo_dask.testing.simulated import SimulatedTrainer, read_log


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` (never a fixed sleep as synchronisation) until true, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def make_client(workers: int, **kwargs: object) -> tuple[LocalCluster, Client]:
    """A process-based local cluster whose workers advertise one GPU slot each."""
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        resources={"GPU": 1},
        dashboard_address="127.0.0.1:0",
        processes=True,
        **kwargs,
    )  # type: ignore[arg-type]
    return cluster, Client(cluster)


async def kill_worker(client: Client, pid: int) -> None:
    """SIGKILL the worker process ``pid`` and wait until the scheduler has seen it leave."""
    before = set(client.scheduler_info(n_workers=-1)["workers"])
    os.kill(pid, signal.SIGKILL)
    await until(
        lambda: set(client.scheduler_info(n_workers=-1)["workers"]) != before,
        "the scheduler to see the worker leave",
    )


def branching_grid(log: str) -> hd.GridSpace:
    """Three SimulatedTrainer trials: ``StepLR`` at [30] and [40] share steps 0..29 (a branch
    point at 30); ``Constant(0.05)`` shares nothing."""
    from hippo_dask import seq

    return hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [30]), seq.StepLR(0.1, 0.1, [40]), seq.Constant(0.05)], log=[log]
    )


def executed(log: str) -> int:
    """Steps the simulated trainers logged as trained."""
    return sum(entry["steps"] for entry in read_log(log) if "steps" in entry)


def standalone(trial: hd.Trial, steps: int) -> float:
    """The simulated trial trained alone, one step at a time, without the engine (not logged)."""
    config = {k: v for k, v in trial.fixed.items() if k not in ("log", "gate")}
    trainer = SimulatedTrainer(config)
    current: dict[str, object] = {}
    for step in range(steps):
        changed = {k: v for k, v in trial.values_at(step).items() if current.get(k) != v}
        if changed:
            trainer.setup(changed)
            current.update(changed)
        trainer.train(1)
    return trainer.evaluate()["score"]
