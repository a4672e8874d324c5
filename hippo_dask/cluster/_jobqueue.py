"""dask-jobqueue's SLURM classes, adapted: one worker per GPU, job-id names, lost jobs replaced.

dask-jobqueue starts one ``dask worker --nworkers K`` per job, which cannot give its K processes
different environments, so :class:`HippoSLURMJob` writes K ``dask worker`` lines, each with its
own ``CUDA_VISIBLE_DEVICES`` (the i-th device SLURM gave the job), backgrounded and waited for.

Workers are named ``<SLURM job id>-<i>``, so the dashboard, the metrics store and ``squeue`` speak
of the same jobs. dask-jobqueue matches workers to jobs by name (``<spec name>-<i>``);
:class:`HippoSLURMCluster` translates. It also notices a job whose workers all left (``scancel``,
wall time, pre-emption, ``--lifetime``) and submits a replacement while the cluster still wants
that job, with or without adaptive scaling; the driver has already planned the job's stages again
from their checkpoints. A job ``sbatch`` refuses is marked failed (so the cluster still closes)
and keeps the refusal for :func:`~hippo_dask.cluster.slurm` to report.

Imported only by :func:`hippo_dask.cluster.slurm`: dask-jobqueue is the ``slurm`` extra.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from dask_jobqueue.slurm import SLURMCluster, SLURMJob
from distributed.core import Status

from hippo_dask.cluster._jobs import sbatch_problem, worker_job

__all__ = ["HippoSLURMCluster", "HippoSLURMJob"]

logger = logging.getLogger(__name__)


class HippoSLURMJob(SLURMJob):
    """A SLURM job running one Dask worker per GPU (or ``processes`` CPU workers).

    Parameters
    ----------
    gpus_per_job
        GPUs the job asks for; one worker process each, with ``CUDA_VISIBLE_DEVICES`` set to
        its own device. ``0``: CPU workers, ``processes`` of them, each a stage slot.
    **kwargs
        ``dask_jobqueue.SLURMJob``'s (``processes`` must equal ``gpus_per_job`` if both).
    """

    def __init__(self, *args: Any, gpus_per_job: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.gpus_per_job = gpus_per_job
        self._command_template = self._launch(self._command_template)
        #: Why ``sbatch`` refused this job (``None``: not refused, or not submitted yet).
        self.submit_error: Exception | None = None

    async def start(self) -> None:
        """Submit the job. A refusal marks it failed, so the cluster can still close (distributed
        asserts that every worker it created has started or failed), and is re-raised."""
        try:
            await super().start()  # type: ignore[no-untyped-call]
        except Exception as exc:
            self.submit_error = exc
            self.status = Status.failed
            logger.error("SLURM refused a job of this cluster: %s", sbatch_problem(exc))
            raise

    def _launch(self, command: str) -> str:
        """K backgrounded ``dask worker`` lines from jobqueue's single command, then ``wait``."""
        tokens = command.split(" ")
        if "--nworkers" in tokens:
            at = tokens.index("--nworkers")
            del tokens[at : at + 2]
        count = self.worker_processes
        lines = []
        if self.gpus_per_job:
            lines += [
                (
                    f"# hippo_dask: {count} Dask workers, one per GPU of this job,"
                    " each seeing only its own device"
                ),
                'hippo_visible="${CUDA_VISIBLE_DEVICES:-${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-}}}"',
                f'[ -n "$hippo_visible" ] || hippo_visible="{",".join(map(str, range(count)))}"',
                'IFS=, read -r -a hippo_gpu <<< "$hippo_visible"',
                f'if [ "${{#hippo_gpu[@]}}" -lt {count} ]; then',
                f"  echo \"hippo_dask: this job sees GPUs '$hippo_visible', it needs {count}\" >&2; exit 1",
                "fi",
            ]
        else:
            lines.append(
                f"# hippo_dask: {count} CPU Dask worker(s); GPU=1 counts one stage slot each"
            )
        for i in range(count):
            named = list(tokens)
            if "--name" in named:
                named[named.index("--name") + 1] = f'"${{SLURM_JOB_ID}}-{i}"'
            else:
                named += ["--name", f'"${{SLURM_JOB_ID}}-{i}"']
            env = f'CUDA_VISIBLE_DEVICES="${{hippo_gpu[{i}]}}" ' if self.gpus_per_job else ""
            lines.append(f"{env}{' '.join(named)} &")
        lines.append("wait")
        return "\n".join(lines)


class HippoSLURMCluster(SLURMCluster):
    """``dask_jobqueue.SLURMCluster`` with job-id worker names and replaced lost jobs."""

    job_cls = HippoSLURMJob

    def __init__(
        self, *args: Any, on_close: Callable[[], object] | None = None, **kwargs: Any
    ) -> None:
        self._on_close = on_close  # removes the TLS files written for the jobs
        super().__init__(*args, **kwargs)

    async def _close(self) -> None:
        try:
            await super()._close()  # type: ignore[no-untyped-call]
        finally:
            if self._on_close is not None:
                self._on_close()

    def submissions(self) -> list[HippoSLURMJob] | None:
        """The jobs the cluster wants now, once ``sbatch`` answered for each; ``None`` before."""
        jobs = [self.workers.get(spec) for spec in self.worker_spec]
        if any(job is None for job in jobs):
            return None
        return [job for job in jobs if isinstance(job, HippoSLURMJob)]

    def job_ids(self) -> dict[str, str]:
        """SLURM job id of each submitted job, by dask-jobqueue's name for it."""
        return {
            spec: str(job.job_id)
            for spec, job in self.workers.items()
            if getattr(job, "job_id", None)
        }

    def _spec_of(self, name: object) -> tuple[str, int] | None:
        found = worker_job(name)
        if found is None:
            return None
        for spec, job_id in self.job_ids().items():
            if job_id == found[0]:
                return spec, found[1]
        return None

    def _canonical(self, name: object) -> object:
        """dask-jobqueue's name for a worker (``<spec>`` or ``<spec>-<i>``)."""
        found = self._spec_of(name)
        if found is None:
            return name
        spec, index = found
        return f"{spec}-{index}" if "group" in self.new_spec else spec

    @property
    def observed(self) -> set[object]:
        return {self._canonical(d["name"]) for d in self.scheduler_info["workers"].values()}

    async def scale_down(self, workers: Any) -> None:
        await super().scale_down([self._canonical(w) for w in workers])  # type: ignore[no-untyped-call]

    def _update_worker_status(self, op: str, msg: Any) -> None:
        if op == "remove":
            name = self.scheduler_info["workers"].get(msg, {}).get("name")
            found = self._spec_of(name)
            if found is not None:
                delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
                asyncio.get_running_loop().call_later(delay, self._job_may_have_ended, found[0])
        super()._update_worker_status(op, msg)  # type: ignore[no-untyped-call]

    def _job_may_have_ended(self, spec: str) -> None:
        """All workers of a job left: it ended (scancel, wall time, pre-emption, lifetime).
        Forget it, and submit a replacement while the cluster still wants that job."""
        job = self.workers.get(spec)
        if job is None or self.status != Status.running:
            return
        if any(
            (self._spec_of(d["name"]) or ("",))[0] == spec
            for d in self.scheduler_info["workers"].values()
        ):
            return  # a worker of it is still (or again) there
        logger.warning(
            "SLURM job %s (%s) lost its workers; it ended (scancel, wall time, "
            "pre-emption or worker lifetime)%s",
            job.job_id,
            spec,
            "; submitting a new job" if spec in self.worker_spec else "",
        )
        self._futures.add(asyncio.ensure_future(job.close()))
        del self.workers[spec]
        if spec in self.worker_spec:
            self._correct_state()  # type: ignore[no-untyped-call]
