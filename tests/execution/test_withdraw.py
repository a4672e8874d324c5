"""Taking back queued stages: on the worker, a stage runs here or nowhere here; on the driver,
what a worker gave back leaves the flights with what was chained onto it."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

from hippo_dask.execution import _worker
from hippo_dask.execution._flights import Flight, Flights
from hippo_dask.execution._reports import Reports
from hippo_dask.execution._worker import TABLES, StageTables


def keys(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"hippo-stage-{tag}-{i}" for i in range(n)]


def test_stages_not_started_are_given_back_and_then_never_start() -> None:
    first, second = keys(2)
    tables = StageTables()
    assert tables.withdraw([first, second])
    assert not tables.claim(first) and not tables.claim(second)


def test_a_started_stage_is_not_given_back_nor_anything_after_it() -> None:
    first, second = keys(2)
    tables = StageTables()
    assert tables.claim(first)
    assert not tables.withdraw([first, second])
    assert tables.claim(second)  # the refusal changed nothing for the others
    assert not tables.withdraw([])


def test_a_withdrawn_stage_that_dask_still_runs_returns_skipped_without_training() -> None:
    (key,) = keys(1)
    assert _worker._tables().withdraw([key])  # outside a worker: the process's own tables
    # Nothing but the key is read: a withdrawn stage never gets to its trainer or storage.
    report = _worker.run_stage(SimpleNamespace(key=key, chained=False))  # type: ignore[arg-type]
    assert report.skipped and report.trained_steps == 0 and report.error is None


def test_one_broadcast_serves_several_workers_each_taking_its_own() -> None:
    mine, theirs = keys(2)
    here = SimpleNamespace(address="tcp://10.0.0.1:1", plugins={TABLES: StageTables()})
    asks = {"tcp://10.0.0.1:1": [mine], "tcp://10.0.0.2:1": [theirs]}
    assert asyncio.run(_worker.withdraw_async(asks, dask_worker=here))
    assert not here.plugins[TABLES].claim(mine) and here.plugins[TABLES].claim(theirs)
    nobody = SimpleNamespace(address="tcp://10.0.0.3:1", plugins={TABLES: StageTables()})
    assert not asyncio.run(_worker.withdraw_async(asks, dask_worker=nobody))


def test_two_workers_in_one_process_keep_their_own_tables() -> None:
    (key,) = keys(1)
    one = SimpleNamespace(address="tcp://10.0.0.1:1", plugins={TABLES: StageTables()})
    two = SimpleNamespace(address="tcp://10.0.0.2:1", plugins={TABLES: StageTables()})
    assert asyncio.run(_worker.withdraw_async({one.address: [key]}, dask_worker=one))
    assert not one.plugins[TABLES].claim(key)  # withdrawn there ...
    assert two.plugins[TABLES].claim(key)  # ... not on the other worker of the process


def test_a_withdrawn_key_is_skipped_once_then_runs_if_submitted_again() -> None:
    (key,) = keys(1)
    tables = StageTables()
    assert tables.withdraw([key])
    assert not tables.claim(key)  # the withdrawn attempt
    assert tables.claim(key)  # the same key from another driver later: it runs


class Recorder:
    """Collects how flights ended, as the metrics store's recorder would."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []

    def ended_(self, flight: Flight, status: str, **_: object) -> None:
        self.ended.append((flight.key, status))


def book(chains: list[list[str]]) -> tuple[Flights, Reports, Any, dict[str, int]]:
    """Flights on worker "w" (one chain per list) and the report handling over them, without a
    cluster (no client: using one would fail)."""
    flights = Flights()
    for chain in chains:
        flights.add_chain("w", [Flight(k, None, 0, 1, "w", {}) for k in chain])  # type: ignore[arg-type]
    attempts: dict[str, int] = {}
    recorder = Recorder()
    renew = SimpleNamespace(renew=lambda key: attempts.__setitem__(key, attempts.get(key, 0) + 1))
    reports = Reports(
        plan=None,
        flights=flights,
        waiters=None,
        journaling=None,  # type: ignore[arg-type]
        submission=renew,
        dask=None,
        store=None,  # type: ignore[arg-type]
        recorder=SimpleNamespace(ended=recorder.ended_),  # type: ignore[arg-type]
        trainer_name="T",
        retries=0,
        kick=lambda: None,
    )
    return flights, reports, recorder, attempts


def test_what_a_worker_gave_back_is_forgotten_with_what_was_chained_onto_it_meanwhile() -> None:
    # a runs; b1 -> b2 was queued behind it; c was chained onto b2 while the driver asked.
    flights, reports, recorder, attempts = book([["a"], ["b1", "b2"], ["c"]])
    reports.took_back({"w": ("b1", "b2")}, {"w": True}, now=5.0)
    assert flights.queued_keys("w") == ["a"] and flights.keys() == ["a"]
    assert recorder.ended == [("b1", "cancelled"), ("b2", "cancelled"), ("c", "cancelled")]
    assert attempts == {"b1": 1, "b2": 1, "c": 1}  # planned again under new keys


def test_a_refusal_marks_the_chain_started_so_it_is_not_asked_again() -> None:
    flights, reports, recorder, _ = book([["a"], ["b1"]])
    b1 = flights.get("b1")
    assert b1 is not None
    b1.lookahead = True
    reports.took_back({"w": ("b1",)}, {"w": False}, now=5.0)
    assert flights.keys() == ["a", "b1"] and recorder.ended == []
    assert not b1.lookahead and b1.began == 5.0
