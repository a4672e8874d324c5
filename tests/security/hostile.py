"""Markup planted in every user-controlled string a dashboard shows, and a study that holds it.

:data:`IMG` runs script when a page parses it as HTML (the image ``x`` fails to load, its
``onerror`` sets ``window.__pwned``); :data:`SCRIPT` is the classic variant (inert when inserted
through ``innerHTML``, live in a page's source). :func:`write_hostile_study` writes a study the
way a study writes itself (plan journal + zarr metrics store) with them in its name, metric
names, hyper-parameter names and values, a failed stage's error and a worker's name.
"""

from __future__ import annotations

from pathlib import Path

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import MetricRow, MetricsStore, StageRecord
from hippo_dask.testing.simulated import SimulatedTrainer

IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=1</script>"
MARKUP = (IMG, SCRIPT)

STUDY = f"study {IMG}"
"""A study name (a folder name: no ``/``, so no ``</script>``)."""
METRIC_IMG = f"acc {IMG}"
METRIC_SCRIPT = f"loss {SCRIPT}"
HP_NAME = f"lr {IMG}"
HP_VALUE = f"opt {SCRIPT}"
ERROR = f"exploded {IMG} {SCRIPT}"
WORKER = f"tcp://{IMG}:4001"

PARENT = hd.Trial(**{HP_NAME: seq.MultiStep([0.1, 0.01], milestones=[10]), "optimizer": HP_VALUE})
CHILD = hd.Trial(**{HP_NAME: seq.MultiStep([0.1, 0.001], milestones=[10]), "optimizer": HP_VALUE})
EXPLODE_AFTER = 10


class Exploded(RuntimeError):
    """What :class:`HostileTrainer` raises; the lanes show a failure's type, so it is marked up."""


Exploded.__name__ = f"Exploded {IMG}"


class HostileTrainer(SimulatedTrainer):
    """The simulated trainer with marked-up metric names; ``config["explode"]`` makes ``train``
    raise :class:`Exploded` with a marked-up message past :data:`EXPLODE_AFTER` steps."""

    def train(self, steps: int) -> None:
        if self.config.get("explode") and self.steps + steps > EXPLODE_AFTER:
            raise Exploded(ERROR)
        super().train(steps)

    def evaluate(self) -> dict[str, float]:
        score = super().evaluate()["score"]
        return {METRIC_IMG: score, METRIC_SCRIPT: 1.0 - score, "score": score}


OTHER = hd.Trial(**{HP_NAME: seq.Constant(0.1), "optimizer": IMG})


def write_hostile_study(storage: Path) -> str:
    """Write the study; returns its folder (``storage/STUDY``)."""
    root = f"{storage}/{STUDY}"
    plan = SearchPlan.open(root)
    for tag, trial in (("a", PARENT), ("b", CHILD), ("c", OTHER)):
        plan.add(trial, 20, tag=f"{tag} {IMG}")
    rows = []
    for trial, steps in ((PARENT, (5, 10, 20)), (CHILD, (15, 20)), (OTHER, (5,))):
        for step in steps:
            node = plan.locate(trial, step)
            assert node is not None
            values = {METRIC_IMG: step / 20, METRIC_SCRIPT: 1 - step / 20}
            plan.record_metrics(node, step, values)
            rows.append(
                MetricRow(
                    trial=node.owner.id,
                    step=step,
                    values=values,
                    wall_time=1000.0 + step,
                    worker=WORKER,
                )
            )
    parent, child, other = (plan.locate(t, s) for t, s in ((PARENT, 20), (CHILD, 20), (OTHER, 5)))
    assert parent is not None and child is not None and other is not None
    plan.record_checkpoint(parent, 20, "file:///ckpt/a-20")
    plan.record_profile(parent, 0.5)
    plan.flush()
    store = MetricsStore(f"{root}/metrics.zarr")
    store.append(rows)
    store.append_stages(
        [
            StageRecord(
                node=parent.owner.id,
                start_step=0,
                step=20,
                started=1000.0,
                finished=1010.0,
                worker=WORKER,
            ),
            StageRecord(
                node=child.owner.id,
                start_step=10,
                step=20,
                started=1010.0,
                finished=1015.0,
                worker=WORKER,
            ),
            StageRecord(
                node=other.owner.id,
                start_step=0,
                step=20,
                started=1000.0,
                finished=1003.0,
                worker="tcp://127.0.0.1:4002",
                status="failed",
                error=ERROR,
            ),
        ]
    )
    return root
