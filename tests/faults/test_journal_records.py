"""A journal record whose checksum is fine but which cannot be applied costs that record only.

Each kind of bad record (an unknown sequence type from a newer version, a user's own sequence
class, a value nested too deeply, a NaN or negative profile, fields of the wrong type, an unknown
record type) sits on line 2 of a segment between two good records. Every reader (a fresh
``SearchPlan``, a fresh ``Study``, the dashboard's reader, gc) skips it with a warning naming the
segment and the line, opens the study, and applies the records before and after it. The driver's
refresh does the same while a study runs, and when a refresh itself fails the study stops with a
clear error instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.config
import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.dashboard import open_study
from hippo_dask.plan import SearchPlan
from hippo_dask.plan._journal import encode_line
from hippo_dask.storage import collect_garbage
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import make_client, until

A = hd.Trial(lr=seq.StepLR(0.1, 0.1, [30]), optimizer="sgd")
B = hd.Trial(lr=seq.StepLR(0.1, 0.1, [40]), optimizer="sgd")


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def request_of(trial: dict[str, Any]) -> dict[str, Any]:
    return {"op": "request", "id": "f" * 20, "trial": trial, "steps": 60, "tag": "bad"}


def state(op: str, **fields: Any) -> dict[str, Any]:
    return {"op": op, "trial": A.id, "step": 60, **fields}


# kind -> (the bad record, or the raw bytes of its line; what the warning says)
BAD: dict[str, tuple[dict[str, Any] | bytes, str]] = {
    "sequence type of a newer version": (
        request_of({"fixed": {}, "sequences": {"lr": {"type": "OneCycleV9", "peak": 0.1}}}),
        r"its trial cannot be rebuilt: InvalidSequenceError: unknown sequence type 'OneCycleV9'",
    ),
    "the user's own sequence class": (
        request_of(
            {
                "fixed": {"optimizer": "sgd"},
                "sequences": {"lr": {"type": "MyTeamsWarmupCosine", "*args": [0.1, 5]}},
            }
        ),
        r"unknown sequence type 'MyTeamsWarmupCosine'",
    ),
    "a value nested too deeply to parse": (
        # 100000 levels: json.loads itself raises RecursionError
        b'{"op":"request","id":"ffff","steps":60,"tag":"x","trial":{"fixed":{"cfg":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}}}",
        r"its JSON nests too deeply to read",
    ),
    "a value nested deeper than the limit": (
        request_of({"fixed": {"cfg": nested(200)}, "sequences": {}}),
        r"nests lists or objects deeper than 64 levels",
    ),
    "a NaN profile": (
        state("profile", step=1, seconds=float("nan")),
        r"`seconds` must be finite and >= 0, got nan",
    ),
    "a negative profile": (
        state("profile", step=1, seconds=-3.0),
        r"`seconds` must be finite and >= 0, got -3.0",
    ),
    "steps as text": (
        {**request_of(B.to_dict()), "id": B.id, "steps": "60"},
        r"`steps` must be a whole number, got '60'",
    ),
    "a step beyond any sane bound": (
        state("checkpoint", step=10**15, uri="ckpt/x.ckpt"),
        r"`step` must be in 1\.\.1000000000000",
    ),
    "a location that is not text": (state("checkpoint", uri=5), r"`uri` must be a string, got int"),
    "metric values in a list": (state("metrics", values=[0.5]), r"`values` must be an object"),
    "a metric that is not a number": (
        state("metrics", values={"acc": "high"}),
        r"metric 'acc' must be a number, got str",
    ),
    "forget ids that are not text": (state("forget", ids=[1, 2]), r"`ids` must be a list"),
    "an unknown record type": (
        {"op": "rename", "trial": A.id},
        r"unknown record type 'rename' \(written by a newer hippo_dask",
    ),
    "not an object": ([1, 2, 3], r"a record must be an object, got list"),  # type: ignore[dict-item]
}


def raw_line(record: dict[str, Any] | bytes | list[Any]) -> bytes:
    if isinstance(record, bytes):
        return b"%08x " % zlib.crc32(record) + record + b"\n"
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def write_study(root: Path, bad: dict[str, Any] | bytes) -> str:
    """A study whose journal has a good segment and then [good, bad, good]; the bad segment's name."""
    with SearchPlan.open(str(root)) as plan:
        a = plan.add(A, 60)
        plan.add(B, 60)
        plan.record_checkpoint(a.node, 30, "ckpt/a30.ckpt")
    b45 = SearchPlan.open(str(root)).locate(B, 45)
    assert b45 is not None
    name = f"{time.time_ns():020d}-badwrite-000000.jsonl"
    lines = [
        encode_line({"op": "metrics", "trial": A.id, "step": 60, "values": {"acc": 0.75}}),
        raw_line(bad),
        encode_line(
            {
                "op": "checkpoint",
                "trial": B.id,
                "step": 45,
                "uri": "ckpt/b45.ckpt",
                "id": "later-record",
            }
        ),
    ]
    (root / "plan" / name).write_bytes(b"".join(lines))
    return name


def checkpoints_of(plan: SearchPlan) -> dict[tuple[str, int], str]:
    out = {}
    for trial in (A, B):
        for step in (30, 45):
            node = plan.locate(trial, step)
            if node is not None and step in node.checkpoints:
                out[(trial.id, step)] = node.checkpoints[step]
    return out


def check_plan(plan: SearchPlan) -> None:
    assert plan.stats().trials == 2 and plan.stats().requests == 2
    assert plan.metrics(A, 60) == {"acc": 0.75}  # the record before the bad one
    assert checkpoints_of(plan) == {
        (A.id, 30): "ckpt/a30.ckpt",
        (B.id, 30): "ckpt/a30.ckpt",
        (B.id, 45): "ckpt/b45.ckpt",
    }  # and the one after it


def read_with_plan(root: Path) -> None:
    check_plan(SearchPlan.open(str(root)))


def read_with_study(root: Path) -> None:
    study = hd.Study(root.name, SimulatedTrainer, storage=str(root.parent))
    check_plan(study.plan)
    study.close()


def read_with_dashboard(root: Path) -> None:
    reader = open_study(str(root))
    snapshot = reader.refresh()
    check_plan(reader.plan)
    assert snapshot is not None


def read_with_gc(root: Path) -> None:
    report = collect_garbage(str(root), keep="all", dry_run=True)
    assert report.kept == 2 and not report.deleted  # a30 (shared by A and B) and b45


READERS: dict[str, Callable[[Path], None]] = {
    "SearchPlan.open": read_with_plan,
    "Study": read_with_study,
    "dashboard": read_with_dashboard,
    "gc": read_with_gc,
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_record_is_skipped_with_a_warning_by_every_reader(
    tmp_path: Path, kind: str, reader: str
) -> None:
    bad, why = BAD[kind]
    root = tmp_path / "runs" / "study"
    segment = write_study(root, bad)
    with pytest.warns(hd.HippoWarning, match=rf"{segment}: line 2: record skipped: .*{why}"):
        READERS[reader](root)


def test_a_bad_record_costs_only_itself_when_read_again(tmp_path: Path) -> None:
    # Reopening (and refreshing) warns again and still applies everything else; the bad line
    # never reaches the plan, so a writer that reopened journals nothing about it.
    root = tmp_path / "study"
    segment = write_study(root, BAD["sequence type of a newer version"][0])
    for _ in range(2):
        with pytest.warns(hd.HippoWarning, match=f"{segment}: line 2"):
            plan = SearchPlan.open(str(root))
        check_plan(plan)
        assert plan.refresh() == 0


def held_trial(log: str, gate: str) -> hd.Trial:
    # setup() runs at step 10 (the batch size changes there) and waits for the gate file
    return hd.Trial(
        lr=seq.Constant(0.2), batch_size=seq.MultiStep([32, 64], [10]), log=log, gate=[10, gate]
    )


def test_the_driver_skips_bad_records_and_applies_the_rest(tmp_path: Path) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    trial = held_trial(log, gate)
    cluster, client = make_client(1)
    with cluster, client, dask.config.set({"hippo.refresh-interval": 0.05}):
        study = hd.Study("running", SimulatedTrainer, storage=str(tmp_path), client=client)
        planned = study._plan_trial(trial)

        async def scenario() -> dict[str, float]:
            job = asyncio.ensure_future(study.train(trial, 20))
            await until(lambda: any(e.get("waiting") == 10 for e in read_log(log)), "the gate")
            # Another process journals bad records, then the answer the study waits for.
            name = f"{time.time_ns():020d}-otherproc-000000.jsonl"
            lines = [
                raw_line(BAD[kind][0])
                for kind in ("sequence type of a newer version", "a NaN profile", "steps as text")
            ]
            lines.append(
                encode_line(
                    {"op": "metrics", "trial": planned.id, "step": 20, "values": {"score": 42.0}}
                )
            )
            (tmp_path / "running" / "plan" / name).write_bytes(b"".join(lines))
            try:
                return await asyncio.wait_for(job, 60)
            finally:
                Path(gate).touch()
                await study._close_driver()

        with pytest.warns(hd.HippoWarning) as caught:
            metrics = asyncio.run(scenario())
    assert metrics == {"score": 42.0}  # taken from the journal: the record after the bad ones
    skipped = sorted(str(w.message) for w in caught if "record skipped" in str(w.message))
    assert [m.split(": line ")[1][:1] for m in skipped] == ["1", "2", "3"]
    assert all("otherproc" in m for m in skipped)


@pytest.mark.parametrize(
    ("failure", "timeout", "expected"),
    [
        (RuntimeError("boom"), 0.01, r"could not take in the plan journal of .*RuntimeError: boom"),
        (
            OSError("disk gone"),
            0.01,
            r"could not be read for 0 s \(hippo.storage-timeout\): disk gone",
        ),
        # Permanent: stops at once, not after the storage timeout (which the wait would outlast).
        (
            PermissionError(13, "Access Denied"),
            300.0,
            r"reading the plan journal of .*access denied: check the credentials",
        ),
    ],
)
def test_a_failing_refresh_stops_the_study_with_a_clear_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    timeout: float,
    expected: str,
) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    trial = held_trial(log, gate)
    cluster, client = make_client(1)
    with cluster, client, dask.config.set({"hippo.refresh-interval": 0.05}):
        study = hd.Study(
            "failing",
            SimulatedTrainer,
            storage=str(tmp_path),
            client=client,
            storage_timeout=timeout,
        )

        def refresh() -> int:
            raise failure

        async def scenario() -> None:
            job = asyncio.ensure_future(study.train(trial, 20))
            await until(lambda: any(e.get("waiting") == 10 for e in read_log(log)), "the gate")
            monkeypatch.setattr(study.plan, "refresh", refresh)
            try:
                await asyncio.wait_for(job, 60)  # not a hang: the waiter gets the error
            finally:
                Path(gate).touch()
                await study._close_driver()

        with pytest.raises(hd.HippoError, match=expected):
            asyncio.run(scenario())
