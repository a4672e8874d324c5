"""Checkpoints damaged behind the engine's back: detected before use, forgotten, re-derived.

After a first grid study, the checkpoints that a longer study resumes from are flipped,
truncated, deleted, or replaced by a pickle that would run code (with a valid header and
checksum, so only the weights-only loader stands in its way). The longer study must warn with
the file's name, forget it in the plan, retrain from the nearest good state, run no code, and
end with the results of a trial trained alone.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.storage._checkpoints import encode
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import executed, make_client, standalone


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def flip(path: Path, marker: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, marker: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def delete(path: Path, marker: Path) -> None:
    path.unlink()


def malicious(path: Path, marker: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"trainer": _Evil(str(marker))}, buffer)
    path.write_bytes(encode(buffer.getvalue()))


@pytest.mark.parametrize("damage", [flip, truncate, delete, malicious], ids=lambda f: f.__name__)
def test_damaged_checkpoints_are_detected_forgotten_and_rederived(
    tmp_path: Path, damage: Callable[[Path, Path], None]
) -> None:
    log, marker = str(tmp_path / "train.log"), tmp_path / "code-ran"
    space = hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [30]), seq.StepLR(0.1, 0.1, [40])],
        batch_size=[seq.Constant(32)],
        log=[log],
    )
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study("damaged", SimulatedTrainer, storage=str(tmp_path / "runs"), client=client)
        study.tune(hd.tuners.Grid(space, metric="score", steps=60))
        first = executed(log)
        client.restart()  # new worker processes: nothing left in memory, resume from storage
        # Damage every checkpoint at step 60: the longer run would resume from them.
        damaged = []
        for trial in space:
            found = study.plan.latest_checkpoint(study._plan_trial(trial), 60)
            assert found is not None and found[0] == 60
            damage(Path(study.root, found[1]), marker)  # relative to the study root
            damaged.append(found[1])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = study.tune(hd.tuners.Grid(space, metric="score", steps=80))
    messages = [str(w.message) for w in caught if issubclass(w.category, hd.HippoWarning)]
    for uri in damaged:
        assert any(uri in m and "forgot" in m for m in messages), (uri, messages)
    assert not marker.exists(), "loading a checkpoint ran code"
    for record in result.records:
        assert record.metrics is not None and record.metrics["score"] == standalone(
            record.trial, 80
        )
    # Re-derived from the nearest good state: the branch point at 30, not from scratch.
    assert executed(log) - first == (80 - 30) + (80 - 30)
    for uri in damaged:
        assert all(uri not in node.checkpoints.values() for node in study.plan.nodes)
        reopened = SearchPlan.open(study.root)
        assert all(uri not in node.checkpoints.values() for node in reopened.nodes)
