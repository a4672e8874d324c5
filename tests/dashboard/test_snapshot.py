"""The reader and its snapshot on a study with known content (tests/dashboard/known.py)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

import hippo_dask as hd
from hippo_dask.dashboard import StudyNotFoundError, find_studies, open_study
from hippo_dask.dashboard._snapshot import take_snapshot
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import MetricsStore, StageRecord
from tests.dashboard.known import A, B, C, write_known_study


@pytest.fixture
def known(tmp_path: Path):  # type: ignore[no-untyped-def]
    return write_known_study(tmp_path)


def test_nodes_statuses_and_layout(known) -> None:  # type: ignore[no-untyped-def]
    snap = open_study(str(known.storage), "known").refresh()
    assert snap.node_count == 4
    by_id = {n.id: n for n in snap.nodes}
    assert [(n.parent, n.start, n.extent) for n in snap.nodes] == [
        (None, 0, 20),
        (0, 10, 20),
        (0, 10, 20),
        (None, 0, 5),
    ]
    # the journal session that wrote it began just now: the study counts as live, and the
    # pending chain (node 0 to step 10, then node 2) is the one a worker runs
    assert snap.live and snap.estimated  # the store has no submission records: estimated
    assert {i: n.status for i, n in by_id.items()} == {
        0: "running",
        1: "done",
        2: "pending",
        3: "stopped",
    }
    assert [n.row for n in snap.nodes] == [0, 1, 2, 3]
    assert by_id[0].checkpoints == (20,) and by_id[1].checkpoints == (20,)
    assert by_id[0].trained == 20 and by_id[2].trained == 10
    assert by_id[1].label == "@10 lr=0.001" and by_id[0].label == "optimizer=sgd"
    assert by_id[0].metrics == {"score": 0.7, "loss": pytest.approx(0.3)}


def test_critical_path_is_the_pending_chain(known) -> None:  # type: ignore[no-untyped-def]
    snap = open_study(known.root).refresh()
    assert [(s.node, s.start, s.stop) for s in snap.critical] == [(0, 0, 10), (2, 10, 20)]
    assert [s.seconds for s in snap.critical] == [5.0, 5.0]  # 10 steps x 0.5 s profiled
    assert snap.critical_edges() == [(0, 2, 10)]


def test_savings_figures(known) -> None:  # type: ignore[no-untyped-def]
    s = open_study(known.root).refresh().savings
    assert (s.trials, s.trials_done) == (4, 3)
    assert (s.requested_steps, s.unique_steps, s.executed_steps) == (65, 45, 35)
    assert s.merge_rate == pytest.approx(65 / 45)
    assert s.stages == 3 and s.worker_seconds == pytest.approx(19.0)
    # the 65 requested steps at the shared run's all-inclusive price: 19 s for 35 steps
    assert s.trial_by_trial_seconds == pytest.approx(65 * 19.0 / 35)
    assert s.saved_fraction == pytest.approx(1 - 35 / 65)


def test_curves_draw_shared_prefixes_once(known) -> None:  # type: ignore[no-untyped-def]
    snap = open_study(known.root).refresh()
    assert snap.metric_names == ("score", "loss")
    curves = {c.node: c for c in snap.curves("score")}
    assert sorted(curves) == [0, 1, 3]  # node 2 has no values yet
    assert curves[0].steps == (5, 10, 15, 20) and curves[0].values == (0.2, 0.4, 0.5, 0.7)
    assert curves[1].steps == (10, 15, 20) and curves[1].values == (0.4, 0.6, 0.9)  # joined at 10
    assert curves[3].steps == (5,)
    assert snap.curves("no-such-metric") == []


def test_best_trial_went_the_distance(known) -> None:  # type: ignore[no-untyped-def]
    snap = open_study(known.root).refresh()
    best = snap.best("score", "max")
    assert best is not None and best.tag == "tag-B" and best.path == (0, 1)
    assert best.steps == 20 and best.metrics == {"score": 0.9, "loss": pytest.approx(0.1)}
    assert snap.best("loss", "min").tag == "tag-B"  # type: ignore[union-attr]
    worst = snap.best("score", "min")
    assert worst is not None and worst.tag == "tag-A"  # D's 5 steps never compete


def test_idle_study_runs_nothing(known) -> None:  # type: ignore[no-untyped-def]
    reader = open_study(known.root)
    reader.refresh()
    store = reader.metrics
    later = take_snapshot(
        "known",
        known.root,
        reader.plan,
        reader.requests,
        store.read(),
        store.read_stages(status=None),
        session_started=time.time(),
        now=time.time() + 3600,
    )
    assert not later.live
    assert later.status_counts() == {
        "done": 1,
        "running": 0,
        "queued": 0,
        "pending": 2,
        "stopped": 1,
        "failed": 0,
    }


def test_stages_in_flight_are_exact(known) -> None:  # type: ignore[no-untyped-def]
    """A driver recorded submitting node 0's stage and node 2's behind it, on one worker."""
    reader = open_study(known.root)
    reader.refresh()
    plan = reader.plan
    a, c = plan.locate(A, 10), plan.locate(C, 20)
    assert a is not None and c is not None
    store = MetricsStore(f"{known.root}/metrics.zarr")  # the driver of a second session
    now = time.time()
    worker = "tcp://127.0.0.1:4003"
    store.append_stages(
        [
            StageRecord(a.owner.id, 0, 10, now - 4, math.nan, worker, status="submitted"),
            StageRecord(c.owner.id, 10, 20, now - 3, math.nan, worker, status="submitted"),
        ]
    )
    snap = reader.refresh()
    assert not snap.estimated
    assert {n.id: n.status for n in snap.nodes} == {
        0: "running",
        1: "done",
        2: "queued",
        3: "stopped",
    }
    running = snap.lanes[snap.lanes["status"] == "running"]
    assert running["node"].tolist() == [0] and running["worker"].tolist() == [worker]
    assert running["started"].tolist() == [pytest.approx(now - 4)]
    assert running["finished"].tolist() == [snap.taken]  # drawn up to now
    assert snap.savings.stages == 3  # only finished stages count

    # node 0's stage fails for good: node 2 (queued behind it) is the worker's stage now
    store.append_stages(
        [
            StageRecord(
                a.owner.id, 0, 10, now - 3.5, now - 2, worker, status="failed", error="ValueError"
            )
        ]
    )
    snap = reader.refresh()
    assert {n.id: n.status for n in snap.nodes} == {
        0: "failed",
        1: "done",
        2: "running",
        3: "stopped",
    }
    bars = {(int(r.node), str(r.status)): (r.started, r.finished) for r in snap.lanes.itertuples()}
    assert bars[(0, "failed")] == (pytest.approx(now - 3.5), pytest.approx(now - 2))
    assert bars[(2, "running")] == (pytest.approx(now - 2), snap.taken)

    # an hour later nothing runs: the study is idle and the open record stale
    later = take_snapshot(
        "known",
        known.root,
        reader.plan,
        reader.requests,
        store.read(),
        store.read_stages(status=None),
        session_started=now,
        now=now + 3600,
    )
    assert not later.live and later.status_counts()["running"] == 0
    assert set(later.lanes["status"]) == {"done", "failed"}


def test_refresh_takes_in_what_is_new(known) -> None:  # type: ignore[no-untyped-def]
    reader = open_study(known.root)
    first = reader.refresh()
    plan = SearchPlan.open(known.root)  # another writer, as a second study process would be
    node = plan.locate(B, 20)
    assert node is not None
    plan.add(
        hd.Trial(optimizer="sgd", lr=hd.seq.MultiStep([0.1, 0.5], milestones=[15])), 20, tag="tag-E"
    )
    plan.flush()
    assert reader.latest(max_age=60) is first  # young enough: not read again
    second = reader.refresh()
    assert second.node_count == first.node_count + 1 and second.savings.trials == 5
    assert first.node_count == 4  # a snapshot never changes once taken
    assert math.isclose(second.savings.requested_steps, 85)


def test_where_the_study_is(tmp_path: Path) -> None:
    write_known_study(tmp_path, "first")
    write_known_study(tmp_path, "second")
    assert find_studies(str(tmp_path)) == ["first", "second"]
    assert open_study(str(tmp_path / "first")).name == "first"  # the study folder itself
    assert open_study(str(tmp_path), "second").root == f"{tmp_path}/second"
    with pytest.raises(StudyNotFoundError, match=r"holds 2 studies \(first, second\); say which"):
        open_study(str(tmp_path))
    with pytest.raises(
        StudyNotFoundError, match=r"no study named 'third' .* found there: first, second"
    ):
        open_study(str(tmp_path), "third")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudyNotFoundError, match="holds no study"):
        open_study(str(empty))
    with pytest.raises(FileNotFoundError):  # a StudyNotFoundError is one too
        open_study(str(tmp_path / "missing"), "x")
    assert not (tmp_path / "missing").exists()  # looking created nothing


def test_one_study_under_a_root_needs_no_name(tmp_path: Path) -> None:
    write_known_study(tmp_path, "only")
    assert open_study(str(tmp_path)).name == "only"


def test_a_study_on_s3(s3_server, s3_bucket: str) -> None:  # type: ignore[no-untyped-def]
    options = s3_server.storage_options
    write_known_study(s3_bucket, "remote", options)
    assert find_studies(s3_bucket, options) == ["remote"]
    snap = open_study(s3_bucket, storage_options=options).refresh()
    assert snap.node_count == 4 and snap.root == f"{s3_bucket}/remote"
    assert (snap.savings.requested_steps, snap.savings.executed_steps) == (65, 35)
    assert sum(len(c.steps) for c in snap.curves("score")) == 8
    with pytest.raises(StudyNotFoundError, match="studies found there: remote"):
        open_study(s3_bucket, "local", options)
