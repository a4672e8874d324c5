"""The worker's side of taking back queued stages: a stage runs here or nowhere here."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from hippo_dask.execution import _worker


def keys(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"hippo-stage-{tag}-{i}" for i in range(n)]


def test_stages_not_started_are_given_back_and_then_never_start() -> None:
    first, second = keys(2)
    assert _worker.withdraw([first, second])
    assert not _worker._claim(first) and not _worker._claim(second)


def test_a_started_stage_is_not_given_back_nor_anything_after_it() -> None:
    first, second = keys(2)
    assert _worker._claim(first)
    assert not _worker.withdraw([first, second])
    assert _worker._claim(second)  # the refusal changed nothing for the others
    assert not _worker.withdraw([])


def test_a_withdrawn_stage_that_dask_still_runs_returns_skipped_without_training() -> None:
    (key,) = keys(1)
    assert _worker.withdraw([key])
    # Nothing but the key is read: a withdrawn stage never gets to its trainer or storage.
    report = _worker.run_stage(SimpleNamespace(key=key, chained=False))  # type: ignore[arg-type]
    assert report.skipped and report.trained_steps == 0 and report.error is None


def test_one_broadcast_serves_several_workers_each_taking_its_own() -> None:
    mine, theirs = keys(2)
    here = SimpleNamespace(address="tcp://10.0.0.1:1")
    asks = {"tcp://10.0.0.1:1": [mine], "tcp://10.0.0.2:1": [theirs]}
    assert asyncio.run(_worker.withdraw_async(asks, dask_worker=here))
    assert not _worker._claim(mine) and _worker._claim(theirs)
    nobody = SimpleNamespace(address="tcp://10.0.0.3:1")
    assert not asyncio.run(_worker.withdraw_async(asks, dask_worker=nobody))
