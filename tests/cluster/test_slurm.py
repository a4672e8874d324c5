"""Studies on a real SLURM (the single-node one `make slurm-up` starts on localhost).

The jobs run in CPU mode (``gpus_per_job=0``: one worker per job, ``GPU=1`` as its stage slot):
SLURM's ``--gres=gpu`` needs real devices, and test_slurm_script.py covers the GPU job script.
These tests fail, rather than skip, when SLURM is not running: ``make test`` starts it (as root);
``make test-no-slurm`` runs everything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.cluster._jobs import worker_job
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import executed, standalone, until

pytestmark = pytest.mark.slurm

STEPS = 200
JOB = {
    "gpus_per_job": 0,
    "walltime": "00:10:00",
    "cores": 1,
    "memory": "1GB",
    "interface": "lo",
    "scheduler_options": {"interface": "lo", "dashboard_address": "127.0.0.1:0"},
}


def squeue() -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30
    )
    return out.stdout.split("\n")[:-1]


@pytest.fixture(autouse=True)
def slurm(tmp_path: Path) -> Iterator[Path]:
    """A running SLURM with no job left over; yields the folder for the jobs' logs."""

    def node_state() -> str:
        if shutil.which("sinfo") is None:
            return ""
        return subprocess.run(
            ["sinfo", "-h", "-o", "%T"], check=False, capture_output=True, text=True, timeout=30
        ).stdout

    state = node_state()
    deadline = time.monotonic() + 60
    while "completing" in state.split() and time.monotonic() < deadline:  # an earlier test's job
        time.sleep(0.2)
        state = node_state()
    if "idle" not in state.split() and "mixed" not in state.split():
        pytest.fail(
            f"no SLURM node is up (sinfo: {state.strip()!r}). `make test` installs and "
            "starts a local one (needs root: `make slurm-up`); `make test-no-slurm` runs "
            "the other tests.",
            pytrace=False,
        )
    while squeue() and time.monotonic() < deadline:  # an earlier test's jobs still ending
        time.sleep(0.2)
    logs = tmp_path / "slurm-logs"
    yield logs
    if logs.exists():  # shown with the failure report when a test fails
        for path in sorted(logs.iterdir()):
            text = path.read_text(errors="replace").strip()
            if text:
                print(f"--- {path.name}\n{text[-3000:]}")


def names(client: Any) -> dict[str, str]:
    return {a: str(w["name"]) for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def space(log: str, gate: str) -> list[hd.Trial]:
    grid = hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [60, 120]), seq.StepLR(0.1, 0.1, [60, 150]), seq.Constant(0.05)],
        batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [100])],
        log=[log],
        seconds_per_step=[0.002],
    )
    held = hd.Trial(
        lr=seq.Constant(0.2),
        batch_size=seq.MultiStep([32, 64], [140]),
        log=log,
        seconds_per_step=0.002,
        gate=[140, gate],
    )
    return [*grid, held]


def run_study(
    client: Any, storage: Path, trials: list[hd.Trial], during: Any = None
) -> tuple[hd.Study, list[float]]:
    study = hd.Study("slurm", SimulatedTrainer, storage=str(storage), client=client)

    async def go() -> list[dict[str, float]]:
        jobs = [asyncio.ensure_future(study.train(t, STEPS)) for t in trials]
        try:
            if during is not None:
                await during()
            return list(await asyncio.gather(*jobs))
        finally:
            await study._close_driver()

    return study, [m["score"] for m in asyncio.run(go())]


def test_a_grid_study_runs_in_slurm_jobs_and_a_cancelled_job_loses_nothing_saved(
    tmp_path: Path, slurm: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hippo_dask")
    expected = None
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}),
        hd.cluster.slurm(jobs=2, log_directory=str(slurm), **JOB) as client,
    ):
        cluster = client.cluster
        client.wait_for_workers(2, timeout=120)
        first_jobs = set(cluster.job_ids().values())
        assert len(first_jobs) == 2
        seen = names(client)
        assert {worker_job(n)[0] for n in seen.values()} == first_jobs  # type: ignore[index]

        # A calm run, the gate open from the start.
        calm_log, calm_gate = str(tmp_path / "calm.log"), tmp_path / "calm-gate"
        calm_gate.touch()
        calm_trials = space(calm_log, str(calm_gate))
        calm, calm_scores = run_study(client, tmp_path / "calm", calm_trials)
        expected = [standalone(t, STEPS) for t in calm_trials]
        assert calm_scores == expected

        # The same study again; one job is cancelled while a stage on it is held mid-way.
        log, gate = str(tmp_path / "train.log"), tmp_path / "gate"
        trials = space(log, str(gate))
        victim: dict[str, str] = {}

        async def cancel_the_held_job() -> None:
            await until(lambda: any(e.get("waiting") == 140 for e in read_log(log)), "the gate")
            pid = next(e["pid"] for e in read_log(log) if e.get("waiting") == 140)
            seen.update(names(client))
            address = next(a for a, p in client.run(os.getpid).items() if p == pid)
            job = worker_job(seen[address])
            assert job is not None, seen[address]
            victim.update(job=job[0], address=address)
            subprocess.run(["scancel", job[0]], check=True, timeout=30)
            await until(
                lambda: address not in names(client), "the scheduler to see the job's worker leave"
            )
            gate.touch()

        study, scores = run_study(
            client, tmp_path / "cancelled", trials, during=cancel_the_held_job
        )
        assert scores == calm_scores
        # Work lost: at most what the cancelled stage trained since its last checkpoint.
        unique = study.plan.stats().unique_steps
        assert unique <= executed(log) <= unique + 140
        assert any(
            re.search(r"left with \d+ stage\(s\); planning them again", r.getMessage())
            for r in caplog.records
        )

        # A new job replaces the cancelled one.
        def replaced() -> bool:
            ids = set(cluster.job_ids().values())
            return len(ids) == 2 and victim["job"] not in ids

        asyncio.run(until(replaced, "a job to replace the cancelled one", timeout=60))
        client.wait_for_workers(2, timeout=120)
        seen.update(names(client))
        all_jobs = first_jobs | set(cluster.job_ids().values())
        assert any(line.split()[0] in all_jobs - first_jobs for line in squeue())

        # Every stage ran in one of this cluster's SLURM jobs (job ids in the worker names).
        for frame in (calm.metrics_store.read_stages(), study.metrics_store.read_stages()):
            jobs = {worker_job(seen[address]) for address in frame["worker"]}
            assert None not in jobs
            assert {j[0] for j in jobs if j is not None} <= all_jobs
    assert expected is not None
    deadline = time.monotonic() + 60
    while squeue() and time.monotonic() < deadline:  # closing the client cancelled the jobs
        time.sleep(0.2)
    assert squeue() == []


def test_adaptive_scaling_asks_for_jobs_when_stages_are_ready_and_gives_them_back(
    tmp_path: Path, slurm: Path
) -> None:
    log = str(tmp_path / "train.log")
    trials = list(
        hd.GridSpace(
            lr=[seq.StepLR(0.1, 0.1, [m]) for m in (40, 80)] + [seq.Constant(0.05)],
            log=[log],
            seconds_per_step=[0.005],
        )
    )
    with hd.cluster.slurm(adaptive=(0, 2), log_directory=str(slurm), **JOB) as client:
        cluster = client.cluster
        assert cluster.job_ids() == {} and squeue() == []  # nothing until a study asks
        seen: dict[str, str] = {}
        jobs_seen: set[str] = set()
        stop = threading.Event()

        def watch() -> None:  # workers may come and go during the study: note every one
            while not stop.wait(0.05):
                seen.update(names(client))
                jobs_seen.update(cluster.job_ids().values())

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            study, scores = run_study(client, tmp_path / "runs", trials)
        finally:
            stop.set()
            watcher.join()
        assert scores == [standalone(t, STEPS) for t in trials]
        assert jobs_seen, "adaptive scaling never submitted a job"
        frame = study.metrics_store.read_stages()
        ran_in = {worker_job(seen.get(a, "")) for a in frame["worker"]}
        assert None not in ran_in and {j[0] for j in ran_in if j} <= jobs_seen
        # The study is over: its demand is 0, and the jobs go back.
        asyncio.run(
            until(
                lambda: not cluster.job_ids() and not squeue(),
                "the jobs to be given back",
                timeout=90,
            )
        )
