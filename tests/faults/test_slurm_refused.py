"""SLURM refuses the jobs: ``hd.cluster.slurm`` says why and how to fix it, and the process ends.

A user script runs in a subprocess under a timeout, as a batch job would: ask SLURM for jobs it
cannot give (a gres this SLURM does not define, a partition it does not have), then run a study.
Before, ``sbatch``'s refusal was only logged from the cluster's event loop: the call returned a
client with no workers and the study waited for them for ever, burning the allocation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_slurm import JOB, slurm, squeue  # noqa: F401  (slurm: autouse fixture)

pytestmark = pytest.mark.slurm

SCRIPT = """
import json, sys
import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer

options, storage = json.loads(sys.argv[1]), sys.argv[2]
try:
    client = hd.cluster.slurm(**options)
    study = hd.Study("refused", SimulatedTrainer, storage=storage, client=client)
    study.tune(hd.tuners.Grid(hd.GridSpace(lr=[seq.Constant(0.1)]), metric="score", steps=10),
               progress=False)
except hd.ClusterStartError as exc:
    print("REFUSED:", exc, flush=True)
    sys.exit(3)
print("the study ran", flush=True)
"""


@pytest.mark.parametrize(
    "asked, said, fix",
    [
        (
            {"gpus_per_job": 1},
            "Invalid generic resource (gres) specification",
            "see what each partition offers with `sinfo -o '%P %G'`",
        ),
        (
            {"gpus_per_job": 0, "partition": "nosuch"},
            "invalid partition specified: nosuch",
            "pass `partition=` one of the partitions `sinfo -s` lists",
        ),
    ],
    ids=["unknown-gres", "unknown-partition"],
)
def test_a_refused_job_raises_a_clear_error_and_the_process_exits(
    tmp_path: Path,
    slurm: Path,  # noqa: F811 - the fixture, imported above
    asked: dict[str, Any],
    said: str,
    fix: str,  # noqa: F811
) -> None:
    options = {**JOB, **asked, "jobs": 1, "log_directory": str(slurm)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, json.dumps(options), str(tmp_path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
            cwd=Path(__file__).parents[2],
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"the process did not end within 90 s of SLURM refusing the job; its output: "
            f"{exc.stdout!r} {str(exc.stderr)[-2000:]!r}"
        )
    assert done.returncode == 3, (done.stdout, done.stderr[-3000:])
    line = done.stdout.strip()
    assert line.startswith("REFUSED: cluster.slurm: SLURM refused 1 job(s): sbatch said"), line
    assert said in line and fix in line
    if asked.get("gpus_per_job"):
        assert "#SBATCH --gres=gpu:1" in line  # what the job asked for
    assert squeue() == []  # nothing left queued either
