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
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed.deploy.adaptive import Adaptive

from hippo_dask.cluster._local import ClusterClient
from hippo_dask.errors import HippoError
from hippo_dask.execution._driver import DEMAND_KEY

__all__ = [
    "StageDemandAdaptive",
    "demand_total",
    "lifetime_for",
    "slurm",
    "slurm_seconds",
    "worker_job",
]

logger = logging.getLogger(__name__)

#: A driver's published demand counts for this long; a driver that died stops counting.
DEMAND_TTL = 60.0
_NAME = re.compile(r"^(\d+)-(\d+)$")


def worker_job(name: object) -> tuple[str, int] | None:
    """``("1234", 1)`` for a worker named ``"1234-1"`` (SLURM job 1234, its second worker)."""
    match = _NAME.match(str(name))
    return None if match is None else (match.group(1), int(match.group(2)))


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


def demand_total(entries: Mapping[str, Any] | None, now: float, ttl: float = DEMAND_TTL) -> int | None:
    """Workers the drivers want, summed over fresh entries ``{driver: [workers, unix time]}``.

    ``None`` when no driver published within ``ttl`` seconds: then Dask's own target applies.
    """
    if not entries:
        return None
    fresh = [int(v[0]) for v in entries.values()
             if isinstance(v, (list, tuple)) and len(v) == 2 and now - float(v[1]) <= ttl]
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


def slurm(
    gpus_per_job: int = 1,
    jobs: int | None = None,
    *,
    partition: str | None = None,
    walltime: str | None = None,
    account: str | None = None,
    adaptive: tuple[int, int] | None = None,
    lifetime: str | float | bool | None = None,
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
    **jobqueue_kwargs
        Passed to ``dask_jobqueue.SLURMCluster``: ``cores`` (per job; default one per worker),
        ``memory`` (per job; default 4 GiB per worker), ``interface``, ``job_script_prologue``
        (``["module load cuda", "conda activate hippo"]``), ``job_extra_directives``,
        ``worker_extra_args``, ``log_directory``, ``local_directory``, ``python``,
        ``scheduler_options``, ``config_name`` ... Each unset one comes from
        ``jobqueue.<config_name>`` in dask's config.

    Returns
    -------
    ClusterClient
        A ``distributed.Client``; closing it cancels the jobs. ``client.cluster`` is the
        :class:`HippoSLURMCluster` (``client.cluster.job_script()`` shows a job's script).

    Raises
    ------
    HippoError
        A bad count, ``processes`` other than ``gpus_per_job``, or dask-jobqueue missing.

    Examples
    --------
    >>> client = hd.cluster.slurm(gpus_per_job=4, jobs=2, partition="gpu", walltime="04:00:00",
    ...                           adaptive=(1, 8), memory="64GB", cores=16,
    ...                           job_script_prologue=["module load cuda/12.4"])  # doctest: +SKIP
    >>> study = hd.Study("digits", DigitsTrainer, storage="/scratch/me/runs", client=client)  # doctest: +SKIP
    """
    try:
        from hippo_dask.cluster._jobqueue import HippoSLURMCluster
    except ImportError as exc:
        raise HippoError(f"cluster.slurm needs dask-jobqueue ({exc}): pip install 'hippo-dask[slurm]' "
                         "(or conda install -c conda-forge dask-jobqueue)") from None
    gpus_per_job = _check_count("gpus_per_job", gpus_per_job, 0)
    if jobs is not None:
        jobs = _check_count("jobs", jobs, 0)
    if adaptive is not None:
        if not (isinstance(adaptive, (tuple, list)) and len(adaptive) == 2):
            raise HippoError(f"cluster.slurm: `adaptive` must be (min_jobs, max_jobs), got {adaptive!r}")
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
    extra = _gpu_resource(list(kwargs.pop("worker_extra_args", None) or conf("worker-extra-args") or []))
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
    directives = list(kwargs.pop("job_extra_directives", None) or conf("job-extra-directives") or [])
    if gpus_per_job and not any(re.search(r"--gres=gpu|--gpus", d) for d in directives):
        directives.append(f"--gres=gpu:{gpus_per_job}")
    cluster = HippoSLURMCluster(
        gpus_per_job=gpus_per_job, processes=processes, cores=cores, memory=memory,
        queue=partition, account=account, walltime=walltime, worker_extra_args=extra,
        job_extra_directives=directives, **kwargs,
    )
    try:
        start = jobs if jobs is not None else (low if adaptive is not None else 1)
        if start:
            cluster.scale(jobs=start)  # type: ignore[no-untyped-call]
        if adaptive is not None:
            cluster.adapt(minimum_jobs=low, maximum_jobs=high, Adaptive=StageDemandAdaptive,
                          worker_key=job_of_worker)
        client = ClusterClient(cluster)  # type: ignore[no-untyped-call]
    except BaseException:
        cluster.close()
        raise
    logger.info("SLURM cluster: %s jobs of %d worker(s)%s", start, processes,
                f", adaptive {adaptive[0]}..{adaptive[1]} jobs" if adaptive else "")
    return client

