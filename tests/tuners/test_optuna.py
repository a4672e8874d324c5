"""The Optuna adapter: the space's mapping to suggestions, TPE, pruning, determinism, failures.

Unit tests drive the adapter with a fake study that answers ``train`` from a formula; the
integration test runs a sampler on a real Dask cluster and reruns it against the same storage.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from distributed import Client
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.seq import Sampleable
from hippo_dask.testing.simulated import SimulatedTrainer
from hippo_dask.tuners._optuna import Optuna
from tests.helpers import executed, make_client

optuna.logging.set_verbosity(optuna.logging.WARNING)

Formula = Callable[[hd.Trial, int], float]


def value(trial: hd.Trial, name: str) -> Any:
    """A hyper-parameter's value at step 0, fixed or sequential."""
    return trial.fixed[name] if name in trial.fixed else trial.sequences[name](0)


class FakeStudy:
    """``train`` from a formula; logs calls. ``shuffle`` makes calls finish in a varying order
    (more or fewer event-loop turns), to show that the adapter's decisions do not depend on it."""

    def __init__(
        self,
        formula: Formula,
        fail: Callable[[hd.Trial, int], bool] | None = None,
        shuffle: int = 0,
    ) -> None:
        self.formula = formula
        self.fail = fail
        self.shuffle = shuffle
        self.calls: list[tuple[hd.Trial, int]] = []
        self.finished: list[tuple[hd.Trial, int]] = []

    async def train(self, trial: hd.Trial, steps: int) -> dict[str, float]:
        self.calls.append((trial, steps))
        turns = (hash((trial.id, steps, self.shuffle)) % 7) if self.shuffle else 0
        for _ in range(turns):
            await asyncio.sleep(0)
        self.finished.append((trial, steps))
        if self.fail is not None and self.fail(trial, steps):
            raise hd.TrialFailedError(
                "simulated", exc_type="RuntimeError", stage="s", worker_traceback=""
            )
        return {"score": self.formula(trial, steps)}


def run(tuner: Optuna, study: FakeStudy) -> optuna.Study:
    asyncio.run(tuner.run(study))  # type: ignore[arg-type]
    assert tuner.optuna_study is not None
    return tuner.optuna_study


def quadratic(trial: hd.Trial, steps: int) -> float:
    return -((value(trial, "x") - 3.0) ** 2)


# -- the mapping -----------------------------------------------------------------------------


def test_random_space_axes_map_to_optuna_distributions() -> None:
    space = hd.RandomSpace(
        a=hd.uniform(0.0, 1.0),
        b=hd.loguniform(1e-4, 1e-1),
        c=hd.randint(2, 9),
        d=hd.choice(["sgd", "adam", "rmsprop"]),
        lr=seq.StepLR(hd.loguniform(1e-3, 1.0), gamma=hd.uniform(0.1, 0.5), milestones=[5]),
        mom=hd.choice([seq.Constant(0.9), seq.Constant(hd.uniform(0.5, 0.99))]),
        wd=1e-4,
    )
    tuner = Optuna(
        optuna.samplers.RandomSampler(seed=0), space, 12, "score", steps=10, concurrency=3
    )
    study = FakeStudy(lambda t, s: 0.0)
    ostudy = run(tuner, study)
    first = ostudy.trials[0].distributions
    assert first["a"] == FloatDistribution(0.0, 1.0)
    assert first["b"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert first["c"] == IntDistribution(2, 8)
    assert first["d"] == CategoricalDistribution([0, 1, 2])
    assert first["lr.v0"] == FloatDistribution(1e-3, 1.0, log=True)
    assert first["lr.gamma"] == FloatDistribution(0.1, 0.5)
    assert first["mom"] == CategoricalDistribution([0, 1])
    assert len(ostudy.trials) == 12 and all(t.state == TrialState.COMPLETE for t in ostudy.trials)
    picked_second = False
    for otrial in ostudy.trials:
        trial = tuner.suggested[otrial.number]
        params = otrial.params
        assert otrial.user_attrs["hippo_trial_id"] == trial.id
        assert trial.fixed["a"] == params["a"] and trial.fixed["c"] == params["c"]
        assert trial.fixed["d"] == ["sgd", "adam", "rmsprop"][params["d"]]
        assert trial.fixed["wd"] == 1e-4 and "wd" not in params
        assert trial.sequences["lr"] == seq.StepLR(
            params["lr.v0"], gamma=params["lr.gamma"], milestones=[5]
        )
        if params["mom"] == 1:  # the option with a distribution inside: "mom.1.v0"
            picked_second = True
            assert trial.sequences["mom"] == seq.Constant(params["mom.1.v0"])
        else:
            assert trial.sequences["mom"] == seq.Constant(0.9) and "mom.1.v0" not in params
    assert picked_second
    assert sorted(s for _, s in study.calls) == [10] * 12  # no pruner: straight to `steps`


def test_grid_axes_and_trial_lists_become_categoricals_over_indices() -> None:
    options = [seq.Constant(0.1), seq.StepLR(0.1, gamma=0.1, milestones=[5])]
    grid = hd.GridSpace(lr=options, opt=["sgd", "adam", "lamb"], seed=[0])
    tuner = Optuna(optuna.samplers.RandomSampler(seed=1), grid, 6, "score", steps=10)
    ostudy = run(tuner, FakeStudy(lambda t, s: 0.0))
    for otrial in ostudy.trials:
        assert otrial.distributions == {
            "lr": CategoricalDistribution([0, 1]),
            "opt": CategoricalDistribution([0, 1, 2]),
        }
        trial = tuner.suggested[otrial.number]
        assert trial == hd.Trial(
            lr=options[otrial.params["lr"]],
            seed=0,
            opt=["sgd", "adam", "lamb"][otrial.params["opt"]],
        )
    trials = list(grid)
    listed = Optuna(optuna.samplers.RandomSampler(seed=1), trials, 4, "score", steps=10)
    ostudy = run(listed, FakeStudy(lambda t, s: 0.0))
    assert ostudy.trials[0].distributions == {"trial": CategoricalDistribution(list(range(6)))}
    assert all(listed.suggested[o.number] == trials[o.params["trial"]] for o in ostudy.trials)


def test_where_rejections_are_told_fail_and_asked_again() -> None:
    grid = hd.GridSpace(x=[0, 1, 2, 3], y=[0, 1], where=lambda c: c["x"] + c["y"] < 3)
    tuner = Optuna(optuna.samplers.RandomSampler(seed=0), grid, 8, "score", steps=5)
    study = FakeStudy(lambda t, s: float(t.fixed["x"]))
    ostudy = run(tuner, study)
    complete = [t for t in ostudy.trials if t.state == TrialState.COMPLETE]
    rejected = [t for t in ostudy.trials if t.state == TrialState.FAIL]
    assert len(complete) == 8 and len(study.calls) == 8
    assert rejected and all(t.user_attrs["hippo_rejected_by_where"] for t in rejected)
    assert all(t.fixed["x"] + t.fixed["y"] < 3 for t, _ in study.calls)


# -- optimisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["max", "min"])
def test_tpe_finds_the_good_region_of_a_quadratic(mode: str) -> None:
    space = hd.RandomSpace(x=seq.Constant(hd.uniform(-10.0, 10.0)))
    sign = 1.0 if mode == "max" else -1.0
    tuner = Optuna(
        optuna.samplers.TPESampler(seed=0), space, 40, "score", mode, steps=10, concurrency=1
    )
    ostudy = run(tuner, FakeStudy(lambda t, s: sign * quadratic(t, s)))
    xs = [value(tuner.suggested[o.number], "x") for o in ostudy.trials]
    assert abs(ostudy.best_params["x.v0"] - 3.0) < 0.5
    assert np.mean(np.abs(np.array(xs[-10:]) - 3.0)) < np.mean(np.abs(np.array(xs[:10]) - 3.0))


def test_median_pruner_stops_trials_whose_early_scores_are_bad() -> None:
    space = hd.RandomSpace(q=hd.uniform(0.0, 1.0))

    def curve(trial: hd.Trial, steps: int) -> float:  # a trial's quality shows from the start
        return trial.fixed["q"] * steps / 100

    study = FakeStudy(curve)
    tuner = Optuna(
        optuna.samplers.RandomSampler(seed=0),
        space,
        20,
        "score",
        steps=100,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
        concurrency=1,
    )
    assert tuner.rungs == (25, 50, 100)
    ostudy = run(tuner, study)
    pruned = [o for o in ostudy.trials if o.state == TrialState.PRUNED]
    complete = [o for o in ostudy.trials if o.state == TrialState.COMPLETE]
    assert len(pruned) >= 3 and len(complete) + len(pruned) == 20
    reached: dict[str, int] = {}
    for trial, steps in study.calls:
        reached[trial.id] = max(reached.get(trial.id, 0), steps)
    for o in pruned:
        trial = tuner.suggested[o.number]
        assert reached[trial.id] < 100 and tuner.trial_status(trial) == "stopped"
    assert all(tuner.trial_status(tuner.suggested[o.number]) is None for o in complete)
    assert np.mean([o.params["q"] for o in pruned]) < np.mean([o.params["q"] for o in complete])
    assert sorted({s for _, s in study.calls}) == [25, 50, 100]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_seeded_sampler_makes_the_same_decisions_whatever_the_timing(concurrency: int) -> None:
    space = hd.RandomSpace(x=seq.Constant(hd.uniform(-10.0, 10.0)), k=hd.randint(0, 5))

    def decisions(tuner: Optuna, shuffle: int) -> list[str]:
        study = FakeStudy(quadratic, shuffle=shuffle)
        run(tuner, study)
        return [t.id for t in tuner.suggested.values()]

    def make() -> Optuna:
        return Optuna(
            optuna.samplers.TPESampler(seed=3, n_startup_trials=4),
            space,
            16,
            "score",
            steps=20,
            pruner=optuna.pruners.SuccessiveHalvingPruner(),
            rungs=[5, 10],
            concurrency=concurrency,
        )

    tuner = make()
    first = decisions(tuner, shuffle=1)
    assert decisions(make(), shuffle=2) == first
    assert decisions(tuner, shuffle=3) == first  # the same object again: the sampler is copied
    assert len(set(first)) == 16


def test_failed_and_diverged_trials_are_told_fail_without_stopping_the_run() -> None:
    space = hd.RandomSpace(x=hd.uniform(0.0, 1.0))

    def formula(trial: hd.Trial, steps: int) -> float:
        return math.nan if trial.fixed["x"] > 0.7 else trial.fixed["x"]

    study = FakeStudy(formula, fail=lambda t, s: t.fixed["x"] < 0.3)
    tuner = Optuna(
        optuna.samplers.RandomSampler(seed=0),
        space,
        12,
        "score",
        steps=8,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1),
        rungs=[4],
    )
    ostudy = run(tuner, study)
    states = {o.number: o.state for o in ostudy.trials}
    for number, trial in tuner.suggested.items():
        x = trial.fixed["x"]
        if x < 0.3 or x > 0.7:
            assert states[number] == TrialState.FAIL
    assert TrialState.COMPLETE in states.values()
    # Failed at the first rung: never trained further.
    assert not any(s > 4 and (t.fixed["x"] < 0.3 or t.fixed["x"] > 0.7) for t, s in study.calls)


# -- construction ------------------------------------------------------------------------------


class _Odd(Sampleable):
    def sample(self, rng: np.random.Generator) -> Any:
        return 1


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(n_trials=0), "n_trials"),
        (dict(steps=0), "steps"),
        (dict(concurrency=0), "concurrency"),
        (dict(seed="0"), "seed"),
        (dict(sampler="tpe"), "sampler"),
        (dict(pruner="median"), "pruner"),
        (dict(rungs=[5]), "rungs"),
        (dict(rungs=[5, 3], pruner=optuna.pruners.MedianPruner()), "increasing"),
        (dict(rungs=[0, 5], pruner=optuna.pruners.MedianPruner()), "rungs"),
        (dict(rungs=[5, 50], pruner=optuna.pruners.MedianPruner()), "rungs"),
        (dict(space={"x": 1}), "space"),
        (dict(space=[]), "space"),
        (dict(space=hd.RandomSpace(x=_Odd())), "x"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], word: str) -> None:
    args: dict[str, Any] = dict(
        sampler=None, space=hd.RandomSpace(x=hd.uniform(0, 1)), n_trials=5, metric="score", steps=10
    )
    args.update(kwargs)
    with pytest.raises(hd.InvalidSpaceError, match=word):
        Optuna(**args)


def test_defaults() -> None:
    tuner = Optuna(
        None,
        hd.RandomSpace(x=hd.uniform(0, 1)),
        5,
        "score",
        steps=10,
        pruner=optuna.pruners.MedianPruner(),
        rungs=[2, 5],
    )
    assert isinstance(tuner.sampler, optuna.samplers.TPESampler)
    assert tuner.rungs == (2, 5, 10) and tuner.concurrency == 4
    assert Optuna(
        None,
        hd.RandomSpace(x=hd.uniform(0, 1)),
        5,
        "score",
        steps=3,
        pruner=optuna.pruners.MedianPruner(),
    ).rungs == (1, 3)


# -- on a real cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster, client = make_client(2)
    with cluster, client:
        yield client


def test_on_a_cluster_with_pruning_and_a_rerun_that_trains_nothing(
    client: Client, tmp_path: Path
) -> None:
    log = str(tmp_path / "train.log")
    space = hd.RandomSpace(
        lr=seq.StepLR(hd.loguniform(1e-3, 1.0), gamma=0.5, milestones=[6]),
        opt=hd.choice(["sgd", "adam"]),
        log=log,
    )

    def tuner() -> Optuna:
        return Optuna(
            optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
            space,
            8,
            "score",
            steps=12,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
            rungs=[4, 8],
        )

    first = tuner()
    study = hd.Study("optuna", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(first)
    assert result.best is not None and result.best.steps == 12
    assert first.optuna_study is not None
    best = first.optuna_study.best_trial
    assert result.best.metrics is not None and result.best.metrics["score"] == best.value
    trained = executed(log)
    assert trained == result.stats.executed_steps > 0
    stopped = set(result.trials.loc[result.trials["status"] == "stopped", "trial_id"])
    pruned = {
        first.suggested[o.number].id
        for o in first.optuna_study.trials
        if o.state == TrialState.PRUNED
    }
    assert pruned and stopped == pruned - {result.best.trial.id}
    second = tuner()
    again = hd.Study("optuna", SimulatedTrainer, storage=str(tmp_path), client=client)
    rerun = again.tune(second)
    assert rerun.stats.executed_steps == 0 and executed(log) == trained
    assert [t.id for t in second.suggested.values()] == [t.id for t in first.suggested.values()]
    assert rerun.best is not None and rerun.best.trial == result.best.trial
