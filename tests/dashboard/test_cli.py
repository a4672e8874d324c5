"""``hippo-dask dashboard`` and ``hippo-dask report`` on the known study."""

from __future__ import annotations

import html as html_module
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hippo_dask.cli import main
from tests.dashboard.known import write_known_study


def _models(html: str) -> dict[str, dict[str, Any]]:
    """The attributes of the named models in a saved Bokeh page, by name (a data source's
    ``data`` as a dict of columns)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            attributes = node.get("attributes")
            if isinstance(attributes, dict) and "name" in attributes:
                found[attributes["name"]] = dict(attributes)
                if node.get("name") == "ColumnDataSource":
                    found[attributes["name"]]["data"] = dict(attributes["data"]["entries"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for blob in re.findall(
        r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', html, re.S
    ):
        walk(json.loads(html_module.unescape(blob)))
    return found


def test_report_writes_a_standalone_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_known_study(tmp_path)
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(tmp_path), "--name", "known", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"hippo-dask report: wrote {out}\n"
    html = out.read_text()
    assert "https://cdn.bokeh.org" not in html  # Bokeh's JavaScript is inline: opens offline
    models = _models(html)
    assert models["stage-tree-nodes"]["data"]["id"] == [0, 1, 2, 3]
    assert models["stage-tree-nodes"]["data"]["status"] == ["running", "done", "pending", "stopped"]
    assert models["savings-steps"]["data"]["steps"] == [65, 45, 35]
    assert sum(len(xs) for xs in models["curves"]["data"]["xs"]) == 8
    assert '<span data-hippo="merge-rate">1.44&times;</span>' in models["savings-figures"]["text"]
    assert "curves-metric" not in models  # a static page has no metric selector that cannot act


def test_errors_name_the_problem_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_known_study(tmp_path, "alpha")
    write_known_study(tmp_path, "beta")
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "holds 2 studies (alpha, beta); say which with --name NAME" in capsys.readouterr().err
    assert main(["dashboard", str(tmp_path), "--name", "gamma", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "no study named 'gamma'" in err and "studies found there: alpha, beta" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", str(tmp_path), "--name", "alpha", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dashboard", str(tmp_path), "--port", "70000"])
    assert "must be 0..65535, got 70000" in capsys.readouterr().err


def test_dashboard_serves_until_stopped(tmp_path: Path) -> None:
    write_known_study(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "hippo_dask.cli", "dashboard", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the server listens (or exits)
        match = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        assert "study 'known'" in line
        with urllib.request.urlopen(match.group(1), timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200 and "hippo-dask: known" in page
    finally:
        process.terminate()
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert process.returncode == 0
