"""What users type is refused when given, with a message that names the problem and the fix:
study names that break paths and keys, the engine's own ``_hippo_*`` names, absurd steps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import make_client, standalone


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster, client = make_client(1)
    with cluster, client:
        yield client


@pytest.mark.parametrize(
    "name", ["runs\n", "runs\r\n", "a\tb", "a\x00b", "a\x1bb", "a\u202eb", "x" * 201]
)
def test_study_names_that_break_paths_and_keys(tmp_path: Path, name: str) -> None:
    with pytest.raises(hd.HippoError, match=r"`name` must be 1-200 letters.*e\.g\. 'digits-cnn'"):
        hd.Study(name, SimulatedTrainer, storage=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_the_longest_allowed_name_works(tmp_path: Path) -> None:
    study = hd.Study("x" * 200, SimulatedTrainer, storage=str(tmp_path))
    assert Path(study.root).name == "x" * 200


@pytest.mark.parametrize("key", ["_hippo_code", "_hippo_isolate", "_hippo_seed"])
def test_reserved_names_in_a_space_are_refused(key: str) -> None:
    with pytest.raises(
        hd.InvalidSpaceError, match=f"GridSpace: hyper-parameter `{key}`.*rename it"
    ):
        hd.GridSpace(lr=[seq.Constant(0.1)], **{key: [1, 2]})
    with pytest.raises(hd.InvalidSpaceError, match=f"RandomSpace: hyper-parameter `{key}`"):
        hd.RandomSpace(lr=hd.loguniform(1e-3, 1.0), **{key: hd.randint(0, 4)})


@pytest.mark.parametrize("key", ["_hippo_code", "_hippo_isolate", "_hippo_seed"])
def test_reserved_names_in_a_trial_are_refused_by_the_study(
    client: Client, tmp_path: Path, key: str
) -> None:
    """``_hippo_code`` used to raise a bare TypeError; ``_hippo_seed`` was silently hidden from
    the trainer (and trained)."""
    study = hd.Study("reserved", SimulatedTrainer, storage=str(tmp_path), client=client)
    trial = hd.Trial(lr=seq.Constant(0.1), fail_at=5, **{key: 3})
    with pytest.raises(hd.InvalidTrialError, match=f"Study: hyper-parameter `{key}`.*rename it"):
        asyncio.run(study.train(trial, 10))
    with pytest.raises(hd.InvalidTrialError, match=f"`{key}`"):
        study.eval({"lr": seq.Constant(0.1), "fail_at": 5, key: 3}, 10)
    assert study.plan.stats().requests == 0


def test_steps_beyond_the_bound_are_refused(client: Client, tmp_path: Path) -> None:
    """10**15 steps used to be planned (and trained); the bound is the hippo.max-steps setting."""
    study = hd.Study("steps", SimulatedTrainer, storage=str(tmp_path), client=client)
    trial = hd.Trial(lr=seq.Constant(0.1), fail_at=50)
    with pytest.raises(
        hd.InvalidSpaceError,
        match=r"`steps` is 1000000000000000, more than the 1,000,000,000 steps.*"
        r"dask\.config\.set\(\{'hippo\.max-steps'",
    ):
        asyncio.run(study.train(trial, 10**15))
    with pytest.raises(hd.InvalidSpaceError, match="`steps`"):
        hd.Study("steps", SimulatedTrainer, storage=str(tmp_path), client=client).tune(
            hd.tuners.Grid(
                hd.GridSpace(lr=[seq.Constant(0.1)], fail_at=[50]), metric="score", steps=10**15
            )
        )
    assert study.plan.stats().requests == 0
    with dask.config.set({"hippo.max-steps": 40}):
        with pytest.raises(hd.InvalidSpaceError, match="more than the 40 steps"):
            study.eval(trial, 41)
        assert study.eval(trial, 40)["score"] == standalone(trial, 40)
