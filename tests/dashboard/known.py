"""A study with known content, written the way a study writes it: plan journal + zarr metrics.

Four trials, all requested by tag (the tuner's trial id)::

    node 0  root, owner A: sgd, lr 0.1 then 0.01 from step 10     steps 0..20   done, no checkpoint at 10
    node 1  child of 0 at 10, owner B: lr 0.001 from step 10      steps 10..20  done
    node 2  child of 0 at 10, owner C: lr 0.1 constant           steps 10..20  pending
    node 3  root, owner D: adam, lr 0.1, asked for 5 steps only   steps 0..5    done (stopped early)

C is pending and no checkpoint holds node 0's state at step 10, so the stage tree (and the
critical path) is node 0 from 0 to 10, then node 2 from 10 to 20: one critical edge, 0 -> 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import MetricRow, MetricsStore, StageRecord

A = hd.Trial(optimizer="sgd", lr=seq.MultiStep([0.1, 0.01], milestones=[10]))
B = hd.Trial(optimizer="sgd", lr=seq.MultiStep([0.1, 0.001], milestones=[10]))
C = hd.Trial(optimizer="sgd", lr=seq.Constant(0.1))
D = hd.Trial(optimizer="adam", lr=seq.Constant(0.1))

SCORES = {  # (owner, step) -> score, as the workers measured them
    (A, 5): 0.2,
    (A, 10): 0.4,
    (A, 15): 0.5,
    (A, 20): 0.7,
    (B, 15): 0.6,
    (B, 20): 0.9,
    (D, 5): 0.95,  # the highest score, but after 5 steps only: never the best trial
}
STAGES = [  # (owner, start step, stop step, started, finished, worker)
    (A, 0, 20, 1000.0, 1012.0, "tcp://127.0.0.1:4001"),
    (B, 10, 20, 1012.0, 1017.0, "tcp://127.0.0.1:4002"),
    (D, 0, 5, 1000.0, 1002.0, "tcp://127.0.0.1:4002"),
]
SECONDS_PER_STEP = 0.5  # profiled for nodes 0 and 1


@dataclass(frozen=True)
class Known:
    """Where the known study lives."""

    storage: str
    name: str

    @property
    def root(self) -> str:
        return f"{self.storage}/{self.name}"


def write_known_study(
    storage: Path | str, name: str = "known", storage_options: dict[str, Any] | None = None
) -> Known:
    """Write the plan journal and metrics store of the study described in the module docstring."""
    root = f"{storage}/{name}"
    plan = SearchPlan.open(root, storage_options)
    for trial, steps in ((A, 20), (B, 20), (C, 20), (D, 5)):
        plan.add(trial, steps, tag=f"tag-{'ABCD'[[A, B, C, D].index(trial)]}")
    root_node = plan.locate(A, 20)
    b_node = plan.locate(B, 20)
    d_node = plan.locate(D, 5)
    assert root_node is not None and b_node is not None and d_node is not None
    for (owner, step), score in SCORES.items():
        node = plan.locate(owner, step)
        assert node is not None
        plan.record_metrics(node, step, {"score": score, "loss": 1.0 - score})
    plan.record_checkpoint(root_node, 20, "file:///ckpt/a-20")
    plan.record_checkpoint(b_node, 20, "file:///ckpt/b-20")
    plan.record_checkpoint(d_node, 5, "file:///ckpt/d-5")
    plan.record_profile(root_node, SECONDS_PER_STEP)
    plan.record_profile(b_node, SECONDS_PER_STEP)
    plan.flush()
    store = MetricsStore(f"{root}/metrics.zarr", storage_options)
    planned = {A: A, B: B, C: C, D: D}
    store.append(
        [
            MetricRow(
                trial=_owner_id(plan, planned[o], s),
                step=s,
                values={"score": v, "loss": 1.0 - v},
                wall_time=1000.0 + s,
                worker="w",
            )
            for (o, s), v in SCORES.items()
        ]
    )
    store.append_stages(
        [
            StageRecord(node=owner.id, start_step=a, step=b, started=t0, finished=t1, worker=w)
            for owner, a, b, t0, t1, w in STAGES
        ]
    )
    return Known(str(storage), name)


def _owner_id(plan: SearchPlan, trial: hd.Trial, step: int) -> str:
    """What the driver writes as a metric row's trial: the owner of the node holding the state."""
    node = plan.locate(trial, step)
    assert node is not None
    return node.owner.id
