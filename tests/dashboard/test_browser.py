"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a live study.

A study runs on a LocalCluster (the simulated trainer, held half-way by its gate), the
dashboard server runs in another process (``hippo-dask dashboard``, as a user would start it)
and chromium loads the page. While the study stands at the gate, the page must show it live;
once it finished, the stage tree's node count and the savings figures on the page must be the
plan's. Screenshots go to ``artifacts/`` (the README's comes from here).

Chromium comes from ``.ci/browser/install.sh``; without it this test fails, it does not skip.
Its own ``--screenshot`` comes out blank for a Bokeh server page (it does not wait for the
websocket), hence Playwright with ``executable_path``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask.dashboard import add_to_scheduler
from tests.dashboard.scenario import STEPS, Background, Listed, gate_is_waiting, prepare

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
RENDERED = "() => window.Bokeh !== undefined && Bokeh.documents.length > 0 && Bokeh.documents[0].roots().length > 0"
SETTLED = "() => Bokeh.documents[0].is_idle"  # every view of the last update is drawn
TREE = "Bokeh.documents[0].get_model_by_name('stage-tree-nodes')"


def _browser(user_data: Path) -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium; install "
            "it with `bash .ci/browser/install.sh` (as root; `make test` does)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data),
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 1100},
            device_scale_factor=1,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    yield from _browser(tmp_path / "chromium-profile")


def _serve(storage: Path, name: str) -> subprocess.Popen[str]:
    """``hippo-dask dashboard`` in a process of its own, on a free loopback port."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hippo_dask.cli",
            "dashboard",
            str(storage),
            "--name",
            name,
            "--port",
            "0",
            "--interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _url(process: subprocess.Popen[str]) -> str:
    """The URL the server prints once it listens."""
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"at (http://127\.0\.0\.1:\d+/) ", line)
    if not found:
        process.kill()
        raise AssertionError(f"the dashboard did not start: {line!r} {process.stderr.read()!r}")  # type: ignore[union-attr]
    return found.group(1)


def _screenshot(page: Any, path: Path) -> None:
    """The page as drawn, cut to its content (a full-page shot would resize the viewport and
    catch the layout half-way through a reflow)."""
    page.wait_for_function(SETTLED, timeout=30_000)
    height = page.evaluate(
        "() => Bokeh.index[Bokeh.documents[0].roots()[0].id].el.getBoundingClientRect().bottom"
    )
    page.screenshot(
        path=str(path), clip={"x": 0, "y": 0, "width": 1400, "height": min(int(height) + 8, 1100)}
    )


def _until(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _shown(page: Any) -> dict[str, Any]:
    """What the page shows: the tree's nodes and statuses (its data and title) and the figures."""
    state: dict[str, Any] = page.evaluate(f"""() => {{
        const tree = {TREE};
        return {{statuses: Array.from(tree.data.status),
                 title: Bokeh.documents[0].get_model_by_name('stage-tree').title.text}};
    }}""")
    for key in ("merge-rate", "executed-steps", "requested-steps", "trials"):
        state[key] = page.locator(f'[data-hippo="{key}"]').inner_text()
    state["state"] = page.locator('[data-hippo="state"]').inner_text()
    return state


def test_dashboard_in_chromium(client: Client, browser: Any, tmp_path: Path) -> None:
    study, log, gate, chosen = prepare(tmp_path, client, seconds_per_step=0.01, eval_every=5)
    server = _serve(tmp_path / "runs", "grid")  # starts while the study runs
    run = Background(study, Listed(chosen, STEPS), progress=False)
    errors: list[str] = []
    try:
        url = _url(server)
        _until(lambda: gate_is_waiting(log), "the held trials to reach the gate")
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_function(RENDERED, timeout=60_000)

        # live: standing at the gate, some nodes done, the held root still to finish
        def live() -> dict[str, Any] | None:
            shown = _shown(page)
            done = shown["statuses"].count("done")
            return (
                shown
                if shown["state"] == "live" and done >= 6 and "running" in shown["statuses"]
                else None
            )

        shown = _until(live, "the page to show the study live and half done")
        assert shown["title"].startswith(f"Stage tree: {len(shown['statuses'])} nodes")
        ARTIFACTS.mkdir(exist_ok=True)
        _screenshot(page, ARTIFACTS / "dashboard-live.png")

        Path(gate).touch()
        result = run.result()
        nodes = len(study.plan.nodes)
        stats = result.stats
        expected = {
            "merge-rate": f"{stats.merge_rate:.2f}\u00d7",
            "executed-steps": f"{stats.executed_steps:,}",
            "requested-steps": f"{stats.requested_steps:,}",
            "trials": f"{len(chosen)} / {len(chosen)}",
            "state": "finished",
        }

        # The page takes a refresh's changes one model at a time, so the tree's data can be
        # new while its title is still the last refresh's: wait for the whole finished state.
        expected["title"] = f"Stage tree: {nodes} nodes ({nodes} done); nothing pending"

        def finished() -> dict[str, Any] | None:
            shown = _shown(page)
            same = all(shown[k] == v for k, v in expected.items())
            return shown if same and shown["statuses"] == ["done"] * nodes else None

        shown = _until(finished, f"the page to show the finished plan: {nodes} nodes, {expected}")
        assert stats.merge_rate > 1.5 and stats.executed_steps == stats.unique_steps
        _screenshot(page, ARTIFACTS / "dashboard.png")
        assert errors == []

        # the same page mounted on the Dask scheduler's own dashboard renders too
        pages = add_to_scheduler(client, str(tmp_path / "runs"), "grid")
        other = browser.new_page()
        other.goto(pages[0])
        other.wait_for_function(RENDERED, timeout=60_000)
        count = other.evaluate(f"() => {TREE}.data.id.length")
        assert count == nodes
        assert errors == []
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if not Path(gate).exists():
            Path(gate).touch()  # never leave the held stages blocking the cluster's shutdown
            run.result()
    assert server.returncode == 0
    assert isinstance(study, hd.Study)
