"""Dask clusters for studies: the embedded local one (one worker per GPU, or per core).

Stages ask for ``resources={"GPU": 1}``; the workers started here advertise one ``GPU`` each. On
a machine with CUDA devices there is one single-threaded worker per device, each seeing only its
own device through ``CUDA_VISIBLE_DEVICES``; without GPUs there is one single-threaded worker per
core and ``GPU`` counts slots.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Any

import distributed
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

__all__ = ["cuda_devices", "local"]

logger = logging.getLogger(__name__)


def cuda_devices() -> list[str]:
    """CUDA device ids this process may use: ``CUDA_VISIBLE_DEVICES``, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def local(
    n_workers: int | None = None,
    *,
    gpus: list[str] | None = None,
    threads_per_worker: int = 1,
    **kwargs: Any,
) -> Client:
    """Start a local Dask cluster whose workers each advertise one ``GPU`` and return its client.

    Parameters
    ----------
    n_workers
        Workers to start on a CPU-only machine (default: one per core). Ignored with GPUs.
    gpus
        CUDA device ids to use, one worker each (default: :func:`cuda_devices`). Pass ``[]`` to
        force CPU workers.
    threads_per_worker
        Threads per worker; stages run one at a time per worker whatever this is.
    **kwargs
        Passed to :class:`distributed.LocalCluster` (CPU) or to each worker (GPU), e.g.
        ``memory_limit``.
    """
    devices = cuda_devices() if gpus is None else list(gpus)
    if devices:
        workers = {
            f"gpu-{device}": {
                "cls": Nanny,
                "options": {
                    "nthreads": threads_per_worker,
                    "resources": {"GPU": 1},
                    "env": {"CUDA_VISIBLE_DEVICES": device},
                    **kwargs,
                },
            }
            for device in devices
        }
        scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
        cluster: distributed.deploy.Cluster = SpecCluster(
            workers=workers, scheduler=scheduler, silence_logs=logging.WARNING
        )
        logger.info("local cluster: %d GPU workers (devices %s)", len(devices), devices)
    else:
        count = n_workers or os.cpu_count() or 1
        options: dict[str, Any] = {
            "n_workers": count,
            "threads_per_worker": threads_per_worker,
            "resources": {"GPU": 1},
            "dashboard_address": ":0",
            "silence_logs": logging.WARNING,
        }
        options.update(kwargs)
        cluster = LocalCluster(**options)
        logger.info("local cluster: %d CPU workers with one GPU slot each", count)
    client = Client(cluster)
    client._hippo_owns_cluster = True  # type: ignore[attr-defined]
    return client
