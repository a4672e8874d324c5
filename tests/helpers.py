"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
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
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, resources={"GPU": 1},
                           dashboard_address="127.0.0.1:0", processes=True, **kwargs)  # type: ignore[arg-type]
    return cluster, Client(cluster)


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
