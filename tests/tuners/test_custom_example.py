"""The custom tuner of examples/custom_tuner.py works on a real cluster as documented."""

from __future__ import annotations

import runpy
from pathlib import Path

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import executed, make_client, standalone

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_tuner.py"


def test_extend_the_leaders(tmp_path: Path) -> None:
    tuner_cls = runpy.run_path(str(EXAMPLE))["ExtendTheLeaders"]
    log = str(tmp_path / "log")
    space = hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [m]) for m in (30, 40, 50)] + [seq.Constant(0.05)], log=[log]
    )
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study("leaders", SimulatedTrainer, storage=str(tmp_path), client=client)
        result = study.tune(tuner_cls(space, metric="score", start=20, max_steps=80, keep=2))
        again = study.tune(tuner_cls(space, metric="score", start=20, max_steps=80, keep=2))
    by_status = {r.trial.id: (r.status, r.steps) for r in result.records}
    assert sorted(status for status, _ in by_status.values()) == [
        "done",
        "done",
        "stopped",
        "stopped",
    ]
    assert all(steps == 80 for status, steps in by_status.values() if status == "done")
    for record in result.records:
        assert record.metrics is not None and record.metrics["score"] == standalone(
            record.trial, record.steps
        )
    assert executed(log) == result.stats.executed_steps == result.stats.unique_steps
    assert again.stats.executed_steps == 0
