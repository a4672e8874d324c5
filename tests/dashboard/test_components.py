"""Each panel's update() on the known study: what its ColumnDataSources hold afterwards."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from hippo_dask.dashboard import (
    CurvesView,
    SavingsView,
    StageTreeView,
    StudyDashboard,
    WorkerLanesView,
    open_study,
)
from hippo_dask.dashboard._base import COLORS
from hippo_dask.storage import MetricsStore, StageRecord
from tests.dashboard.known import A, C, write_known_study


@pytest.fixture
def reader(tmp_path: Path):  # type: ignore[no-untyped-def]
    return open_study(write_known_study(tmp_path).root)


def test_stage_tree(reader) -> None:  # type: ignore[no-untyped-def]
    view = StageTreeView(reader)
    view.update()
    data = view.source.data
    assert data["id"] == [0, 1, 2, 3]
    assert data["status"] == ["running", "done", "pending", "stopped"]
    assert data["color"] == [COLORS[s] for s in ("running", "done", "pending", "stopped")]
    assert data["start"] == [0, 10, 10, 0] and data["extent"] == [20, 20, 20, 5]
    assert data["trained"] == [20, 20, 10, 5]
    assert data["checkpoints"] == ["20", "20", "none", "5"]
    assert "lr = MultiStep" in data["config"][1] and "lr = 0.001" in data["branch"][1]
    assert data["metrics"][1] == "at step 20: loss = 0.1, score = 0.9"
    assert data["speed"][:2] == ["500.0 ms per step"] * 2
    edges = view.edges.data
    assert list(zip(edges["child"], edges["y0"], edges["y1"], edges["critical"])) == [
        (1, 0, 1, False),
        (2, 0, 2, True),
    ]
    assert view.critical.data["node"] == [0, 2]
    assert list(zip(view.critical.data["x0"], view.critical.data["x1"])) == [(0, 10), (10, 20)]
    assert view.checkpoints.data["x"] == [20, 20, 5]
    title = view.figure.title.text
    assert title.startswith("Stage tree: 4 nodes (1 done, 1 running, 1 pending, 1 stopped)")
    assert "critical path 2 stages, 20 steps, ~10 s" in title
    assert title.endswith("(running estimated: the store has no submission records)")
    assert view.figure.yaxis.major_label_overrides[1] == "@10 lr=0.001"


def test_curves(reader) -> None:  # type: ignore[no-untyped-def]
    view = CurvesView(reader)
    view.update()
    assert view.select.options == ["score", "loss"] and view.select.value == "score"
    data = view.source.data
    assert data["node"] == [0, 1, 3]
    assert sum(len(xs) for xs in data["xs"]) == 8  # 4 + 3 (joined at step 10) + 1
    assert data["ys"][1] == [0.4, 0.6, 0.9]
    # the best trial (B, 0.9 at step 20) is drawn over the rest: its path, nodes 0 and 1
    assert view.best_source.data["node"] == [0, 1]
    assert view.best_point.data["x"] == [20] and view.best_point.data["y"] == [0.9]
    assert "best (highest) 0.9" in view.figure.title.text
    # choosing another metric: loss, where lower is better
    view.select.value = "loss"
    assert view.mode == "min" and view.mode_select.active == 1
    assert view.best_point.data["y"] == [pytest.approx(0.1)]
    assert view.figure.yaxis.axis_label == "loss"
    view.mode_select.active = 0  # "higher is better" on loss: the worst full-length trial, A
    assert view.best_source.data["node"] == [0]
    assert view.best_point.data["y"] == [pytest.approx(0.3)]


def test_curves_reject_an_unknown_mode(reader) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="`mode` must be 'max' or 'min', got 'up'"):
        CurvesView(reader, mode="up")


def test_savings(reader) -> None:  # type: ignore[no-untyped-def]
    view = SavingsView(reader)
    view.update()
    assert view.source.data["kind"] == ["trial-by-trial", "unique", "executed"]
    assert view.source.data["steps"] == [65, 45, 35]
    assert view.time_source.data["seconds"] == [pytest.approx(65 * 19.0 / 35), pytest.approx(19.0)]
    assert view.time_source.data["label"] == ["~35.3 s", "19.0 s"]
    text = view.figures.text
    assert '<span data-hippo="merge-rate">1.44&times;</span>' in text
    assert '<span data-hippo="trials">3 / 4</span>' in text
    assert '<span data-hippo="executed-steps">35</span>' in text
    assert '<span data-hippo="saved">46%</span>' in text


def test_worker_lanes(reader) -> None:  # type: ignore[no-untyped-def]
    view = WorkerLanesView(reader)
    view.update()
    data = view.source.data
    assert sorted(zip(data["node"], data["worker"], data["steps"])) == [
        (0, "127.0.0.1:4001", "0 \u2192 20"),
        (1, "127.0.0.1:4002", "10 \u2192 20"),
        (3, "127.0.0.1:4002", "0 \u2192 5"),
    ]
    assert sorted(zip(data["left"], data["right"])) == [
        (1_000_000.0, 1_002_000.0),
        (1_000_000.0, 1_012_000.0),
        (1_012_000.0, 1_017_000.0),
    ]
    assert list(view.figure.y_range.factors) == ["127.0.0.1:4001", "127.0.0.1:4002"]
    # nodes 0 and 1 hang from the same root: one colour; node 3 from another
    colour = dict(zip(data["node"], data["color"]))
    assert colour[0] == colour[1] != colour[3]
    # 19 busy seconds on 2 lanes over the 17 s from the first start to the last end
    assert view.figure.title.text == "Worker lanes: 2 workers, 3 stages, busy 56% of 17.0 s"


def test_worker_lanes_and_tree_with_stages_in_flight(tmp_path: Path) -> None:
    known = write_known_study(tmp_path)
    reader = open_study(known.root)
    reader.refresh()
    a, c = reader.plan.locate(A, 10), reader.plan.locate(C, 20)
    assert a is not None and c is not None
    now = time.time()
    MetricsStore(f"{known.root}/metrics.zarr").append_stages(
        [
            StageRecord(
                a.owner.id, 0, 10, now - 4, math.nan, "tcp://127.0.0.1:4001", status="submitted"
            ),
            StageRecord(
                c.owner.id, 10, 20, now - 3, math.nan, "tcp://127.0.0.1:4001", status="submitted"
            ),
        ]
    )
    tree, lanes = StageTreeView(reader), WorkerLanesView(reader)
    snapshot = reader.refresh()
    tree.update(snapshot)
    lanes.update(snapshot)
    assert tree.source.data["status"] == ["running", "done", "queued", "stopped"]
    assert tree.source.data["color"][2] == COLORS["queued"] != COLORS["running"]
    assert "estimated" not in tree.figure.title.text
    data = lanes.source.data
    running = [i for i, s in enumerate(data["status"]) if s == "running"]
    assert len(running) == 1 and len(data["status"]) == 4  # the queued stage has no bar yet
    (i,) = running
    assert data["node"][i] == 0 and data["right"][i] == snapshot.taken * 1e3
    assert (data["alpha"][i], data["hatch"][i], data["state"][i]) == (0.3, "/", "running now")
    done = [j for j, s in enumerate(data["status"]) if s == "done"]
    assert {(data["alpha"][j], data["hatch"][j]) for j in done} == {(1.0, " ")}
    assert lanes.figure.title.text.startswith("Worker lanes: 2 workers, 3 stages, 1 running, busy")


def test_the_page_holds_every_panel(reader) -> None:  # type: ignore[no-untyped-def]
    board = StudyDashboard(reader)
    board.update()
    assert set(board.components) == {"tree", "curves", "savings", "lanes"}
    assert 'data-hippo="study">known<' in board.header.text and ">live<" in board.header.text
    assert board.components["tree"].source.data["id"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"unknown panels \['gantt'\]"):
        StudyDashboard(reader, ("tree", "gantt"))
