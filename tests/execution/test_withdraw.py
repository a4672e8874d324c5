"""The worker's side of taking back queued stages: a stage runs here or nowhere here."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

from hippo_dask.execution import _worker
from hippo_dask.execution._placement import Placement
from hippo_dask.execution._running import Running


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


def test_a_withdrawn_key_is_skipped_once_then_runs_if_submitted_again() -> None:
    (key,) = keys(1)
    assert _worker.withdraw([key])
    assert not _worker._claim(key)  # the withdrawn attempt
    assert _worker._claim(key)  # the same key from another driver later: it runs


class Book(Placement):
    """The driver's state that taking back stages touches, without a cluster (no client:
    using one would fail)."""

    def __init__(self, queue: list[str]) -> None:
        self._queued = {"w": list(queue)}
        self._running = {k: Running(k, None, 0, 1, "w", {}, None) for k in queue}  # type: ignore[arg-type]
        self._attempts = {}
        self.ended: list[tuple[str, str]] = []

    def _renew_key(self, key: str) -> None:
        self._attempts[key] = self._attempts.get(key, 0) + 1

    def _ended(self, running: Running, status: str, report: object = None, **_: object) -> None:
        self.ended.append((running.key, status))


def test_what_a_worker_gave_back_is_forgotten_with_what_was_chained_onto_it_meanwhile() -> None:
    # a runs; b1 -> b2 was queued behind it; c was chained onto b2 while the driver asked.
    book = Book(["a", "b1", "b2", "c"])
    book._took_back({"w": ["b1", "b2"]}, {"w": True})
    assert book._queued == {"w": ["a"]} and list(book._running) == ["a"]
    assert book.ended == [("b1", "cancelled"), ("b2", "cancelled"), ("c", "cancelled")]
    assert book._attempts == {"b1": 1, "b2": 1, "c": 1}  # planned again under new keys


def test_a_refusal_marks_the_chain_started_so_it_is_not_asked_again() -> None:
    book = Book(["a", "b1"])
    book._running["b1"].lookahead = True
    book._took_back({"w": ["b1"]}, {"w": False})
    assert list(book._running) == ["a", "b1"] and book.ended == []
    assert not book._running["b1"].lookahead and book._running["b1"].began is not None
