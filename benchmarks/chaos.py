"""Soak test: a 100-trial study while workers are killed every few seconds and the driver twice.

A Dask cluster runs in this process (scheduler + nanny-managed worker processes); the study's
driver is a separate process that connects to it, so it can be SIGKILLed and started again,
as a user would rerun the script. A chaos loop SIGKILLs a random worker process every
``--kill-every`` seconds (its nanny starts a new one). When the study finally completes, the
same study runs calm on fresh storage, and the two results are compared.

Reported: steps executed (every ``train`` call any worker started, from the simulated trainers'
log, so partial calls of killed stages count in full) against the plan's unique steps (goal
<= 1.10), and whether every trial's final metrics equal the calm run's (goal: all).

    .venv/bin/python benchmarks/chaos.py [--workers 4] [--kill-every 3] [--driver-kills 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from distributed import Client, LocalCluster

from hippo_dask.plan import SearchPlan
from hippo_dask.testing.simulated import read_log

DRIVER = """
import json, sys
from distributed import Client
import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer

SPACE = hd.GridSpace(
    lr=[seq.StepLR(0.1, 0.1, [m1, m2]) for m1 in (60, 100, 140) for m2 in (200, 240)]
       + [seq.Warmup(20, 0.1, then=seq.Exponential(0.1, 0.99)), seq.Constant(0.05),
          seq.Cosine(0.1, 300), seq.Cyclic(0.01, 0.1, 50)],
    batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [120]), seq.MultiStep([32, 128], [120]),
                seq.MultiStep([32, 64], [180]), seq.MultiStep([32, 128], [180])],
    optimizer=["sgd", "adam"],
    log=[{log!r}],
    seconds_per_step=[{sps!r}],
)

if __name__ == "__main__":
    client = Client({address!r})
    study = hd.Study("chaos", SimulatedTrainer, storage={storage!r}, client=client)
    result = study.tune(hd.tuners.Grid(SPACE, metric="score", steps={steps}))
    # Keyed by configuration without the log path, which differs between the two runs.
    key = lambda t: json.dumps(sorted((k, repr(v)) for k, v in t.config.items() if k != "log"))
    with open({out!r}, "w") as handle:
        json.dump({{key(r.trial): (r.status, r.metrics) for r in result.records}}, handle)
"""


def run_driver(script: Path, interval: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "DASK_HIPPO__CHECKPOINT_INTERVAL": str(interval),
    }
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def worker_pids(cluster: LocalCluster) -> list[int]:
    """Worker processes (not their nannies, which start a new worker when one dies)."""
    pids = []
    for nanny in cluster.workers.values():
        process = getattr(getattr(nanny, "process", None), "process", None)
        if process is not None and process.pid is not None:
            pids.append(int(process.pid))
    return pids


def study_once(
    args: argparse.Namespace,
    storage: str,
    log: str,
    address: str,
    chaos: bool,
    cluster: LocalCluster,
) -> tuple[dict[str, list[object]], float, int, int]:
    out = Path(storage) / "result.json"
    script = Path(storage) / "driver.py"
    script.write_text(
        textwrap.dedent(
            DRIVER.format(
                log=log,
                sps=args.seconds_per_step,
                address=address,
                storage=storage,
                steps=args.steps,
                out=str(out),
            )
        )
    )
    began = time.monotonic()
    kills = driver_kills = 0
    rng = random.Random(args.seed)
    driver = run_driver(script, args.checkpoint_interval)
    next_kill = time.monotonic() + args.kill_every
    next_driver_kill = time.monotonic() + args.driver_kill_after
    while driver.poll() is None:
        time.sleep(0.1)
        now = time.monotonic()
        if not chaos:
            continue
        if now >= next_kill:
            pids = worker_pids(cluster)
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            next_kill = now + args.kill_every
        if driver_kills < args.driver_kills and now >= next_driver_kill:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
            driver_kills += 1
            driver = run_driver(script, args.checkpoint_interval)  # rerunning is how you resume
            next_driver_kill = now + args.driver_kill_after
    if driver.returncode != 0:
        raise SystemExit(f"driver failed: {driver.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
    return json.loads(out.read_text()), time.monotonic() - began, kills, driver_kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seconds-per-step", type=float, default=0.01)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--driver-kills", type=int, default=2)
    parser.add_argument("--driver-kill-after", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint-interval",
        type=float,
        default=1.0,
        help="hippo.checkpoint-interval for the driver (s of training between "
        "checkpoints inside long stages; the package default is 300)",
    )
    args = parser.parse_args()

    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            resources={"GPU": 1},
            dashboard_address="127.0.0.1:0",
            processes=True,
        ) as cluster,
        Client(cluster) as client,
    ):
        address = client.scheduler.address
        with tempfile.TemporaryDirectory() as chaotic, tempfile.TemporaryDirectory() as calm:
            log = str(Path(chaotic) / "train.log")
            noisy, noisy_s, kills, driver_kills = study_once(
                args, chaotic, log, address, True, cluster
            )
            plan = SearchPlan.open(f"{chaotic}/chaos")
            unique = plan.stats().unique_steps
            executed = sum(e["steps"] for e in read_log(log) if "steps" in e)
            calm_log = str(Path(calm) / "train.log")
            quiet, quiet_s, _, _ = study_once(args, calm, calm_log, address, False, cluster)
    same = sum(noisy.get(key) == value for key, value in quiet.items())
    done = sum(1 for status, _ in noisy.values() if status == "done")
    print(
        f"# chaos: {len(noisy)} trials x {args.steps} steps at {args.seconds_per_step} s/step on "
        f"{args.workers} workers; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| run | wall s | workers killed | driver restarts | trials done | executed steps "
        "| unique steps | executed / unique | final metrics equal to calm run |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| chaos | {noisy_s:.1f} | {kills} | {driver_kills} | {done}/{len(noisy)} | {executed:,} "
        f"| {unique:,} | {executed / unique:.3f} | {same}/{len(quiet)} |"
    )
    print(f"| calm | {quiet_s:.1f} | 0 | 0 | {len(quiet)}/{len(quiet)} | - | {unique:,} | - | - |")
    ok = executed / unique <= 1.10 and same == len(quiet) and done == len(noisy)
    print(
        f"\nGoal (executed / unique <= 1.10, every result equal to the calm run): "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
