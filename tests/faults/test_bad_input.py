"""Bad input is rejected before any training, with a message that names the problem."""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import executed, make_client


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster, client = make_client(1)
    with cluster, client:
        yield client


def test_a_trainer_class_that_cannot_be_pickled(tmp_path: Path) -> None:
    class Unpicklable(SimulatedTrainer):  # defined here, so pickled by value as in a notebook
        lock = threading.Lock()

    with pytest.raises(hd.HippoError, match="Unpicklable cannot be pickled.*_thread.lock"):
        hd.Study("x", Unpicklable, storage=str(tmp_path))


def test_not_a_trainer(tmp_path: Path) -> None:
    with pytest.raises(hd.HippoError, match="subclass of hippo_dask.Trainer"):
        hd.Study("x", dict, storage=str(tmp_path))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a/b", "../up", " lead"])
def test_a_study_name_that_is_not_a_folder_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(hd.HippoError, match="`name`"):
        hd.Study(name, SimulatedTrainer, storage=str(tmp_path))


@pytest.mark.parametrize(
    "url, message",
    [
        ("nosuchfs://bucket/runs", "Protocol not known: nosuchfs"),
        ("/proc/hippo-runs", "cannot create /proc/hippo-runs"),
    ],
)
def test_storage_that_cannot_be_used(url: str, message: str) -> None:
    with pytest.raises(hd.HippoError, match=message):
        hd.Study("x", SimulatedTrainer, storage=url)


def test_a_config_value_that_cannot_be_stored() -> None:
    with pytest.raises(hd.InvalidTrialError, match="`model`"):
        list(hd.GridSpace(model=[object()]))


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_steps_must_be_positive(steps: object) -> None:
    with pytest.raises(hd.InvalidSpaceError, match="`steps`"):
        hd.tuners.Grid(hd.GridSpace(lr=[seq.Constant(0.1)]), metric="score", steps=steps)  # type: ignore[arg-type]


def test_a_space_with_no_trials(client: Client, tmp_path: Path) -> None:
    space = hd.GridSpace(lr=[seq.Constant(0.1)], where=lambda c: False)
    study = hd.Study("empty", SimulatedTrainer, storage=str(tmp_path), client=client)
    with pytest.raises(hd.InvalidSpaceError, match="no trials"):
        study.tune(hd.tuners.Grid(space, metric="score", steps=10))


TRAINER = '''
from hippo_dask.testing.simulated import SimulatedTrainer

class EditedTrainer(SimulatedTrainer):
    """A trainer whose code the test edits."""

    def evaluate(self):
        metrics = super().evaluate()
        metrics["offset"] = {offset}
        return metrics
'''


def test_changed_trainer_code_is_not_reused_unless_declared_compatible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_dir = tmp_path / "code"
    module_dir.mkdir()
    monkeypatch.syspath_prepend(str(module_dir))  # before the workers start: they inherit it
    source = module_dir / "edited_trainer.py"
    log = str(tmp_path / "train.log")
    space = hd.GridSpace(lr=[seq.StepLR(0.1, 0.1, [20]), seq.Constant(0.1)], log=[log])
    cluster, client = make_client(1)

    def load(offset: int) -> type[hd.Trainer]:
        """Edit the trainer's source; the driver reloads it, the worker restarts to import it."""
        source.write_text(TRAINER.format(offset=offset))
        module = importlib.reload(importlib.import_module("edited_trainer"))
        client.restart()
        return module.EditedTrainer  # type: ignore[no-any-return]

    def study(offset: int, **kwargs: object) -> hd.Study:
        return hd.Study(
            "edit", load(offset), storage=str(tmp_path / "runs"), client=client, **kwargs
        )  # type: ignore[arg-type]

    grid = hd.tuners.Grid(space, metric="score", steps=40)
    # A SpecCluster closes a worker's nanny when its worker left the scheduler and no worker of
    # that name is back `lost-worker-timeout` later (15 s): a timer set by one restart then fires
    # during a later one, if restarts come quicker than that (they do, under load), and the
    # nanny is closed while its new worker starts, so client.restart() waits for nothing.
    config = dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"})
    try:
        with config, cluster, client:
            result = study(1).tune(grid)
            assert {r.metrics["offset"] for r in result.records} == {1}  # type: ignore[index]
            trained = executed(log)
            with pytest.warns(hd.HippoWarning, match="EditedTrainer's code differs.*not reused"):
                edited = study(2)
            result = edited.tune(grid)
            assert {r.metrics["offset"] for r in result.records} == {2}  # type: ignore[index]
            assert executed(log) == 2 * trained
            # Declared compatible: the same version string reuses, whatever the source says.
            with pytest.warns(hd.HippoWarning, match="code differs"):
                declared = study(3, version="v1")
            declared.tune(grid)
            with warnings.catch_warnings():
                warnings.simplefilter("error", hd.HippoWarning)
                again = study(4, version="v1")
            result = again.tune(grid)
            assert result.stats.executed_steps == 0 and executed(log) == 3 * trained
            assert {r.metrics["offset"] for r in result.records} == {3}  # type: ignore[index]
    finally:
        sys.modules.pop("edited_trainer", None)


def test_workers_that_cannot_import_the_trainer_are_named_before_training(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_dir = tmp_path / "late"
    module_dir.mkdir()
    (module_dir / "late_trainer.py").write_text(TRAINER.format(offset=0))
    monkeypatch.syspath_prepend(str(module_dir))  # after the workers started: they lack it
    try:
        trainer = importlib.import_module("late_trainer").EditedTrainer
        study = hd.Study("late", trainer, storage=str(tmp_path / "runs"), client=client)
        with pytest.raises(
            hd.HippoError, match="cannot load trainer class EditedTrainer.*late_trainer"
        ):
            study.tune(
                hd.tuners.Grid(hd.GridSpace(lr=[seq.Constant(0.1)]), metric="score", steps=5)
            )
        assert study.plan.stats().requests == 0
    finally:
        sys.modules.pop("late_trainer", None)
