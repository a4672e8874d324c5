"""hd.cluster.local: the embedded cluster, one GPU-advertising worker per core or per device.

A list of device ids starts one worker per id with its own ``CUDA_VISIBLE_DEVICES``, which is
checkable on a CPU machine: nothing here touches a real GPU.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from typing import Any

import dask.config
import pytest

import hippo_dask as hd
from hippo_dask.cluster import _local


def visible_device() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_cpu_workers_each_advertise_one_gpu_slot() -> None:
    with hd.cluster.local(n_workers=2, gpus=[]) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
        assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 1 for w in workers.values())
        cluster = client.cluster
    assert cluster.status.name == "closed"  # closing the client stopped its cluster


def test_one_worker_per_gpu_each_seeing_only_its_own_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two devices on any machine: nvidia-smi is "absent" (no check of the ids) and the workers
    # do not ask NVML about a device they may not have (a GPU machine with one GPU).
    monkeypatch.setattr(_local, "_nvidia_smi_gpus", lambda: None)
    with (
        dask.config.set({"distributed.diagnostics.nvml": False}),
        hd.cluster.local(gpus=["0", "1"], dask_cuda=False) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert sorted(w["name"] for w in info.values()) == ["gpu-0", "gpu-1"]
        assert all(w["resources"] == {"GPU": 1} for w in info.values())
        seen = client.run(visible_device)
        by_name = {info[address]["name"]: device for address, device in seen.items()}
        assert by_name == {"gpu-0": "0", "gpu-1": "1"}


def test_dask_cuda_is_used_when_installed_with_the_gpu_resource_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: dict[str, Any] = {}

    class FakeCUDACluster:
        def __init__(self, **kwargs: Any) -> None:
            made.update(kwargs)
            raise RuntimeError("stop here")  # no GPUs to start workers on

    fake = types.ModuleType("dask_cuda")
    fake.LocalCUDACluster = FakeCUDACluster  # type: ignore[attr-defined]
    fake.__spec__ = types.SimpleNamespace(name="dask_cuda")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "dask_cuda", fake)
    monkeypatch.setattr(_local, "_nvidia_smi_gpus", lambda: None)  # devices 2, 3 on any machine
    with pytest.raises(RuntimeError, match="stop here"):
        hd.cluster.local(gpus=["2", "3"])
    assert made["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert made["resources"] == {"GPU": 1} and made["threads_per_worker"] == 1


def test_gpus_this_machine_does_not_have_are_refused_with_the_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listing = [("0", "GPU-10748f67-e706-3b40-0efb-3b26c9953d03")]
    monkeypatch.setattr(_local, "_nvidia_smi_gpus", lambda: listing)
    with pytest.raises(
        hd.HippoError, match=r"does not have: \['1'\]; nvidia-smi lists 0 \(GPU-10748f67"
    ):
        hd.cluster.local(gpus=["0", "1"], dask_cuda=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _local.cuda_devices() == ["0"]
    _local._check_gpus(["0", "GPU-10748f67-e706-3b40-0efb-3b26c9953d03"])  # index or UUID: fine


def test_cuda_devices_reads_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1, 3")
    assert hd.cluster.cuda_devices() == ["1", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert hd.cluster.cuda_devices() == []


def test_bad_worker_count_names_the_argument() -> None:
    with pytest.raises(hd.HippoError, match="`n_workers` must be an int >= 1 or None, got 0"):
        hd.cluster.local(n_workers=0)


def test_a_client_collected_while_another_cluster_starts_does_not_block_it() -> None:
    """A garbage collection runs in whichever thread allocates, e.g. the event-loop thread of a
    cluster that is starting while its caller holds distributed's LoopRunner lock. A collected
    client stopped its cluster right there, waited for that lock, and the new cluster gave up
    after 10 s ("assert loop is not None"). Now it stops it on a thread of its own."""
    from distributed.utils import LoopRunner

    client = hd.cluster.local(n_workers=1, gpus=[])
    cluster = client.cluster
    returned = threading.Event()

    def collect() -> None:
        client.__del__()  # what the garbage collector calls
        returned.set()

    with LoopRunner._lock:  # held, as by a cluster starting its loop
        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        assert returned.wait(30), "the collected client waited for the LoopRunner lock"
    deadline = time.monotonic() + 60
    while cluster.status.name != "closed" and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the background close, bounded
    assert cluster.status.name == "closed"


def test_a_closed_client_collected_later_leaves_the_loop_runner_lock_alone() -> None:
    from distributed.utils import LoopRunner

    client = hd.cluster.local(n_workers=1, gpus=[])
    client.close()
    with LoopRunner._lock:
        collector = threading.Thread(target=client.__del__, daemon=True)
        collector.start()
        collector.join(30)
        assert not collector.is_alive()
