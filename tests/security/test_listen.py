"""Nothing the project starts listens beyond this machine unless the user asks (issue 12).

Every test starts a real Dask cluster and reads, with psutil, the
listening TCP sockets of this process and of every process it started: by default each one is
on a loopback address; ``host=`` / ``--host`` opens them, and then they are where asked.

The GPU path without dask_cuda runs on any machine with ``gpus=[...], dask_cuda=False`` (it only
sets ``CUDA_VISIBLE_DEVICES``; the ids are not checked against nvidia-smi and the workers do not
ask NVML, so a machine with fewer GPUs runs it too). ``dask_cuda.LocalCUDACluster`` is replaced by a stand-in that
records its options and starts a plain ``LocalCluster`` with them, as the real one does
(it is a ``LocalCluster`` subclass) after its GPU bookkeeping. The dashboards' sockets are
measured in test_listen_dashboard.py (they need bokeh, which a GPU machine may lack).
"""

from __future__ import annotations

import ipaddress
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import psutil
import pytest
from distributed import Client, LocalCluster
from distributed.security import Security

import hippo_dask as hd
from hippo_dask.cluster import _local
from hippo_dask.testing.simulated import SimulatedTrainer

OPEN = "0.0.0.0"


def listening(pid: int | None = None) -> list[tuple[str, int, int]]:
    """``(address, port, pid)`` of every listening TCP socket of process ``pid`` (default:
    this one) and of all its descendants."""
    root = psutil.Process(pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:  # a helper process that ended meanwhile
            continue
        found += [
            (c.laddr.ip, c.laddr.port, process.pid)
            for c in connections
            if c.status == psutil.CONN_LISTEN
        ]
    return found


def open_ones(sockets: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    return [s for s in sockets if not ipaddress.ip_address(s[0].split("%")[0]).is_loopback]


def assert_only_loopback(sockets: list[tuple[str, int, int]], at_least: int) -> None:
    assert len(sockets) >= at_least, sockets
    assert open_ones(sockets) == [], f"listening beyond this machine: {open_ones(sockets)}"


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/")[0])


def check_cluster(client: Any, workers: int, *, opened: str | None = None) -> None:
    """The scheduler, its dashboard, and each worker (and its nanny) listen where they should."""
    client.wait_for_workers(workers, timeout=120)
    info = client.scheduler_info(n_workers=-1)
    addresses = [info["address"], *info["workers"]]
    sockets = listening()
    ports = {port: ip for ip, port, _ in sockets}
    dashboard = port_of(client.dashboard_link.replace("http://", "tcp://"))
    for port in [*map(port_of, addresses), dashboard]:
        assert port in ports, (port, sockets)  # the servers named are among those measured
    if opened is None:
        assert_only_loopback(sockets, at_least=2 + 2 * workers)  # nannies too
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        assert client.dashboard_link.startswith("http://127.0.0.1:")
    else:
        for port in [*map(port_of, addresses), dashboard]:
            assert ports[port] in (opened, "::"), (port, sockets)


def test_the_cluster_a_study_starts_listens_only_on_this_machine(tmp_path: Path) -> None:
    """``Study`` without ``client=`` starts :func:`hd.cluster.local` with its defaults: on this
    machine's path (CPU here; on a GPU machine the GPU path)."""
    with hd.Study("listen", SimulatedTrainer, storage=str(tmp_path)) as study:
        client = study.client
        check_cluster(client, len(client.cluster.workers))


@pytest.fixture
def any_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Device ids need not exist here: nvidia-smi "absent", NVML not asked."""
    monkeypatch.setattr(_local, "_nvidia_smi_gpus", lambda: None)
    with dask.config.set({"distributed.diagnostics.nvml": False}):
        yield


def test_gpu_workers_without_dask_cuda_listen_only_on_this_machine(any_gpus: None) -> None:
    with hd.cluster.local(gpus=["0", "1"], dask_cuda=False) as client:
        check_cluster(client, 2)


@pytest.fixture
def fake_dask_cuda(monkeypatch: pytest.MonkeyPatch, any_gpus: None) -> Iterator[dict[str, Any]]:
    """``dask_cuda`` whose ``LocalCUDACluster`` records its options and starts a LocalCluster
    with them (one worker per device), so its sockets can be measured without a GPU."""
    made: dict[str, Any] = {}

    class FakeCUDACluster(LocalCluster):
        def __init__(self, CUDA_VISIBLE_DEVICES: str = "", **options: Any) -> None:
            made.clear()
            made.update(options, CUDA_VISIBLE_DEVICES=CUDA_VISIBLE_DEVICES)
            super().__init__(n_workers=len(CUDA_VISIBLE_DEVICES.split(",")), **options)  # type: ignore[no-untyped-call]

    module = types.ModuleType("dask_cuda")
    module.LocalCUDACluster = FakeCUDACluster  # type: ignore[attr-defined]
    module.__spec__ = types.SimpleNamespace(name="dask_cuda")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "dask_cuda", module)
    yield made


def test_local_cuda_cluster_is_asked_to_listen_only_on_this_machine(
    fake_dask_cuda: dict[str, Any],
) -> None:
    with hd.cluster.local(gpus=["0", "1"]) as client:
        assert fake_dask_cuda["host"] == "127.0.0.1"
        assert fake_dask_cuda["dashboard_address"] == "127.0.0.1:0"
        check_cluster(client, 2)


def test_local_cuda_cluster_opens_when_asked(fake_dask_cuda: dict[str, Any]) -> None:
    with hd.cluster.local(gpus=["0"], host=OPEN) as client:
        assert fake_dask_cuda["host"] == OPEN
        check_cluster(client, 1, opened=OPEN)


@pytest.mark.parametrize(
    "path",
    [{"n_workers": 1, "gpus": []}, {"gpus": ["0"], "dask_cuda": False}],
    ids=["cpu", "gpu-without-dask-cuda"],
)
def test_a_cluster_opens_only_when_asked(path: dict[str, Any], any_gpus: None) -> None:
    with hd.cluster.local(host=OPEN, **path) as client:
        check_cluster(client, 1, opened=OPEN)


@pytest.mark.parametrize("path", ["cpu", "gpu-without-dask-cuda", "dask-cuda"])
def test_security_true_runs_the_cluster_over_tls_and_refuses_other_clients(
    path: str, request: pytest.FixtureRequest, any_gpus: None
) -> None:
    """Loopback keeps out other machines, not other users of this one: TLS does."""
    options: dict[str, Any] = {
        "cpu": {"n_workers": 1, "gpus": []},
        "gpu-without-dask-cuda": {"gpus": ["0"], "dask_cuda": False},
        "dask-cuda": {"gpus": ["0"]},
    }[path]
    if path == "dask-cuda":
        request.getfixturevalue("fake_dask_cuda")
    with hd.cluster.local(security=True, **options) as client:
        client.wait_for_workers(1, timeout=120)
        address = client.scheduler.address
        workers = list(client.scheduler_info(n_workers=-1)["workers"])
        assert address.startswith("tls://127.0.0.1:") and workers[0].startswith("tls://127.0.0.1:")
        assert client.submit(sum, [1, 2]).result() == 3
        assert_only_loopback(listening(), at_least=4)
        with pytest.raises(OSError):  # another certificate
            Client(address, security=Security.temporary(), timeout="10s")
        with pytest.raises(OSError):  # no TLS at all
            Client(address.replace("tls://", "tcp://"), timeout="10s")


def test_host_and_interface_together_are_refused() -> None:
    with pytest.raises(
        hd.HippoError, match=r"give `host` \('0.0.0.0'\) or `interface` \('lo'\), not both"
    ):
        hd.cluster.local(n_workers=1, gpus=[], host=OPEN, interface="lo")
