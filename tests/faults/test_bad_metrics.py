"""Metrics ``evaluate()`` may not return: the trial fails and says why, nothing of it is kept,
and the study goes on with the other trials.

Checked twice: on the worker right after ``evaluate()``, and by the driver where it accepts a
report (a worker's report is input from another process; the second test turns the worker's
check off to see the driver's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.storage._records import BASE_COLUMNS
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import make_client, standalone

STEPS = 20
#: What each kind of bad trainer adds to its metrics, and what the error must name.
BAD: dict[str, tuple[dict[Any, Any], str]] = {
    "reserved": ({"step": 3.0}, r"metric named 'step'.*rename it"),
    "status": ({"status": 1.0}, r"metric named 'status'.*rename it"),
    "not-str": ({1: 0.5}, r"metric name 1 \(int\).*use str keys"),
    "bool": ({"converged": True}, r"'converged': True, a bool.*float\(True\)"),
    "text": ({"acc": "0.9"}, r"'acc': '0.9' \(str\), not a real number.*return a float"),
    "none": ({"acc": None}, r"'acc': None .*not a real number"),
}


def bad_trainer() -> type[hd.Trainer]:
    """A simulated trainer whose ``evaluate()`` adds ``BAD[config["bad"]]`` (defined here, so
    the workers receive it by value, as a notebook's class)."""

    class BadMetricsTrainer(SimulatedTrainer):
        def evaluate(self) -> dict[str, float]:
            metrics: dict[Any, Any] = dict(super().evaluate())
            kind = self.config.get("bad")
            if kind is not None:
                metrics.update(BAD[kind][0])
            return metrics

    return BadMetricsTrainer


def space(log: str) -> hd.GridSpace:
    return hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [10]), seq.Constant(0.05)], bad=[None, *BAD], log=[log]
    )


def check_outcome(study: hd.Study, result: hd.Result, where: str) -> None:
    """Good trials done and exact; each bad one failed naming evaluate(), the key and the fix."""
    assert len(result.records) == 2 * (1 + len(BAD))
    for record in result.records:
        kind = record.trial.fixed["bad"]
        if kind is None:
            assert record.status == "done"
            assert record.metrics is not None
            assert record.metrics["score"] == standalone(record.trial, STEPS)
        else:
            assert record.status == "failed", kind
            assert record.error_type == "InvalidMetricsError", (kind, record.error)
            assert "BadMetricsTrainer.evaluate()" in (record.error or "")
            assert where in (record.error or "")
            assert re.search(BAD[kind][1], record.error or ""), (kind, record.error)
    # Nothing the bad trainers returned was journaled, or written to the metrics store.
    reopened = SearchPlan.open(study.root)
    names = {name for node in reopened.nodes for m in node.metrics.values() for name in m}
    assert names == {"score", "steps"}
    frame = study.metrics_store.read()
    assert set(frame.columns) - set(BASE_COLUMNS) == {"score", "steps"}
    bad_ids = {study._plan_trial(r.trial).id for r in result.records if r.trial.fixed["bad"]}
    assert len(frame) > 0 and not bad_ids & set(frame["trial"])


def test_bad_metrics_fail_their_trial_on_the_worker(client: Client, tmp_path: Path) -> None:
    study = hd.Study("bad-metrics", bad_trainer(), storage=str(tmp_path), client=client, retries=1)
    tuner = hd.tuners.Grid(space(str(tmp_path / "log")), metric="score", steps=STEPS)
    result = study.tune(tuner)
    check_outcome(study, result, "evaluate() returned")
    # Not retried (retries=1): running evaluate() again returns the same; every step ran once.
    assert result.stats.executed_steps == study.plan.stats().unique_steps
    # The next run does not serve the refused metrics: the bad trials fail again, the good
    # ones come from the plan without training.
    again = study.tune(tuner)
    check_outcome(study, again, "evaluate() returned")
    assert all(r.status == "failed" for r in again.records if r.trial.fixed["bad"])


def _accept_anything(metrics: Mapping[Any, Any], where: str) -> dict[Any, Any]:
    return dict(metrics)


def _disable_check() -> None:
    from hippo_dask.execution import _worker

    _worker.check_metrics = _accept_anything  # type: ignore[assignment]


def test_the_driver_checks_what_workers_report(tmp_path: Path) -> None:
    """A worker that does not check (an older version, a patched one) still cannot get bad
    metrics into the plan or the store: the driver refuses them the same way."""
    cluster, client = make_client(1)
    with cluster, client:
        client.run(_disable_check)  # on this test's own workers only
        study = hd.Study("unchecked", bad_trainer(), storage=str(tmp_path), client=client)
        result = study.tune(
            hd.tuners.Grid(space(str(tmp_path / "log")), metric="score", steps=STEPS)
        )
    check_outcome(study, result, "as reported by worker")
