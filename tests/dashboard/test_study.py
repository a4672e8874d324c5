"""The dashboard on real studies: a LocalCluster, the simulated trainer, the real storage.

The reader follows a study while it runs (held half-way by the simulated trainer's gate) and
agrees with the study's own figures once it finished; the progress bar, ``study.dashboard()``,
the pages on the Dask scheduler's dashboard and the thin ``bokeh serve`` apps show the same.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.dashboard import DashboardServer, WorkerLanesView, open_study
from hippo_dask.dashboard._savings import figures_html
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.dashboard.scenario import STEPS, Background, Listed, gate_is_waiting, start, trials
from tests.helpers import executed

ROOT = Path(__file__).resolve().parents[2]


def _poll(condition, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_reader_follows_a_running_study(client: Client, tmp_path: Path) -> None:
    study, run, log, gate, chosen = start(tmp_path, client)
    reader = open_study(str(tmp_path / "runs"), "grid")

    def half_done():  # type: ignore[no-untyped-def]
        if not gate_is_waiting(log):
            return None
        snap = reader.refresh()
        # (the journal says what is done at once, the metrics store within half a second)
        return (
            snap
            if snap.status_counts()["done"] and snap.savings.trials == 14 and not snap.estimated
            else None
        )

    live = _poll(half_done, "the study to stand at the gate with some nodes done")
    assert live.live
    counts = live.status_counts()
    assert counts["running"] >= 1 and counts["running"] + counts["queued"] + counts["pending"] >= 2
    assert counts["failed"] == 0 and counts["stopped"] == 0
    assert live.critical and all(
        {n.id: n.status for n in live.nodes}[s.node] in ("running", "queued", "pending")
        for s in live.critical
    )
    assert live.savings.trials_done < 14
    Path(gate).touch()
    result = run.result()

    final = _poll(
        lambda: (lambda s: s if s.savings.stages == result.stats.stages else None)(
            reader.refresh()
        ),
        "the last stage records",
    )
    stats = study.plan.stats()
    assert final.node_count == stats.nodes == len(study.plan.nodes)
    assert final.status_counts()["done"] == stats.nodes and not final.critical
    s = final.savings
    assert (s.trials, s.trials_done) == (14, 14)
    assert s.requested_steps == result.stats.requested_steps == 14 * STEPS
    assert s.unique_steps == result.stats.unique_steps
    assert s.executed_steps == result.stats.executed_steps == executed(log)
    assert s.merge_rate == pytest.approx(result.stats.merge_rate)
    assert s.worker_seconds == pytest.approx(result.stats.worker_seconds)
    # every recorded metric (each requested step and every 10 steps) is a curve point
    points = sum(len(c.steps) for c in final.curves("score"))
    recorded = sum(len(n.metrics) for n in study.plan.nodes)
    branches = sum(
        1 for n in study.plan.nodes if n.parent is not None and n.start in n.parent.metrics
    )
    assert points == recorded + branches
    best = final.best("score")
    assert best is not None and result.best is not None
    assert best.metrics is not None and result.best.metrics is not None
    assert best.metrics["score"] == result.best.metrics["score"]


def test_result_stats_and_the_dashboard_agree_on_what_sharing_saved(
    client: Client, tmp_path: Path
) -> None:
    """One trial-by-trial estimate (hippo_dask.plan.trial_by_trial_seconds): the requested steps
    at the shared run's all-inclusive seconds per step. ``result.stats`` and the dashboard show
    the same figure, and a run that trains fewer steps than its requests add up to saved a
    positive share (the two used to disagree, and a held-out run showed "saved -85%")."""
    log = str(tmp_path / "train.log")
    study = hd.Study(
        "saved", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client, eval_every=10
    )
    space = hd.GridSpace(
        lr=[
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
            seq.StepLR(0.1, gamma=0.1, milestones=[30, 50]),
            seq.Constant(0.1),
        ],
        optimizer=["sgd", "adam"],
        log=[log],
        seconds_per_step=[0.001],
    )
    tuner = hd.tuners.ASHA(
        space, metric="score", mode="max", min_steps=15, max_steps=STEPS, reduction=2, n_trials=None
    )
    result = study.tune(tuner, progress=False)
    stats = result.stats
    reader = open_study(str(tmp_path / "runs"), "saved")

    def recorded():  # type: ignore[no-untyped-def]
        snap = reader.refresh()
        return snap if snap.savings.stages == stats.stages else None

    snap = _poll(recorded, "the last stage records")
    s = snap.savings
    assert s.requested_steps == stats.requested_steps and s.executed_steps == stats.executed_steps
    assert 0 < stats.executed_steps < stats.requested_steps
    assert s.worker_seconds == pytest.approx(stats.worker_seconds)
    assert s.trial_by_trial_seconds == pytest.approx(stats.trial_by_trial_seconds)
    saved = 1 - stats.worker_seconds / stats.trial_by_trial_seconds
    assert saved == pytest.approx(1 - stats.executed_steps / stats.requested_steps)
    assert 0 < saved < 1 and s.saved_fraction == pytest.approx(saved)
    assert stats.saved_fraction == pytest.approx(saved)
    assert stats.saved_seconds > 0
    shown = f'<span data-hippo="saved">{100 * saved:.0f}%</span>'
    assert shown in figures_html(s)


def test_the_reader_shows_held_stages_running_queued_and_in_the_lanes(
    client: Client, tmp_path: Path
) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    # three roots on two workers, each held at its first step: two run, one waits behind them
    held = [hd.Trial(lr=seq.Constant(lr), log=log, gate=[0, gate]) for lr in (0.1, 0.2, 0.3)]
    study = hd.Study("held", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)
    run = Background(study, Listed(held, 20), progress=False)
    reader = open_study(str(tmp_path / "runs"), "held")

    def in_flight():  # type: ignore[no-untyped-def]
        if sum(e.get("waiting") == 0 for e in read_log(log)) < 2:
            return None
        snap = reader.refresh()
        counts = snap.status_counts()
        return snap if (counts["running"], counts["queued"]) == (2, 1) else None

    try:
        snap = _poll(in_flight, "two held stages running and one queued")
    finally:
        Path(gate).touch()
    assert snap.live and not snap.estimated
    lanes = snap.lanes
    assert lanes["status"].tolist() == ["running", "running"]  # nothing finished, nothing else
    assert lanes["worker"].nunique() == 2 and (lanes["finished"] == snap.taken).all()
    assert (lanes["started"] < snap.taken).all()
    running = {n.id for n in snap.nodes if n.status == "running"}
    assert set(lanes["node"]) == running
    run.result()
    final = _poll(
        lambda: (lambda s: s if s.savings.stages == 3 else None)(reader.refresh()),
        "the three stages' records",
    )
    assert final.status_counts()["done"] == 3
    assert set(final.lanes["status"]) == {"done"} and len(final.lanes) == 3


def test_the_reader_shows_a_failing_stage_failed(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    space = hd.GridSpace(lr=[seq.Constant(0.1)], fail_in=[None, ["train", 0]], log=[log])
    study = hd.Study("failing", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)
    result = study.tune(hd.tuners.Grid(space, metric="score", steps=20), progress=False)
    assert sorted(r.status for r in result.records) == ["done", "failed"]
    snap = open_study(str(tmp_path / "runs"), "failing").refresh()
    status = {n.owner: n.status for n in snap.nodes}
    failing = next(n.owner.id for n in study.plan.nodes if n.owner.fixed["fail_in"])
    assert status[failing] == "failed" and sorted(status.values()) == ["done", "failed"]
    bars = snap.lanes.set_index("owner")
    assert bars.loc[failing, "status"] == "failed" and bars.loc[failing, "error"] == "ValueError"
    view = WorkerLanesView(open_study(str(tmp_path / "runs"), "failing"))
    view.update()
    assert "failed (ValueError)" in view.source.data["state"]
    assert ", 1 failed, " in view.figure.title.text


def test_progress_bar(client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    grid = trials(log, gate)[:12]
    study = hd.Study(
        "bar", hd.testing.simulated.SimulatedTrainer, storage=str(tmp_path), client=client
    )
    result = study.tune(Listed(grid, STEPS), progress=True)
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "tune bar: 100%" in final and "12/12 trials" in final
    assert (
        f"steps {result.stats.executed_steps:,}/{result.stats.requested_steps:,} "
        f"executed/requested, merge rate {result.stats.merge_rate:.2f}"
    ) in final
    again = study.tune(Listed(grid, STEPS), progress=False)  # quiet, and nothing to train
    assert capsys.readouterr().err == "" and again.stats.executed_steps == 0
    study.tune(Listed(grid, STEPS))  # by default only when someone watches: not under pytest
    assert capsys.readouterr().err == ""
    with pytest.raises(hd.HippoError, match="`progress` must be True, False or None"):
        study.tune(Listed(grid, STEPS), progress="yes")  # type: ignore[arg-type]


def test_study_dashboard_inline_served_and_on_the_scheduler(client: Client, tmp_path: Path) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    study = hd.Study(
        "shown",
        hd.testing.simulated.SimulatedTrainer,
        storage=str(tmp_path),
        client=client,
        eval_every=10,
    )
    study.tune(Listed(trials(log, gate)[:4], STEPS), progress=False)
    nodes = len(study.plan.nodes)
    layout = study.dashboard()
    tree = layout.select_one({"name": "stage-tree-nodes"})
    assert tree is not None and len(tree.data["id"]) == nodes

    server = study.dashboard(serve=True)
    assert isinstance(server, DashboardServer) and server.url.startswith("http://127.0.0.1:")
    try:
        for page in ("", "tree", "lanes"):
            with urllib.request.urlopen(server.url + page, timeout=30) as response:
                assert response.status == 200 and b"Bokeh" in response.read()
        assert f'href="{server.url}"' in server._repr_html_()
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=5)

    pages = study.dashboard(scheduler=True)
    assert pages[0].endswith("/hippo/shown") and pages[1].endswith("/hippo/shown/tree")
    assert study.dashboard(scheduler=True) == pages  # added once
    with urllib.request.urlopen(pages[0], timeout=30) as response:
        assert response.status == 200 and b"Bokeh" in response.read()


def test_thin_bokeh_serve_apps(client: Client, tmp_path: Path) -> None:
    from bokeh.application.handlers.script import ScriptHandler
    from bokeh.document import Document

    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    study = hd.Study(
        "apps", hd.testing.simulated.SimulatedTrainer, storage=str(tmp_path), client=client
    )
    study.tune(Listed(trials(log, gate)[:2], STEPS), progress=False)
    expected = {
        "study": "stage-tree-nodes",
        "tree": "stage-tree-nodes",
        "curves": "curves",
        "savings": "savings-steps",
        "lanes": "worker-lanes",
    }
    for app, source in expected.items():
        handler = ScriptHandler(
            filename=str(ROOT / "dashboards" / f"{app}.py"), argv=[str(tmp_path), "--name", "apps"]
        )
        doc = Document()
        handler.modify_document(doc)
        assert not handler.failed, handler.error_detail
        model = doc.select_one({"name": source})
        assert model is not None, app
        if source == "stage-tree-nodes":
            assert len(model.data["id"]) == len(study.plan.nodes)
        assert len(doc.roots) == 1 and doc.title == "hippo-dask: apps"


def test_importing_hippo_dask_imports_neither_bokeh_nor_tqdm() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hippo_dask, hippo_dask.dashboard; "
        "print(sorted(m for m in ('bokeh', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
