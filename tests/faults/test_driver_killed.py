"""The driver killed with SIGKILL mid-study, then the same script run again: it resumes.

Rerunning is how you resume: the plan journal and the checkpoints on storage say what is done.
The rerun must train exactly what the journal left pending (nothing that had finished is
trained again) and end with the results of an undisturbed run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hippo_dask as hd
from hippo_dask.plan import SearchPlan
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import make_client, standalone

SCRIPT = """
import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer

SPACE = hd.GridSpace(
    lr=[seq.StepLR(0.1, 0.1, [m, 150]) for m in (40, 60, 80)] + [seq.Constant(0.05)],
    batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [100])],
    optimizer=["sgd", "adam"],
    log=[{log!r}],
    seconds_per_step=[0.004],
)

if __name__ == "__main__":
    study = hd.Study("resume", SimulatedTrainer, storage={storage!r})
    result = study.tune(hd.tuners.Grid(SPACE, metric="score", steps=200))
    print("finished", result.stats.executed_steps)
"""


def test_rerunning_after_a_killed_driver_trains_only_what_was_pending(tmp_path: Path) -> None:
    log, storage = str(tmp_path / "train.log"), str(tmp_path / "runs")
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent(SCRIPT.format(log=log, storage=storage)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen(
        [sys.executable, str(script)],
        start_new_session=True,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # until a few stages have reported into the journal
            assert driver.poll() is None, driver.stdout.read().decode()  # type: ignore[union-attr]
            plan = SearchPlan.open(f"{storage}/resume")
            done = sum(len(n.metrics) for n in plan.nodes)
            if done >= 3:
                break
            assert time.monotonic() < deadline, "the study never reported"
            time.sleep(0.05)  # polling the journal, not synchronising on time
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        # The embedded cluster's workers were the driver's children: end them too.
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    after_kill = SearchPlan.open(f"{storage}/resume")
    remaining = after_kill.stage_tree().total_steps
    assert 0 < after_kill.stats().pending < after_kill.stats().requests

    namespace: dict[str, object] = {}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    space = namespace["SPACE"]
    cluster, client = make_client(2)
    with cluster, client:
        pids = set(client.run(os.getpid).values())
        study = hd.Study("resume", SimulatedTrainer, storage=storage, client=client)
        result = study.tune(hd.tuners.Grid(space, metric="score", steps=200))  # type: ignore[arg-type]
    rerun = sum(e["steps"] for e in read_log(log) if "steps" in e and e["pid"] in pids)
    assert rerun == remaining == result.stats.executed_steps
    for record in result.records:
        assert record.status == "done"
        assert record.metrics is not None and record.metrics["score"] == standalone(
            record.trial, 200
        )
