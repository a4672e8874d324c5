"""Several processes on one study, and leftovers of earlier runs.

Two processes running the same study at the same time share one plan journal: no record is
lost or interleaved, checkpoints are content-addressed (the same state always has the same
name and bytes), and each process picks up the other's results from the journal. A run plans
only what its own tuner asks for, never requests an interrupted run left pending.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.execution._identity import state_digest
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import FsspecCheckpointStore
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import executed, make_client, standalone

SCRIPT = """
import json, sys
import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer

SPACE = hd.GridSpace(
    lr=[seq.StepLR(0.1, 0.1, [m, 150]) for m in (40, 60, 80)] + [seq.Constant(0.05)],
    batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [100])],
    log=[{log!r}],
    seconds_per_step=[0.003],
)

if __name__ == "__main__":
    client = hd.cluster.local(n_workers=1)
    study = hd.Study("together", SimulatedTrainer, storage={storage!r}, client=client)
    result = study.tune(hd.tuners.Grid(SPACE, metric="score", steps=200))
    print(json.dumps({{"executed": result.stats.executed_steps,
                      "scores": {{r.trial.id: r.metrics["score"] for r in result.records}}}}))
"""


def test_two_processes_on_one_study_share_the_plan(tmp_path: Path) -> None:
    log, storage = str(tmp_path / "train.log"), str(tmp_path / "runs")
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent(SCRIPT.format(log=log, storage=storage)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    first = start()
    deadline = time.monotonic() + 120
    while not any(n.metrics for n in SearchPlan.open(f"{storage}/together").nodes):
        assert first.poll() is None and time.monotonic() < deadline, "the first run never reported"
        time.sleep(0.05)  # polling the journal, not synchronising on time
    second = start()  # starts while the first is half-way
    outputs = []
    for process in (first, second):
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err.decode()[-3000:]
        outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
    a, b = outputs
    assert a["scores"] == b["scores"] and len(a["scores"]) == 8
    plan = SearchPlan.open(f"{storage}/together")
    stats = plan.stats()
    assert stats.requests == 16 and stats.pending == 0  # every record of both processes
    # The second reused what the first had done; together they did less than twice the work.
    assert b["executed"] < stats.unique_steps
    # (A stage cancelled when its run ended, its answer having come from the other process,
    # trained steps that no report counts: the log may hold a little more than the reports.)
    assert a["executed"] + b["executed"] <= executed(log) < 2 * stats.unique_steps
    # Every checkpoint holds the state its name says.
    store = FsspecCheckpointStore(f"{storage}/together/ckpt")
    for node in plan.nodes:
        for step, uri in node.checkpoints.items():
            state = store.load(uri)
            assert state["digest"] == state_digest(node.owner, step, state_digest_salt(plan))
            assert Path(uri).name.startswith(state["digest"][:40])


def state_digest_salt(plan: SearchPlan) -> str:
    """The trainer fingerprint the study salted its states with (kept in every trial)."""
    (fingerprint,) = {t.fixed["_hippo_code"] for t in plan.trials.values()}
    return str(fingerprint)


def test_a_run_does_not_train_what_an_earlier_run_left_pending(tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    storage = str(tmp_path / "runs")
    cluster, client = make_client(1)
    with cluster, client:
        study = hd.Study("leftover", SimulatedTrainer, storage=storage, client=client)
        # An interrupted run asked for these and never got them.
        leftover = hd.Trial(lr=seq.Constant(0.3), log=log)
        with SearchPlan.open(study.root) as plan:
            plan.add(study._plan_trial(leftover), 100)
        space = hd.GridSpace(lr=[seq.StepLR(0.1, 0.1, [20]), seq.Constant(0.1)], log=[log])
        study = hd.Study("leftover", SimulatedTrainer, storage=storage, client=client)
        result = study.tune(hd.tuners.Grid(space, metric="score", steps=40))
    assert executed(log) == result.stats.unique_steps == 40 + 20
    assert study.plan.stats().pending == 1
    for record in result.records:
        assert record.metrics is not None and record.metrics["score"] == standalone(
            record.trial, 40
        )
    assert not any(e.get("start") is None for e in read_log(log) if "steps" in e)
