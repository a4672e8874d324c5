"""Markup planted in a study runs no script in the live dashboard or the static report (chromium).

A real study on a real LocalCluster trains a trainer whose metric names, hyper-parameter names
and values, and a failure's exception type and message carry ``<img src=x onerror=...>`` and
``<script>``. Its folder is then copied under a marked-up study name (``Study`` refuses ``<`` in
a name; the dashboard shows whatever folder it is given) and a record with a marked-up worker
name is added, as another writer to shared storage could. Chromium opens the page served by
``hippo-dask dashboard`` and the file written by ``hippo-dask report``, hovers every bar of the
stage tree, every learning curve and every bar of the worker lanes, and checks that no script
ran (``window.__pwned`` stays undefined) and that the planted strings are shown as text.

An ``<img>`` whose load fails reports ``onerror`` asynchronously: after each hover a control
image with the same ``src`` is added, and the check waits for its ``onerror`` to have fired
before looking at ``window.__pwned``, with a deadline, not a sleep.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.storage import MetricsStore, StageRecord
from tests.dashboard.scenario import Listed
from tests.dashboard.test_browser import RENDERED, ROOT, SETTLED, _browser, _serve, _url
from tests.helpers import make_client
from tests.security.hostile import (
    ERROR,
    HP_NAME,
    HP_VALUE,
    IMG,
    METRIC_IMG,
    METRIC_SCRIPT,
    SCRIPT,
    STUDY,
    WORKER,
    Exploded,
    HostileTrainer,
)

pytestmark = pytest.mark.browser

STEPS = 20
TRIALS = [
    hd.Trial(**{HP_NAME: seq.MultiStep([0.1, 0.01], milestones=[10]), "optimizer": HP_VALUE}),
    hd.Trial(**{HP_NAME: seq.MultiStep([0.1, 0.001], milestones=[10]), "optimizer": HP_VALUE}),
    hd.Trial(**{HP_NAME: seq.Constant(0.1), "optimizer": IMG, "explode": True}),
]

POINT = """([figure, source, i]) => {
  const doc = Bokeh.documents[0];
  const view = Bokeh.index.find_one(doc.get_model_by_name(figure));
  const d = doc.get_model_by_name(source).data;
  let x, y;
  if (source === 'stage-tree-nodes') { x = (d.start[i] + d.extent[i]) / 2; y = d.row[i]; }
  else if (source === 'curves') {
    const k = Math.floor((d.xs[i].length - 1) / 2);
    x = (d.xs[i][k] + d.xs[i][k + 1]) / 2; y = (d.ys[i][k] + d.ys[i][k + 1]) / 2;
  } else { x = (d.left[i] + d.right[i]) / 2; y = d.worker[i]; }
  const box = view.canvas_view.el.getBoundingClientRect();
  return [box.left + view.frame.x_scale.compute(x), box.top + view.frame.y_scale.compute(y)];
}"""

SETTLE = """() => {
  const img = document.createElement('img');
  img.onerror = () => { window.__controls = (window.__controls || 0) + 1; };
  img.src = 'x';
  document.body.appendChild(img);
}"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    yield from _browser(tmp_path / "chromium-profile")


@pytest.fixture(scope="module")
def hostile_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished real study with markup everywhere, under the marked-up name."""
    tmp = tmp_path_factory.mktemp("hostile")
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study(
            "planted", HostileTrainer, storage=str(tmp / "runs"), client=client, eval_every=5
        )
        result = study.tune(Listed(TRIALS, STEPS), progress=False)
    statuses = sorted(r.status for r in result.records)
    assert statuses == ["done", "done", "failed"], statuses
    (failed,) = [r for r in result.records if r.status == "failed"]
    assert failed.error is not None and ERROR in failed.error
    storage = tmp / "shared"
    shutil.copytree(tmp / "runs" / "planted", storage / STUDY)
    node = study.plan.nodes[0]
    now = time.time()
    MetricsStore(f"{storage / STUDY}/metrics.zarr").append_stages(
        [
            StageRecord(
                node=node.owner.id,
                start_step=0,
                step=5,
                started=now - 2,
                finished=now - 1,
                worker=WORKER,
            ),
        ]
    )
    return storage


def _settled(page: Any, count: list[int]) -> None:
    """Wait until an image that fails to load like the planted ones has reported its error."""
    count[0] += 1
    page.evaluate(SETTLE)
    page.wait_for_function(f"() => (window.__controls || 0) >= {count[0]}", timeout=30_000)
    assert page.evaluate("() => typeof window.__pwned") == "undefined", "a planted script ran"


def _hover_everything(page: Any) -> str:
    """Hover every tree bar, curve and lane bar; the tooltips' text, one per hover."""
    page.wait_for_function(RENDERED, timeout=60_000)
    page.wait_for_function(SETTLED, timeout=30_000)
    count = [0]
    _settled(page, count)
    shown: list[str] = []
    targets = [
        ("stage-tree", "stage-tree-nodes", "id", r"node {} \("),
        ("curves-figure", "curves", "node", r"node {}(?!\d)"),
        ("worker-lanes-figure", "worker-lanes", "node", r"node {}: steps"),
    ]
    for figure, source, key, label in targets:
        data = page.evaluate(f"() => Bokeh.documents[0].get_model_by_name('{source}').data")
        assert data[key], f"{source} is empty"
        for i, ident in enumerate(data[key]):
            if source == "curves" and len(data["xs"][i]) < 2:
                continue  # a single point has no line to hover
            page.mouse.move(1, 1)
            x, y = page.evaluate(POINT, [figure, source, i])
            page.mouse.move(x, y)
            tip = page.locator(
                ".bk-tooltip-content", has_text=re.compile(label.format(ident))
            ).first
            tip.wait_for(state="visible", timeout=15_000)
            shown.append(tip.inner_text())
            _settled(page, count)
    return "\n".join(shown)


def _check_page(page: Any, title: str) -> str:
    """Hover everything; check that no script ran and the planted strings show as text."""
    text = _hover_everything(page)
    assert page.title() == title
    assert page.locator('[data-hippo="study"]').inner_text() == STUDY
    for planted in (
        HP_NAME,
        HP_VALUE,
        IMG,
        METRIC_IMG,
        METRIC_SCRIPT,
        Exploded.__name__,
        WORKER.split("://", 1)[1],
    ):
        assert planted in text, f"{planted!r} is not shown in any tooltip"
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    return text


def test_live_dashboard_runs_no_planted_script(hostile_storage: Path, browser: Any) -> None:
    server = _serve(hostile_storage, STUDY)
    try:
        url = _url(server)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("canvas", timeout=60_000)
        _check_page(page, f"hippo-dask: {STUDY}")
        options = page.locator("select option").all_inner_texts()
        assert METRIC_IMG in options and METRIC_SCRIPT in options
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_static_report_runs_no_planted_script(
    hostile_storage: Path, browser: Any, tmp_path: Path
) -> None:
    report = tmp_path / "report.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hippo_dask.cli",
            "report",
            str(hostile_storage),
            "--name",
            STUDY,
            "-o",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    source = report.read_text()
    assert IMG not in source and SCRIPT not in source  # nothing planted is markup in the file
    page = browser.new_page()
    page.goto(report.as_uri())
    _check_page(page, f"hippo-dask report: {STUDY}")
