"""Snapshots: reopening reads the newest valid snapshot and only the segments it does not hold.

A snapshot replays into the plan a full replay gives (checkpoints, tombstones, measurements,
records still waiting for their request); segments written after it, even by a session that
began before it, still apply; a damaged snapshot is skipped with a warning and the reader falls
back to an older one or to the segments; ``Study`` writes one when due and ``hippo-dask compact``
on demand, deleting segments only with ``--prune``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dask.config
import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.cli import main
from hippo_dask.plan import SearchPlan
from hippo_dask.plan._journal import encode_line
from hippo_dask.plan._snapshot import decode, encode
from hippo_dask.testing.simulated import SimulatedTrainer

TRIALS = [
    hd.Trial(lr=seq.StepLR(0.1, 0.1, [m]), batch=seq.Constant(32), width=w)
    for m in (10, 20, 30)
    for w in (8, 16)
]
UNKNOWN = hd.Trial(lr=seq.Constant(0.5))  # its request comes after the snapshot


def build(root: Path) -> SearchPlan:
    with SearchPlan.open(str(root)) as plan:
        for i, trial in enumerate(TRIALS):
            request = plan.add(trial, 40, tag=f"t{i % 4}")
            plan.record_metrics(request.node, 40, {"score": i / 10, "nan": float("nan")})
            plan.record_profile(request.node, 0.01 * (i + 1))
            node = plan.locate(trial, 10)
            assert node is not None
            plan.record_checkpoint(node, 10, f"ckpt/{i}-10.ckpt")
        shared = plan.locate(TRIALS[0], 10)
        assert shared is not None
        plan.forget_checkpoint(shared, 10)
    # A record about a trial whose request is not in the journal yet: it waits.
    (root / "plan" / f"{time.time_ns():020d}-waiting0-000000.jsonl").write_bytes(
        encode_line(
            {"op": "metrics", "trial": UNKNOWN.id, "step": 5, "values": {"score": 9.0}, "at": 1}
        )
    )
    return SearchPlan.open(str(root))


def view(plan: SearchPlan) -> Any:
    nodes = sorted(
        (
            n.owner.id,
            n.start,
            n.extent,
            sorted(n.requests.items()),
            sorted(n.checkpoints.items()),
            repr(sorted(n.metrics.items())),
            n.seconds_per_step,
        )
        for n in plan.nodes
    )
    return nodes, plan.stats(), sorted((t, tr.id, s) for t, (tr, s) in plan.requests_by_tag.items())


def snapshots(root: Path) -> list[Path]:
    return sorted((root / "plan" / "snapshots").glob("*.snap"))


def test_reopening_from_a_snapshot_gives_the_replayed_plan(tmp_path: Path) -> None:
    plan = build(tmp_path)
    replayed = view(plan)
    assert plan.since_snapshot == len(TRIALS) * 4 + 2  # every line read
    path = plan.compact()
    assert Path(path) in snapshots(tmp_path)
    again = SearchPlan.open(str(tmp_path))
    assert view(again) == replayed
    assert again.since_snapshot == 0  # nothing replayed: the snapshot held every segment
    # The waiting record was kept: it applies once its request arrives.
    with SearchPlan.open(str(tmp_path)) as writer:
        writer.add(UNKNOWN, 20)
    again.refresh()
    assert again.metrics(UNKNOWN, 5) == {"score": 9.0}
    assert SearchPlan.open(str(tmp_path)).metrics(UNKNOWN, 5) == {"score": 9.0}


def test_segments_after_the_snapshot_apply_even_from_an_earlier_session(tmp_path: Path) -> None:
    early = SearchPlan.open(str(tmp_path))  # began before the snapshot, flushes after it
    build(tmp_path).compact()
    early.refresh()
    shared = early.locate(TRIALS[0], 10)
    assert shared is not None
    early.record_checkpoint(shared, 10, "ckpt/again-10.ckpt")
    early.add(UNKNOWN, 20)
    early.flush()  # its segment's name sorts before every segment the snapshot holds
    reopened = SearchPlan.open(str(tmp_path))
    assert reopened.since_snapshot == 2  # only early's two records were read
    assert reopened.latest_checkpoint(TRIALS[0], 40) == (10, "ckpt/again-10.ckpt")
    assert reopened.metrics(UNKNOWN, 5) == {"score": 9.0}  # the waiting record applied
    expected = view(reopened)
    for path in snapshots(tmp_path):
        path.unlink()
    assert view(SearchPlan.open(str(tmp_path))) == expected  # as a full replay


def damage_flip(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[-10] ^= 0x01
    return bytes(flipped)


def damage_consistent_but_wrong(data: bytes) -> bytes:
    payload = decode(data)
    payload["nodes"][1][1] = 99  # a parent that does not exist, under a valid checksum
    return encode(payload)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (damage_flip, "torn or corrupt"),
        (lambda data: data[: len(data) // 2], "torn or corrupt"),
        (lambda data: b"garbage\n", "does not start with a snapshot header"),
        (damage_consistent_but_wrong, "ValueError: node 1 names parent 99"),
    ],
)
def test_a_damaged_snapshot_is_skipped_with_a_warning(
    tmp_path: Path, damage: Any, why: str
) -> None:
    plan = build(tmp_path)
    older = Path(plan.compact())
    with SearchPlan.open(str(tmp_path)) as writer:
        writer.add(UNKNOWN, 20)
    plan.refresh()
    newest = Path(plan.compact())
    expected = view(plan)
    newest.write_bytes(damage(newest.read_bytes()))
    with pytest.warns(hd.HippoWarning, match=rf"snapshot .*{newest.name} was skipped \(.*{why}"):
        reopened = SearchPlan.open(str(tmp_path))
    assert view(reopened) == expected  # from the older snapshot and the segments after it
    assert reopened.since_snapshot == 1
    older.write_bytes(b"")
    with pytest.warns(hd.HippoWarning, match="was skipped") as caught:
        assert view(SearchPlan.open(str(tmp_path))) == expected  # from the segments alone
    assert sum(older.name in str(w.message) or newest.name in str(w.message) for w in caught) == 2


def test_a_study_snapshots_its_plan_on_close_when_due(tmp_path: Path) -> None:
    build(tmp_path / "s")
    with dask.config.set({"hippo.snapshot-every": 1000}):
        hd.Study("s", SimulatedTrainer, storage=str(tmp_path)).close()
    assert snapshots(tmp_path / "s") == []  # 26 records: not due
    with dask.config.set({"hippo.snapshot-every": 20}):
        study = hd.Study("s", SimulatedTrainer, storage=str(tmp_path))
        study.close()
    (snapshot,) = snapshots(tmp_path / "s")
    assert view(SearchPlan.open(study.root)) == view(study.plan)
    with dask.config.set({"hippo.snapshot-every": 20}):
        hd.Study("s", SimulatedTrainer, storage=str(tmp_path)).close()
    assert snapshots(tmp_path / "s") == [snapshot]  # nothing new since


def test_hippo_dask_compact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = view(build(tmp_path / "s"))
    segments = sorted((tmp_path / "s" / "plan").glob("*.jsonl"))
    assert main(["compact", str(tmp_path), "--name", "s"]) == 0
    out = capsys.readouterr().out
    assert "6 trials, 6 requests" in out and "26 journal records" in out
    assert sorted((tmp_path / "s" / "plan").glob("*.jsonl")) == segments  # nothing deleted
    assert main(["compact", str(tmp_path / "s"), "--prune"]) == 0
    assert list((tmp_path / "s" / "plan").glob("*.jsonl")) == []
    assert len(snapshots(tmp_path / "s")) == 1  # the older one went too
    assert view(SearchPlan.open(str(tmp_path / "s"))) == expected
    assert main(["compact", str(tmp_path / "nothing")]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
