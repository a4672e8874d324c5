"""The SLURM job script hd.cluster.slurm generates, and its pure helpers; no SLURM needed.

``jobs=0`` starts the cluster's scheduler here and submits nothing. The GPU path cannot run on
this machine (SLURM's ``--gres=gpu`` needs devices), so its script is asserted as text and its
worker launch lines are run by bash with a stand-in ``python`` that records what each worker
process would have been started with.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask.config
import pytest

import hippo_dask as hd
from hippo_dask.cluster._jobqueue import HippoSLURMCluster
from hippo_dask.cluster._jobs import sbatch_problem, worker_job
from hippo_dask.cluster._slurm import (
    _fix_for,
    _gpu_resource,
    demand_total,
    job_of_worker,
    lifetime_for,
    slurm_seconds,
)
from tests.security.test_listen import listening, open_ones

LOCAL = {
    "interface": "lo",
    "scheduler_options": {"interface": "lo", "dashboard_address": "127.0.0.1:0"},
}


@pytest.fixture
def make() -> Iterator[Any]:
    """``make(**kwargs)``: a cluster that submits no job; every one made is closed afterwards."""
    clients: list[Any] = []

    def start(**kwargs: Any) -> Any:
        options = {"jobs": 0, **LOCAL, **kwargs}
        client = hd.cluster.slurm(**options)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()


def workers_of(script: str) -> list[str]:
    return [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]


def test_gpu_jobs_ask_for_their_gpus_and_start_one_worker_per_gpu(make: Any) -> None:
    client = make(
        gpus_per_job=2,
        partition="gpu",
        account="lab",
        walltime="01:00:00",
        memory="16GB",
        cores=8,
        job_script_prologue=["module load cuda/12.4", "conda activate hippo"],
    )
    script = client.cluster.job_script()
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for directive in (
        "-p gpu",
        "-A lab",
        "-t 01:00:00",
        "--gres=gpu:2",
        "--cpus-per-task=8",
        "-n 1",
    ):
        assert f"#SBATCH {directive}" in header, (directive, header)
    lines = workers_of(script)
    assert len(lines) == 2
    for i, line in enumerate(lines):
        assert line.startswith(f'CUDA_VISIBLE_DEVICES="${{hippo_gpu[{i}]}}" ')
        assert f'--name "${{SLURM_JOB_ID}}-{i}"' in line
        assert "--resources GPU=1" in line and "--nworkers" not in line
        assert "--nthreads 4" in line  # 8 cores for 2 workers
        assert "--lifetime 3300s --lifetime-stagger 75s" in line
        assert line.endswith(" &")
    assert script.rstrip().endswith("wait")
    # The prologue runs before any worker starts.
    assert (
        script.index("module load cuda/12.4")
        < script.index("conda activate hippo")
        < script.index(lines[0])
    )
    assert client.cluster.new_spec["group"] == ["-0", "-1"]


def run_launch_lines(
    script: str, tmp_path: Path, env: dict[str, str]
) -> tuple[int, str, list[str]]:
    """Run the script's body (not under SLURM) with ``python`` replaced by a recorder."""
    record = tmp_path / "started"
    fake = tmp_path / "python"
    fake.write_text(
        f'#!/usr/bin/env bash\necho "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES $*" >> {record}\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    body = re.sub(r"^\S*python\S* -m", f"{fake} -m", script, flags=re.M)
    body = re.sub(r'(" )\S*python\S* -m', rf"\g<1>{fake} -m", body)
    body = "\n".join(line for line in body.splitlines() if not line.startswith(("module", "conda")))
    path = tmp_path / "job.sh"
    path.write_text(body)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_"))}
    done = subprocess.run(
        ["bash", str(path)], env={**clean, **env}, capture_output=True, text=True, timeout=30
    )
    started = sorted(record.read_text().splitlines()) if record.exists() else []
    return done.returncode, done.stderr, started


@pytest.mark.parametrize(
    "env",
    [
        {"CUDA_VISIBLE_DEVICES": "3,5"},  # what slurmd sets for the job
        {"SLURM_STEP_GPUS": "3,5"},
        {"SLURM_JOB_GPUS": "3,5"},
    ],
)
def test_each_worker_process_sees_its_own_gpu_of_the_job(
    make: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    script = make(gpus_per_job=2, memory="2GB").cluster.job_script()
    code, err, started = run_launch_lines(script, tmp_path, {"SLURM_JOB_ID": "77", **env})
    assert code == 0, err
    assert len(started) == 2
    assert started[0].startswith("CUDA_VISIBLE_DEVICES=3 ") and "--name 77-0" in started[0]
    assert started[1].startswith("CUDA_VISIBLE_DEVICES=5 ") and "--name 77-1" in started[1]


def test_a_job_that_sees_fewer_gpus_than_it_asked_for_fails_loudly(
    make: Any, tmp_path: Path
) -> None:
    script = make(gpus_per_job=2, memory="2GB").cluster.job_script()
    code, err, started = run_launch_lines(
        script, tmp_path, {"SLURM_JOB_ID": "8", "CUDA_VISIBLE_DEVICES": "4"}
    )
    assert code == 1 and "sees GPUs '4', it needs 2" in err and started == []


def test_cpu_jobs_start_slots_without_gres(make: Any, tmp_path: Path) -> None:
    client = make(gpus_per_job=0, processes=2, memory="2GB", walltime="00:10:00")
    script = client.cluster.job_script()
    assert "--gres" not in script and "CUDA_VISIBLE_DEVICES=" not in script
    lines = workers_of(script)
    assert len(lines) == 2 and all("--resources GPU=1" in line for line in lines)
    assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH -t 00:10:00" in script
    code, err, started = run_launch_lines(script, tmp_path, {"SLURM_JOB_ID": "9"})
    assert code == 0, err
    assert ["--name 9-0" in started[0], "--name 9-1" in started[1]] == [True, True]
    # One worker per job by default.
    assert len(workers_of(make(gpus_per_job=0, memory="1GB").cluster.job_script())) == 1


def test_settings_come_from_jobqueue_yaml_as_dask_jobqueue_users_expect(make: Any) -> None:
    with dask.config.set(
        {
            "jobqueue.slurm.queue": "a100",
            "jobqueue.slurm.account": "proj7",
            "jobqueue.slurm.walltime": "2-00:00:00",
            "jobqueue.slurm.cores": 12,
            "jobqueue.slurm.memory": "48GB",
            "jobqueue.slurm.job-script-prologue": ["module load cuda"],
            "jobqueue.slurm.job-extra-directives": ["--constraint=a100"],
        }
    ):
        script = make(gpus_per_job=4).cluster.job_script()
    for expected in (
        "#SBATCH -p a100",
        "#SBATCH -A proj7",
        "#SBATCH -t 2-00:00:00",
        "#SBATCH --cpus-per-task=12",
        "#SBATCH --constraint=a100",
        "#SBATCH --gres=gpu:4",
        "module load cuda",
    ):
        assert expected in script, expected
    assert "--lifetime 172500s --lifetime-stagger 75s" in script  # 48 h less 5 minutes
    assert len(workers_of(script)) == 4 and "--nthreads 3" in script


def test_keywords_pass_through_and_win_over_the_config(make: Any) -> None:
    with dask.config.set({"jobqueue.slurm.queue": "a100"}):
        script = make(
            gpus_per_job=1,
            partition="debug",
            memory="4GB",
            lifetime="50m",
            job_extra_directives=["--gpus=1"],
            worker_extra_args=["--resources", "MEM=4e9"],
        ).cluster.job_script()
    assert "#SBATCH -p debug" in script and "a100" not in script
    assert "--gres" not in script and "#SBATCH --gpus=1" in script  # the user's GPU request is kept
    assert "--resources GPU=1,MEM=4e9" in script
    assert "--lifetime 3000s" in script
    assert (
        "--lifetime" not in make(gpus_per_job=1, memory="4GB", lifetime=False).cluster.job_script()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus_per_job": -1}, "`gpus_per_job` must be an int >= 0, got -1"),
        ({"gpus_per_job": 2, "processes": 3}, "`processes` must equal `gpus_per_job` (2)"),
        ({"jobs": 1.5}, "`jobs` must be an int >= 0"),
        ({"adaptive": 3}, "`adaptive` must be (min_jobs, max_jobs)"),
        ({"adaptive": (2, 1)}, "`adaptive[1]` must be an int >= 2, got 1"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(hd.HippoError, match=re.escape(message)):
        hd.cluster.slurm(**{**LOCAL, "memory": "1GB", **kwargs})


def test_slurm_time_limits() -> None:
    assert slurm_seconds("30") == 1800
    assert slurm_seconds("30:15") == 1815
    assert slurm_seconds("01:00:00") == 3600
    assert slurm_seconds("1-00") == 86400
    assert slurm_seconds("1-02:30") == 86400 + 2 * 3600 + 1800
    assert slurm_seconds("2-00:00:01") == 2 * 86400 + 1
    with pytest.raises(ValueError):
        slurm_seconds("1:2:3:4")


def test_workers_retire_a_margin_before_the_wall_time() -> None:
    assert lifetime_for(3600) == (3300, 75)  # a tenth, at most 5 minutes
    assert lifetime_for(600) == (540, 15)  # a tenth
    assert lifetime_for(120) == (90, 7.5)  # at least 30 s
    life, stagger = lifetime_for(40)  # tiny jobs keep three quarters
    assert life == 30 and life + stagger < 40
    for wall in (40, 120, 600, 3600, 86400):
        life, stagger = lifetime_for(wall)
        assert 0 < life and life + stagger < wall


def test_worker_names_carry_the_slurm_job_id() -> None:
    assert worker_job("1234-1") == ("1234", 1)
    assert worker_job("HippoSLURMCluster-0") is None and worker_job(None) is None
    assert job_of_worker(SimpleNamespace(name="55-3", address="tcp://x:1")) == "55"
    assert job_of_worker(SimpleNamespace(name="gpu-0", address="tcp://x:1")) == "tcp://x:1"


def test_gpu_resource_is_added_once() -> None:
    assert _gpu_resource([]) == ["--resources", "GPU=1"]
    assert _gpu_resource(["--resources", "GPU=1"]) == ["--resources", "GPU=1"]
    assert _gpu_resource(["--resources", "MEM=1 IO=2"]) == ["--resources", "GPU=1,MEM=1,IO=2"]


def test_demand_counts_fresh_drivers_only() -> None:
    now = time.time()
    assert demand_total(None, now) is None and demand_total({}, now) is None
    assert demand_total({"a": [3, now - 1], "b": [2, now - 5]}, now) == 5
    assert demand_total({"a": [3, now - 1], "dead": [9, now - 3600]}, now) == 3
    assert demand_total({"dead": [9, now - 3600]}, now) is None
    assert demand_total({"a": [0, now]}, now) == 0


def test_the_cluster_maps_job_id_names_to_dask_jobqueue_names(make: Any) -> None:
    cluster: HippoSLURMCluster = make(gpus_per_job=2, memory="2GB").cluster
    fake = SimpleNamespace(job_id="4242")
    cluster.workers["HippoSLURMCluster-7"] = fake  # as if submitted and given id 4242
    try:
        assert cluster.job_ids() == {"HippoSLURMCluster-7": "4242"}
        assert cluster._canonical("4242-1") == "HippoSLURMCluster-7-1"
        assert cluster._canonical("999-0") == "999-0"  # not ours
    finally:
        del cluster.workers["HippoSLURMCluster-7"]


def test_the_scheduler_dashboard_listens_only_on_this_machine(make: Any) -> None:
    """The scheduler listens where the jobs reach it (``interface``); its dashboard does not
    (dask-jobqueue's default is ``:8787``, every interface)."""
    client = make(gpus_per_job=0, memory="1GB", scheduler_options={"interface": "lo"})
    port = int(client.dashboard_link.split(":")[2].split("/")[0])
    mine = [s for s in listening() if s[1] == port]
    assert mine and open_ones(mine) == [], mine


@pytest.mark.parametrize(
    ("stderr", "fix"),
    [
        ("sbatch: error: Invalid generic resource (gres) specification", "sinfo -o '%P %G'"),
        (
            (
                "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission "
                "failed: Invalid partition name specified"
            ),
            "pass `partition=`",
        ),
        (
            (
                "sbatch: error: Batch job submission failed: Invalid account or account/partition "
                "combination specified"
            ),
            "pass `account=`",
        ),
        (
            (
                "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or "
                "exceeds some limit)"
            ),
            "shorten `walltime`",
        ),
        (
            (
                "sbatch: error: Batch job submission failed: Requested node configuration is not "
                "available"
            ),
            "ask for `memory` and `cores`",
        ),
    ],
)
def test_an_sbatch_refusal_is_quoted_with_its_fix(stderr: str, fix: str) -> None:
    error = RuntimeError(
        "Command exited with non-zero exit code.\nExit code: 1\nCommand:\n"
        f"sbatch /tmp/tmpx.sh\nstdout:\n\nstderr:\n{stderr}\n\n"
    )
    problem = sbatch_problem(error)
    assert problem == stderr.replace("\n", " / ")
    assert fix in _fix_for(problem)
