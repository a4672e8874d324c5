"""The embedded cluster: one Dask worker per GPU of this machine, or one per core.

Stages ask for ``resources={"GPU": 1}``; the workers started here advertise one ``GPU`` each. On
a machine with CUDA devices there is one single-threaded worker per device, each seeing only its
own device through ``CUDA_VISIBLE_DEVICES`` (with ``dask_cuda.LocalCUDACluster`` when
``dask_cuda`` is installed: it also pins each worker to the CPUs near its GPU); without GPUs there
is one single-threaded worker per core and ``GPU`` counts slots.

Every server of the cluster (scheduler, its dashboard, workers, nannies) listens on 127.0.0.1
unless the caller passes ``host=``: a Dask scheduler runs whatever task it is sent, so anyone
who can reach its port can run code on the workers as the user who started them. Loopback
keeps out other machines, not other users of this one: ``security=True`` puts the cluster on
mutual TLS with a certificate only this process holds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import threading
from typing import Any

from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster
from distributed.comm.addressing import unparse_host_port
from distributed.core import Status
from distributed.deploy.cluster import Cluster
from distributed.security import Security

from hippo_dask.errors import HippoError

__all__ = ["LOOPBACK", "ClusterClient", "close_in_background", "cuda_devices", "local"]

logger = logging.getLogger(__name__)

#: Where every server the engine starts listens unless the user says otherwise.
LOOPBACK = "127.0.0.1"


class ClusterClient(Client):
    """A ``distributed.Client`` that stops its cluster when it closes (``with`` blocks too).

    ``Client(cluster)`` leaves a cluster it did not start running after ``client.close()``;
    the clusters :func:`local` and :func:`~hippo_dask.cluster.slurm` start belong to their
    client, so closing the client also stops the workers (and cancels the SLURM jobs).

    A client that is garbage-collected closes (and stops its cluster) on a thread of its own
    (:func:`close_in_background`): a collection runs in whatever thread happens to
    allocate, and stopping a cluster takes distributed's ``LoopRunner`` lock, which that
    thread's caller may hold (a new cluster starting its event loop waits there for 10 s and
    fails).
    """

    def __del__(self) -> None:
        if getattr(self, "_loop_runner", None) is None or self._is_finalizing():
            super().__del__()  # type: ignore[no-untyped-call]
        else:
            close_in_background(self)  # client and cluster, off the collecting thread

    def close(self, *args: Any, **kwargs: Any) -> Any:
        cluster = self.cluster
        result = super().close(*args, **kwargs)  # type: ignore[no-untyped-call]
        if cluster is not None and not self._is_finalizing() and cluster.status != Status.closed:
            cluster.close()
        return result


def close_in_background(closeable: Any) -> None:
    """Call ``closeable.close()`` on a new daemon thread: for garbage-collection paths (``__del__``,
    ``weakref.finalize``), which must not wait on locks the collecting thread may hold."""
    threading.Thread(target=closeable.close, name="hippo-close", daemon=True).start()


def _nvidia_smi_gpus() -> list[tuple[str, str]] | None:
    """``(index, UUID)`` of every GPU ``nvidia-smi -L`` lists, or ``None`` without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in out.splitlines() if line.startswith("GPU ")]
    return [
        (str(i), line.rsplit("UUID: ", 1)[-1].rstrip(")").strip()) for i, line in enumerate(lines)
    ]


def cuda_devices() -> list[str]:
    """CUDA device ids this process may use: ``CUDA_VISIBLE_DEVICES``, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return [index for index, _ in _nvidia_smi_gpus() or []]


def _check_gpus(devices: list[str]) -> None:
    """Refuse device ids nvidia-smi does not list (when it runs here): a worker given one fails
    to start deep inside Dask (NVML's "Invalid Argument"), far from the cause."""
    known = _nvidia_smi_gpus()
    if known is None:
        return
    names = {name for pair in known for name in pair}
    unknown = [d for d in devices if d not in names and not d.startswith("MIG-")]
    if unknown:
        listed = ", ".join(f"{index} ({uuid})" for index, uuid in known) or "none"
        raise HippoError(
            f"cluster.local: gpus={devices!r} names CUDA devices this machine does not have: "
            f"{unknown!r}; nvidia-smi lists {listed}. Pass indices or UUIDs from that list, or "
            "leave out gpus= to use every device."
        )


def local(
    n_workers: int | None = None,
    *,
    gpus: list[str] | None = None,
    threads_per_worker: int = 1,
    dask_cuda: bool | None = None,
    host: str | None = None,
    security: bool | Security | None = None,
    **kwargs: Any,
) -> Client:
    """Start a local Dask cluster whose workers each advertise one ``GPU`` and return its client.

    This is what a :class:`~hippo_dask.Study` without ``client=`` starts.

    Parameters
    ----------
    n_workers
        Workers to start on a CPU-only machine (default: one per core). Ignored with GPUs.
    gpus
        CUDA device ids to use, one worker each (default: :func:`cuda_devices`). Pass ``[]`` to
        force CPU workers.
    threads_per_worker
        Threads per worker; stages run one at a time per worker whatever this is.
    dask_cuda
        With GPUs, start ``dask_cuda.LocalCUDACluster`` (default: when ``dask_cuda`` is
        installed). ``False`` starts plain Dask workers with ``CUDA_VISIBLE_DEVICES`` set.
    host
        Address the scheduler, its dashboard, the workers and the nannies listen on. Default
        ``127.0.0.1``: only processes on this machine can connect. Anything else (``"0.0.0.0"``
        for every interface, or this machine's network address) opens the cluster: the
        scheduler has no authentication, and anyone who can reach its port can run code on the
        workers, with your permissions and your data. Open it only on a network you trust,
        or run the cluster over TLS (``distributed.security.Security``, and see
        :func:`~hippo_dask.cluster.slurm`'s ``security``). Passing ``interface=`` instead
        (a network interface name, through ``**kwargs``) opens it on that interface.
    security
        ``True``: scheduler, workers and client speak mutual TLS with a certificate made for
        this cluster (``Security.temporary()``, in this process's memory only); a client
        without it is refused. Use it on a machine shared with other users, who can reach
        127.0.0.1 too, or with ``host=``. Or your own ``distributed.security.Security``.
    **kwargs
        Passed to :class:`distributed.LocalCluster` (CPU), ``LocalCUDACluster``, or to each
        worker (GPU without dask_cuda), e.g. ``memory_limit``.

    Returns
    -------
    distributed.Client
        A client that stops the cluster when closed.

    Raises
    ------
    HippoError
        A bad ``n_workers``, both ``host`` and ``interface`` given, or ``gpus`` naming a
        device that nvidia-smi does not list on this machine.

    Examples
    --------
    >>> client = hd.cluster.local(gpus=["0", "1"])          # doctest: +SKIP
    >>> study = hd.Study("digits", DigitsTrainer, client=client)  # doctest: +SKIP
    """
    devices = cuda_devices() if gpus is None else [str(g) for g in gpus]
    if gpus:
        _check_gpus(devices)
    if n_workers is not None and (
        isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1
    ):
        raise HippoError(
            f"cluster.local: `n_workers` must be an int >= 1 or None, got {n_workers!r}"
        )
    if host is not None and kwargs.get("interface") is not None:
        raise HippoError(
            f"cluster.local: give `host` ({host!r}) or `interface` "
            f"({kwargs['interface']!r}), not both"
        )
    if kwargs.get("interface") is None:
        host = LOOPBACK if host is None else host
    listen: dict[str, Any] = {} if host is None else {"host": host}
    if security is True:
        security = Security.temporary()  # type: ignore[no-untyped-call]
    elif security is not None and security is not False and not isinstance(security, Security):
        raise HippoError(
            f"cluster.local: `security` must be True, None or a "
            f"distributed.security.Security, got {security!r}"
        )
    tls: dict[str, Any] = (
        {"security": security, "protocol": "tls://"} if isinstance(security, Security) else {}
    )
    dashboard = {"dashboard_address": ":0" if host is None else unparse_host_port(host, 0)}
    use_cuda = bool(devices) and (
        dask_cuda if dask_cuda is not None else importlib.util.find_spec("dask_cuda") is not None
    )
    cluster: Cluster
    if use_cuda:
        from dask_cuda import LocalCUDACluster

        options: dict[str, Any] = {
            "CUDA_VISIBLE_DEVICES": ",".join(devices),
            "threads_per_worker": threads_per_worker,
            "resources": {"GPU": 1},
            **listen,
            **dashboard,
            **tls,
            "silence_logs": logging.WARNING,
        }
        options.update(kwargs)
        cluster = LocalCUDACluster(**options)
        logger.info("local cluster: dask_cuda, %d GPU workers (devices %s)", len(devices), devices)
    elif devices:
        workers = {
            f"gpu-{device}": {
                "cls": Nanny,
                "options": {
                    "nthreads": threads_per_worker,
                    "resources": {"GPU": 1},
                    "env": {"CUDA_VISIBLE_DEVICES": device},
                    **listen,
                    **tls,
                    **kwargs,
                },
            }
            for device in devices
        }
        scheduler_options = {**listen, **dashboard, **tls}
        if kwargs.get("interface") is not None:
            scheduler_options["interface"] = kwargs["interface"]
        scheduler = {"cls": Scheduler, "options": scheduler_options}
        cluster = SpecCluster(
            workers=workers,
            scheduler=scheduler,  # type: ignore[no-untyped-call]
            security=tls.get("security"),
            silence_logs=logging.WARNING,
        )
        logger.info("local cluster: %d GPU workers (devices %s)", len(devices), devices)
    else:
        count = n_workers or os.cpu_count() or 1
        options = {
            "n_workers": count,
            "threads_per_worker": threads_per_worker,
            "resources": {"GPU": 1},
            **listen,
            **dashboard,
            **tls,
            "silence_logs": logging.WARNING,
        }
        options.update(kwargs)
        cluster = LocalCluster(**options)  # type: ignore[no-untyped-call]
        logger.info("local cluster: %d CPU workers with one GPU slot each", count)
    return ClusterClient(cluster)  # type: ignore[no-untyped-call]
