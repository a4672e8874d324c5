"""Studies on SLURM through dask-jobqueue: one Dask worker per GPU, scaled on runnable stages.

:func:`slurm` returns a client of a ``dask_jobqueue.SLURMCluster`` whose jobs ask for their GPUs
(``--gres=gpu:K``) and start K worker processes, each with ``--resources GPU=1`` and its own
``CUDA_VISIBLE_DEVICES``; see :mod:`hippo_dask.cluster._jobqueue` for the job script, the
``<SLURM job id>-<i>`` worker names and the replacement of jobs that end early. This module
holds what needs no dask-jobqueue: the arguments, the lifetimes, and adaptive scaling.

Adaptive scaling follows the study, not Dask's task queue: the driver submits stages only to
workers it has, so Dask never sees the stages waiting for one. Each driver publishes how many
workers it could use now (busy ones plus chains ready to start) in the scheduler's metadata;
:class:`StageDemandAdaptive` scales on that.

Network: the scheduler must be reachable from the compute nodes, so it listens on the network
(``interface=``, or the host's address); ``security=True`` runs scheduler, workers and client over
mutual TLS, and only holders of the cluster's certificate can connect. Its dashboard listens on
127.0.0.1 unless ``scheduler_options={"dashboard_address": ...}`` says otherwise. ``slurm``
returns only once ``sbatch`` accepted the first jobs, and raises
:class:`~hippo_dask.errors.ClusterStartError` (closing the cluster) when it refused them.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import dask.config
from dask.utils import parse_timedelta
from distributed.deploy.adaptive import Adaptive

from hippo_dask._constants import DEMAND_KEY
from hippo_dask.cluster._jobs import sbatch_problem, worker_job
from hippo_dask.cluster._local import LOOPBACK, ClusterClient
from hippo_dask.errors import ClusterStartError, HippoError

if TYPE_CHECKING:
    from distributed.security import Security

__all__ = [
    "StageDemandAdaptive",
    "demand_total",
    "lifetime_for",
    "slurm",
    "slurm_seconds",
]

logger = logging.getLogger(__name__)

#: A driver's published demand counts for this long; a driver that died stops counting.
DEMAND_TTL = 60.0
#: Seconds :func:`slurm` waits for ``sbatch`` to accept or refuse the first jobs.
SUBMIT_TIMEOUT = 300.0


def job_of_worker(ws: Any) -> str:
    """Adaptive's ``worker_key``: the workers of one job retire together."""
    found = worker_job(ws.name)
    return str(ws.address) if found is None else found[0]


def slurm_seconds(text: str) -> float:
    """Seconds in a SLURM time limit: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    value = str(text).strip()
    days = 0
    if "-" in value:
        day, value = value.split("-", 1)
        days = int(day)
        parts = [int(p) for p in value.split(":")]
        parts += [0] * (3 - len(parts))  # D-H, D-H:M
        hours, minutes, seconds = parts
    else:
        parts = [int(p) for p in value.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        elif len(parts) == 3:
            hours, minutes, seconds = parts
        else:
            raise ValueError(f"not a SLURM time limit: {text!r}")
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def lifetime_for(walltime: float) -> tuple[float, float]:
    """Worker ``--lifetime`` and ``--lifetime-stagger`` (seconds) for a job of ``walltime`` s.

    Workers retire a margin before SLURM kills the job (a tenth of the wall time, between 30 s
    and 5 minutes), so they leave cleanly and the driver stops giving them stages that would
    not end in time. The stagger (a quarter of the margin) keeps jobs started together from
    all retiring in the same second; the latest a worker retires is still 3/4 of the margin
    before the kill.
    """
    margin = min(300.0, max(30.0, walltime / 10))
    if walltime <= 2 * margin:
        margin = walltime / 4
    return walltime - margin, margin / 4


def demand_total(
    entries: Mapping[str, Any] | None, now: float, ttl: float = DEMAND_TTL
) -> int | None:
    """Workers the drivers want, summed over fresh entries ``{driver: [workers, unix time]}``.

    ``None`` when no driver published within ``ttl`` seconds: then Dask's own target applies.
    """
    if not entries:
        return None
    fresh = [
        int(v[0])
        for v in entries.values()
        if isinstance(v, (list, tuple)) and len(v) == 2 and now - float(v[1]) <= ttl
    ]
    return sum(fresh) if fresh else None


class StageDemandAdaptive(Adaptive):
    """Dask's ``Adaptive`` with the hippo_dask drivers' demand as its target.

    The target is the number of workers the studies on this scheduler could keep busy now
    (:data:`~hippo_dask.execution._driver.DEMAND_KEY` in the scheduler's metadata); without a
    study it is Dask's usual target. ``minimum`` / ``maximum`` bound it as usual.
    """

    async def target(self) -> int:
        try:
            entries = await self.scheduler.get_metadata(keys=[DEMAND_KEY], default=None)
        except Exception as exc:  # noqa: BLE001 - scheduler busy or gone: Dask's view
            logger.debug("could not read the stage demand: %s", exc)
            entries = None
        total = demand_total(entries, time.time())
        if total is None:
            return int(await super().target())  # type: ignore[no-untyped-call]
        return total


def _gpu_resource(args: list[str]) -> list[str]:
    """``worker_extra_args`` with ``GPU=1`` added to (or as) ``--resources``."""
    out = list(args)
    if "--resources" in out:
        at = out.index("--resources") + 1
        if not re.search(r"(^|[\s,])GPU=", out[at]):
            out[at] = ",".join(["GPU=1", *out[at].replace(",", " ").split()])
        return out
    return out + ["--resources", "GPU=1"]


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise HippoError(f"cluster.slurm: `{name}` must be an int >= {low}, got {value!r}")
    return value


#: (what sbatch's message mentions, what to change), first match wins.
_FIXES = (
    (
        r"\bgres\b|generic resource",
        (
            "this SLURM has no such generic resource on that partition: see what each partition "
            "offers with `sinfo -o '%P %G'`, then set `gpus_per_job` (0 for CPU-only partitions) "
            "or the --gres in `job_extra_directives` to match"
        ),
    ),
    (
        r"account|association",
        "pass `account=` one of yours (`sacctmgr show associations user=$USER`)",
    ),
    (r"partition", "pass `partition=` one of the partitions `sinfo -s` lists that you may use"),
    (r"time limit", "shorten `walltime` to the partition's limit (`sinfo -o '%P %l'`)"),
    (
        r"node configuration|memory|cpu",
        "ask for `memory` and `cores` per job that a node has (`sinfo -o '%P %c %m'`)",
    ),
)


def _fix_for(problem: str) -> str:
    for pattern, fix in _FIXES:
        if re.search(pattern, problem, re.IGNORECASE):
            return fix
    return "change the option it names (an argument of cluster.slurm or job_extra_directives)"


def _refused(cluster: Any, jobs: list[Any]) -> ClusterStartError:
    problem = sbatch_problem(jobs[0].submit_error)
    header = [line for line in cluster.job_script().splitlines() if line.startswith("#SBATCH")]
    return ClusterStartError(
        f"cluster.slurm: SLURM refused {len(jobs)} job(s): sbatch said {problem!r}. Fix: "
        f"{_fix_for(problem)}. The job asked for: {' '.join(header) or '(no #SBATCH lines)'}"
    )


def _await_submission(cluster: Any, timeout: float = SUBMIT_TIMEOUT) -> None:
    """Return once ``sbatch`` accepted every job the cluster wants now; raise if it refused one."""
    deadline = time.monotonic() + timeout
    while (jobs := cluster.submissions()) is None:
        if time.monotonic() > deadline:
            raise ClusterStartError(
                f"cluster.slurm: sbatch did not answer within {timeout:.0f} s; check that "
                "SLURM's controller answers (`sinfo`, `squeue -u $USER`)"
            )
        time.sleep(0.05)  # polling the cluster's event loop thread, bounded by the deadline
    refused = [job for job in jobs if job.submit_error is not None]
    if refused:
        raise _refused(cluster, refused)


_WORKER_TLS = {
    "tls_ca_file": "ca.pem",
    "tls_worker_key": "worker-key.pem",
    "tls_worker_cert": "worker-cert.pem",
}


def _security(
    security: bool | Security | None, directory: str | None
) -> tuple[Security | None, Callable[[], object] | None]:
    """The cluster's ``Security``, with the workers' in-memory PEMs written to files the jobs
    can read (a new 0700 folder in ``directory``, files 0600), and what removes them.

    ``True`` creates a temporary self-signed certificate (``Security.temporary()``). File
    paths are kept as given: they must be readable on the compute nodes.
    """
    if security is None or security is False:
        return None, None
    from distributed.security import Security

    if security is True:
        security = Security.temporary()  # type: ignore[no-untyped-call]
    if not isinstance(security, Security):
        raise HippoError(
            f"cluster.slurm: `security` must be True, None or a "
            f"distributed.security.Security, got {security!r}"
        )
    in_memory = {
        field: value
        for field in _WORKER_TLS
        if isinstance(value := getattr(security, field, None), str) and "\n" in value
    }
    if not in_memory:
        return security, None
    root = os.path.abspath(os.path.expanduser(directory or "~/.hippo-dask"))
    os.makedirs(root, mode=0o700, exist_ok=True)
    # 0700, removed by cleanup() when the cluster closes (or when collected, or at exit)
    folder = tempfile.TemporaryDirectory(prefix="tls-", dir=root)
    security = copy.copy(security)  # the caller's keeps its in-memory PEMs
    for field, value in in_memory.items():
        path = os.path.join(folder.name, _WORKER_TLS[field])
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(value)
        setattr(security, field, path)
    return security, folder.cleanup


def slurm(
    gpus_per_job: int = 1,
    jobs: int | None = None,
    *,
    partition: str | None = None,
    walltime: str | None = None,
    account: str | None = None,
    adaptive: tuple[int, int] | None = None,
    lifetime: str | float | bool | None = None,
    security: bool | Security | None = None,
    **jobqueue_kwargs: Any,
) -> ClusterClient:
    """Start Dask workers as SLURM jobs (dask-jobqueue) and return a client for a study.

    Each job asks for ``gpus_per_job`` GPUs (``--gres=gpu:K``) and runs one Dask worker per GPU,
    each advertising ``GPU=1`` and seeing only its own device. Workers are named
    ``<SLURM job id>-<i>``. A job that ends early (``scancel``, wall time, pre-emption) costs
    only its unsaved steps: the study plans its stages again from their checkpoints, and a new
    job is submitted in its place.

    Parameters
    ----------
    gpus_per_job
        GPUs per job, one worker each. ``0`` runs CPU workers (``processes`` per job, default
        1), each a stage slot: for CPU-only partitions and tests.
    jobs
        Jobs to submit now (default 1; with ``adaptive``, its minimum). Workers = jobs x
        ``gpus_per_job``.
    partition, walltime, account
        ``#SBATCH -p / -t / -A``; default: ``jobqueue.slurm.queue / walltime / account`` in
        dask's config (``~/.config/dask/jobqueue.yaml``), as dask-jobqueue reads them.
    adaptive
        ``(min, max)`` jobs: scale between them with the number of workers the studies on this
        cluster could keep busy (running chains plus chains ready to start).
    lifetime
        Workers retire after this long (``"55m"``, seconds), before SLURM kills the job, so no
        stage is started that would not end in time. Default: a margin before ``walltime``
        (:func:`lifetime_for`). ``False``: no lifetime.
    security
        ``True``: scheduler, workers and this client talk over mutual TLS with a certificate
        made for this cluster (``distributed.security.Security.temporary()``); only holders
        of it can connect, a client without it is refused. Or your own
        ``distributed.security.Security`` (certificate files must be readable on the compute
        nodes). The scheduler listens on the network so the jobs can reach it: without TLS,
        anyone who can reach its port can run code on the workers. The workers' key and
        certificate are written to a new folder in ``shared_temp_directory`` (default
        ``~/.hippo-dask``; it must be on a filesystem the compute nodes see), readable only by
        you, and removed when the cluster closes.
    **jobqueue_kwargs
        Passed to ``dask_jobqueue.SLURMCluster``: ``cores`` (per job; default one per worker),
        ``memory`` (per job; default 4 GiB per worker), ``interface``, ``job_script_prologue``
        (``["module load cuda", "conda activate hippo"]``), ``job_extra_directives``,
        ``worker_extra_args``, ``log_directory``, ``local_directory``, ``python``,
        ``scheduler_options``, ``config_name`` ... Each unset one comes from
        ``jobqueue.<config_name>`` in dask's config. The scheduler's dashboard listens on
        ``127.0.0.1:8787`` (reach it through ``ssh -L 8787:127.0.0.1:8787 login-node``) unless
        ``scheduler_options={"dashboard_address": ...}`` says otherwise.

    Returns
    -------
    ClusterClient
        A ``distributed.Client``; closing it cancels the jobs. ``client.cluster`` is the
        :class:`HippoSLURMCluster` (``client.cluster.job_script()`` shows a job's script).

    Raises
    ------
    ClusterStartError
        ``sbatch`` refused the first jobs (an unknown partition or gres, a time limit): the
        message quotes SLURM and names the fix; the cluster is closed, nothing keeps running.
    HippoError
        A bad count, ``processes`` other than ``gpus_per_job``, or dask-jobqueue missing.

    Examples
    --------
    >>> client = hd.cluster.slurm(gpus_per_job=4, jobs=2, partition="gpu", walltime="04:00:00",
    ...                           adaptive=(1, 8), memory="64GB", cores=16,
    ...                           job_script_prologue=["module load cuda/12.4"])  # doctest: +SKIP
    >>> study = hd.Study("digits", DigitsTrainer, storage="/scratch/me/runs", client=client)  # doctest: +SKIP
    >>> client = hd.cluster.slurm(gpus_per_job=1, jobs=4, security=True)  # TLS  # doctest: +SKIP
    """
    try:
        from hippo_dask.cluster._jobqueue import HippoSLURMCluster
    except ImportError as exc:
        raise HippoError(
            f"cluster.slurm needs dask-jobqueue ({exc}): pip install 'hippo-dask[slurm]' "
            "(or conda install -c conda-forge dask-jobqueue)"
        ) from None
    gpus_per_job = _check_count("gpus_per_job", gpus_per_job, 0)
    if jobs is not None:
        jobs = _check_count("jobs", jobs, 0)
    if adaptive is not None:
        if not (isinstance(adaptive, (tuple, list)) and len(adaptive) == 2):
            raise HippoError(
                f"cluster.slurm: `adaptive` must be (min_jobs, max_jobs), got {adaptive!r}"
            )
        low = _check_count("adaptive[0]", adaptive[0], 0)
        high = _check_count("adaptive[1]", adaptive[1], max(1, low))
    kwargs = dict(jobqueue_kwargs)
    kwargs.setdefault("silence_logs", logging.WARNING)  # dask-jobqueue's "error" hides warnings
    section = kwargs.get("config_name") or "slurm"

    def conf(key: str) -> Any:
        return dask.config.get(f"jobqueue.{section}.{key}", None)

    processes = kwargs.pop("processes", None)
    if gpus_per_job:
        if processes is not None and processes != gpus_per_job:
            raise HippoError(
                f"cluster.slurm: one worker per GPU, so `processes` must equal `gpus_per_job` "
                f"({gpus_per_job}), got processes={processes!r}; leave it out"
            )
        processes = gpus_per_job
    else:
        processes = _check_count("processes", processes or conf("processes") or 1, 1)
    cores = kwargs.pop("cores", None) or conf("cores") or processes
    memory = kwargs.pop("memory", None) or conf("memory") or f"{4 * processes}GiB"
    walltime = walltime or conf("walltime")
    extra = _gpu_resource(
        list(kwargs.pop("worker_extra_args", None) or conf("worker-extra-args") or [])
    )
    if lifetime is not False and "--lifetime" not in extra:
        stagger = 0.0
        if lifetime is None or lifetime is True:
            seconds = None
            if walltime:
                seconds, stagger = lifetime_for(slurm_seconds(walltime))
        else:
            seconds = parse_timedelta(lifetime)
        if seconds:
            extra += ["--lifetime", f"{int(seconds)}s", "--lifetime-stagger", f"{int(stagger)}s"]
    directives = list(
        kwargs.pop("job_extra_directives", None) or conf("job-extra-directives") or []
    )
    if gpus_per_job and not any(re.search(r"--gres=gpu|--gpus", d) for d in directives):
        directives.append(f"--gres=gpu:{gpus_per_job}")
    options = dict(kwargs.pop("scheduler_options", None) or conf("scheduler-options") or {})
    options.setdefault("dashboard_address", f"{LOOPBACK}:8787")
    tls, forget = _security(
        security, kwargs.get("shared_temp_directory") or conf("shared-temp-directory")
    )
    try:
        cluster = HippoSLURMCluster(
            gpus_per_job=gpus_per_job,
            processes=processes,
            cores=cores,
            memory=memory,
            queue=partition,
            account=account,
            walltime=walltime,
            worker_extra_args=extra,
            job_extra_directives=directives,
            scheduler_options=options,
            security=tls,
            on_close=forget,
            **kwargs,
        )
    except BaseException:
        if forget is not None:
            forget()
        raise
    try:
        start = jobs if jobs is not None else (low if adaptive is not None else 1)
        if start:
            cluster.scale(jobs=start)  # type: ignore[no-untyped-call]
            _await_submission(cluster)
        if adaptive is not None:
            cluster.adapt(
                minimum_jobs=low,
                maximum_jobs=high,
                Adaptive=StageDemandAdaptive,
                worker_key=job_of_worker,
            )
        client = ClusterClient(cluster)  # type: ignore[no-untyped-call]
    except BaseException:
        cluster.close()
        raise
    logger.info(
        "SLURM cluster: %s jobs of %d worker(s)%s",
        start,
        processes,
        f", adaptive {adaptive[0]}..{adaptive[1]} jobs" if adaptive else "",
    )
    return client
