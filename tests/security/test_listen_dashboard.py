"""The dashboards listen only on this machine unless the user asks (issue 12).

``hippo-dask dashboard``, :func:`hippo_dask.dashboard.serve` and ``study.dashboard(serve=True)``
each start a real Bokeh server; psutil reads where it listens: 127.0.0.1 by default, and where
``host=`` / ``--host`` says when opened.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hippo_dask as hd
from hippo_dask.dashboard import serve
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.dashboard.known import write_known_study
from tests.security.test_listen import OPEN, assert_only_loopback, listening


def test_the_dashboard_server_listens_only_on_this_machine_unless_asked(tmp_path: Path) -> None:
    known = write_known_study(tmp_path)
    for host, where in ((None, "127.0.0.1"), (OPEN, OPEN)):
        options = {} if host is None else {"host": host}
        server = serve(known.root, port=0, background=True, **options)
        try:
            mine = [s for s in listening() if s[1] == server.port]
            assert mine and {ip for ip, _, _ in mine} == {where}, mine
            if host is None:
                assert_only_loopback(mine, at_least=1)
        finally:
            server.stop()


def test_study_dashboard_serve_listens_only_on_this_machine_unless_asked(tmp_path: Path) -> None:
    with hd.Study("listen", SimulatedTrainer, storage=str(tmp_path)) as study:
        for host, where in ((None, "127.0.0.1"), (OPEN, OPEN)):
            options = {} if host is None else {"host": host}
            server = study.dashboard(serve=True, **options)
            try:
                mine = [s for s in listening() if s[1] == server.port]
                assert mine and {ip for ip, _, _ in mine} == {where}, mine
            finally:
                server.stop()
        assert study._client is None  # showing the dashboard started no cluster


@pytest.mark.parametrize(
    "argv, where", [([], "127.0.0.1"), (["--host", OPEN], OPEN)], ids=["default", "opened"]
)
def test_the_dashboard_command_listens_only_on_this_machine_unless_asked(
    tmp_path: Path, argv: list[str], where: str
) -> None:
    write_known_study(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "hippo_dask.cli", "dashboard", str(tmp_path), "--port", "0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the server listens (or it exited)
        match = re.search(r"at http://[^:]+:(\d+)/", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        sockets = listening(process.pid)
        assert {ip for ip, port, _ in sockets if port == int(match.group(1))} == {where}, sockets
        if not argv:
            assert_only_loopback(sockets, at_least=1)
    finally:
        process.terminate()
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the exit, bounded
    assert process.returncode == 0
