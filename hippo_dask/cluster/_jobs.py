"""What both SLURM modules read off SLURM: a worker's job from its name, sbatch's refusal.

:mod:`hippo_dask.cluster._slurm` (the cluster's options and scaling) and
:mod:`hippo_dask.cluster._jobqueue` (the dask-jobqueue classes, imported by ``_slurm`` only when a
cluster starts) both need these; here, neither imports the other for them.
"""

from __future__ import annotations

import re

__all__ = ["sbatch_problem", "worker_job"]

_NAME = re.compile(r"^(\d+)-(\d+)$")


def worker_job(name: object) -> tuple[str, int] | None:
    """``("1234", 1)`` for a worker named ``"1234-1"`` (SLURM job 1234, its second worker)."""
    match = _NAME.match(str(name))
    return None if match is None else (match.group(1), int(match.group(2)))


def sbatch_problem(exc: BaseException) -> str:
    """What ``sbatch`` said when it refused a job (its stderr), from dask-jobqueue's error."""
    text = str(exc)
    if "stderr:" in text:
        text = text.split("stderr:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines) or f"{type(exc).__name__}: {exc}"
