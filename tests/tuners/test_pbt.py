"""PBT: exploit/explore decisions against a fake study, then the copy's cost on a real cluster.

The fake study answers ``train`` from a formula and logs every call, so the unit tests see each
round's ranking and check every decision against it. The integration tests run the simulated
trainer on Dask and count the steps its workers logged: exploitation must never retrain the
donor's prefix (executed == population * steps), and a rerun must train nothing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer
from hippo_dask.tuners._pbt import PBT, Exploit, continue_with, scale_int
from tests.helpers import executed, make_client

Formula = Callable[[hd.Trial, int], float]


class FakeStudy:
    """``train`` from a formula of the trial and the steps; logs every call."""

    def __init__(self, formula: Formula, fail: Callable[[hd.Trial, int], bool] | None = None):
        self.formula = formula
        self.fail = fail
        self.calls: list[tuple[hd.Trial, int]] = []

    async def train(self, trial: hd.Trial, steps: int) -> dict[str, float]:
        self.calls.append((trial, steps))
        await asyncio.sleep(0)
        if self.fail is not None and self.fail(trial, steps):
            raise hd.TrialFailedError(
                "simulated", exc_type="RuntimeError", stage="s", worker_traceback=""
            )
        return {"score": self.formula(trial, steps)}

    def scores_at(self, steps: int) -> dict[hd.Trial, float]:
        return {t: self.formula(t, steps) for t, s in self.calls if s == steps}


def closeness(trial: hd.Trial, steps: int) -> float:
    """Best when the lr used for the last step is 0.01 (log scale)."""
    return -abs(math.log10(trial.sequences["lr"](steps - 1)) + 2.0)


def space(**extra: Any) -> hd.RandomSpace:
    return hd.RandomSpace(
        lr=seq.Constant(hd.loguniform(1e-4, 1.0)), seed=7, random_state=3, **extra
    )


def run(tuner: PBT, study: FakeStudy) -> None:
    asyncio.run(tuner.run(study))  # type: ignore[arg-type]


# -- pure helpers ------------------------------------------------------------------------------


def test_scale_int_rounds_and_never_gets_stuck_or_reaches_zero() -> None:
    assert scale_int(100, 1.2) == 120 and scale_int(100, 0.8) == 80
    assert scale_int(3, 1.2) == 4  # round(3.6)
    assert scale_int(2, 1.2) == 3  # round(2.4) == 2: nudged up
    assert scale_int(2, 0.8) == 1  # round(1.6) == 2: nudged down
    assert scale_int(1, 0.8) == 1  # never to zero
    assert scale_int(0, 1.2) == 0 and scale_int(-1, 1.2) == -2 and scale_int(5, 1.0) == 5


def test_continue_with_extends_earlier_generations_with_the_same_values() -> None:
    base = seq.StepLR(0.1, gamma=0.5, milestones=[3])
    first = continue_with(base, 5, seq.Constant(0.2))
    assert first == seq.Piecewise((base, 5), seq.Constant(0.2))
    second = continue_with(first, 9, seq.Constant(0.3))
    nested = seq.Piecewise((first, 9), seq.Constant(0.3))
    assert isinstance(second, seq.Piecewise) and len(second.pieces) == 2  # flat, not nested
    np.testing.assert_array_equal(second.values(0, 20), nested.values(0, 20))
    assert list(second.values(0, 12)) == [0.1] * 3 + [0.05] * 2 + [0.2] * 4 + [0.3] * 3
    # A user's piecewise sequence that runs past the step is nested, not cut.
    long = seq.Piecewise((seq.Constant(0.1), 20), seq.Constant(0.01))
    cut = continue_with(long, 5, seq.Constant(0.5))
    assert list(cut.values(3, 7)) == [0.1, 0.1, 0.5, 0.5]
    assert continue_with(seq.Constant(3), 2, seq.Constant(4)).kind == "int"


# -- decisions -------------------------------------------------------------------------------


def test_bottom_quantile_copies_the_top_and_perturbs_within_the_factors() -> None:
    tuner = PBT(space(), "score", population=8, interval=5, steps=20, quantile=0.25)
    study = FakeStudy(closeness)
    run(tuner, study)
    assert tuner.n_quantile == 2
    assert [e.step for e in tuner.lineage] == [5, 5, 10, 10, 15, 15]
    # Every round trains the whole population to the round's end, and nothing else.
    assert sorted(s for _, s in study.calls) == sorted([5, 10, 15, 20] * 8)
    for entry in tuner.lineage:
        scores = study.scores_at(entry.step)
        ranked = sorted(scores.values())
        assert scores[entry.replaced] <= ranked[1]  # among the 2 worst
        assert scores[entry.donor] >= ranked[-2]  # among the 2 best
        t = entry.step
        lr = entry.trial.sequences["lr"]
        donor_lr = entry.donor.sequences["lr"]
        assert isinstance(lr, seq.Piecewise) and isinstance(lr.last, seq.Constant)
        np.testing.assert_array_equal(lr.values(0, t), donor_lr.values(0, t))
        old, new = entry.changes["lr"]
        assert old == donor_lr(t) and lr(t) == new == lr(100)
        assert new / old == pytest.approx(0.8) or new / old == pytest.approx(1.2)
        assert dict(entry.trial.fixed) == dict(entry.donor.fixed)
        assert tuner.members[entry.member] is not entry.replaced
    # The population moves towards lr = 0.01.
    first = study.scores_at(5)
    last = [closeness(m, 20) for m in tuner.members]
    assert np.mean(last) > np.mean(list(first.values()))


def test_int_str_and_bool_values_explore_with_their_kinds() -> None:
    axes = dict(
        batch=seq.Constant(hd.randint(16, 256)),
        opt=seq.Constant(hd.choice(["sgd", "adam", "rmsprop"])),
        nesterov=seq.Constant(hd.choice([True, False])),
    )
    always = PBT(
        space(**axes), "score", population=6, interval=4, steps=12, resample_probability=1.0, seed=1
    )
    run(always, FakeStudy(closeness))
    resampled = 0
    for entry in always.lineage:
        t = entry.step
        seqs = entry.trial.sequences
        assert seqs["batch"].kind == "int" and isinstance(seqs["batch"](t), int)
        assert seqs["batch"](t) != entry.donor.sequences["batch"](t)
        assert seqs["opt"](t) in ("sgd", "adam", "rmsprop") and seqs["opt"].kind == "str"
        assert seqs["nesterov"].kind == "bool" and seqs["lr"].kind == "float"
        resampled += "opt" in entry.changes
    assert resampled >= 1
    never = PBT(
        space(**axes), "score", population=6, interval=4, steps=12, resample_probability=0.0, seed=1
    )
    run(never, FakeStudy(closeness))
    for entry in never.lineage:  # kept values leave the donor's sequence as it was
        assert entry.trial.sequences["opt"] is entry.donor.sequences["opt"]
        assert entry.trial.sequences["nesterov"] is entry.donor.sequences["nesterov"]
        assert set(entry.changes) == {"lr", "batch"}


def test_grid_and_trial_list_spaces_draw_a_subset_and_resample_from_their_options() -> None:
    grid = hd.GridSpace(
        lr=[seq.Constant(10.0**-k) for k in range(1, 6)],
        opt=[seq.Constant("sgd"), seq.MultiStep(["adam", "sgd"], [3])],
    )
    tuner = PBT(grid, "score", population=4, interval=3, steps=9, resample_probability=1.0)
    run(tuner, FakeStudy(closeness))
    initial = [e.replaced for e in tuner.lineage if e.step == 3]
    assert all(t in list(grid) for t in initial)
    for entry in tuner.lineage:
        assert entry.trial.sequences["opt"](entry.step) in ("sgd", "adam")
    listed = PBT(list(grid), "score", population=10, interval=3, steps=6)
    run(listed, FakeStudy(closeness))
    assert len(listed.lineage) == 3  # ceil(10 * 0.25)


def test_generations_nest_and_lineage_and_statuses_follow_the_members() -> None:
    tuner = PBT(space(), "score", population=4, interval=2, steps=12, quantile=0.5)
    study = FakeStudy(closeness)
    run(tuner, study)
    assert len(tuner.lineage) == 5 * 2
    replaced = {e.replaced for e in tuner.lineage}
    assert all(tuner.trial_status(t) == "stopped" for t in replaced)
    assert all(tuner.trial_status(m) is None for m in tuner.members)
    # Later generations copy members that were themselves copies: their lr holds several
    # pieces, and each copy still equals its donor up to the copy's step.
    deepest = max(tuner.members, key=lambda m: len(getattr(m.sequences["lr"], "pieces", ())))
    assert len(deepest.sequences["lr"].pieces) >= 2  # type: ignore[attr-defined]
    for entry in tuner.lineage:
        t = entry.step
        np.testing.assert_array_equal(
            entry.trial.sequences["lr"].values(0, t), entry.donor.sequences["lr"].values(0, t)
        )
        assert isinstance(entry, Exploit) and entry.donor_member != entry.member


def test_the_same_seed_makes_the_same_decisions() -> None:
    def decisions(tuner: PBT) -> list[tuple[int, int, int, str]]:
        run(tuner, FakeStudy(closeness))
        return [(e.step, e.member, e.donor_member, e.trial.id) for e in tuner.lineage]

    kwargs: dict[str, Any] = dict(population=6, interval=3, steps=12)
    tuner = PBT(space(), "score", **kwargs)
    first = decisions(tuner)
    assert decisions(PBT(space(), "score", **kwargs)) == first
    assert decisions(tuner) == first  # the same object run again
    assert decisions(PBT(space(), "score", seed=1, **kwargs)) != first


def test_failures_and_nan_rank_worst_and_do_not_crash() -> None:
    members = space().sample(4)
    broken, diverged = members[0], members[1]

    def formula(trial: hd.Trial, steps: int) -> float:
        return math.nan if trial == diverged else closeness(trial, steps)

    study = FakeStudy(formula, fail=lambda trial, steps: trial == broken and steps >= 4)
    tuner = PBT(members, "score", population=4, interval=4, steps=12, quantile=0.25)
    run(tuner, study)
    first = [e for e in tuner.lineage if e.step == 4]
    # The failed member is replaced, and so is the bottom quantile (the NaN member).
    assert {e.replaced for e in first} == {broken, diverged}
    assert all(e.donor not in (broken, diverged) for e in tuner.lineage)
    assert not any(t == broken and s > 4 for t, s in study.calls)  # never trained again


def test_when_everything_fails_nothing_is_exploited_and_the_run_ends() -> None:
    study = FakeStudy(closeness, fail=lambda trial, steps: True)
    tuner = PBT(space(), "score", population=4, interval=4, steps=12)
    run(tuner, study)
    assert tuner.lineage == [] and all(s == 4 for _, s in study.calls)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(population=1), "population"),
        (dict(interval=0), "interval"),
        (dict(steps=2.5), "steps"),
        (dict(perturb=()), "perturb"),
        (dict(perturb=(0.8, -1.0)), "perturb"),
        (dict(perturb="0.8"), "perturb"),
        (dict(quantile=0.6), "quantile"),
        (dict(quantile=0), "quantile"),
        (dict(resample_probability=1.5), "resample_probability"),
        (dict(seed=None), "seed"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], word: str) -> None:
    args: dict[str, Any] = dict(population=4, interval=2, steps=10)
    args.update(kwargs)
    with pytest.raises(hd.InvalidSpaceError, match=word):
        PBT(space(), "score", **args)


def test_spaces_that_cannot_be_explored_are_rejected() -> None:
    with pytest.raises(hd.InvalidSpaceError, match="population=2"):
        run(
            PBT(
                hd.GridSpace(lr=[seq.Constant(0.1), seq.Constant(0.2)]),
                "score",
                population=3,
                interval=2,
                steps=4,
            ),
            FakeStudy(closeness),
        )
    with pytest.raises(hd.InvalidSpaceError, match="sequential"):
        run(
            PBT(hd.GridSpace(wd=[0.1, 0.2, 0.3]), "score", population=2, interval=2, steps=4),
            FakeStudy(closeness),
        )
    with pytest.raises(hd.InvalidSpaceError, match="space"):
        PBT({"lr": 0.1}, "score", population=2, interval=2, steps=4)  # type: ignore[arg-type]


# -- on a real cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster, client = make_client(2)
    with cluster, client:
        yield client


def test_copies_cost_nothing_and_a_rerun_trains_nothing(client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "train.log")
    population, steps = 4, 20
    pbt_space = hd.RandomSpace(
        lr=seq.Constant(hd.loguniform(1e-3, 1.0)),
        batch=seq.Constant(hd.randint(16, 128)),
        log=log,
        random_state=0,
    )

    def tuner() -> PBT:
        return PBT(pbt_space, "score", population=population, interval=5, steps=steps)

    first = tuner()
    study = hd.Study("pbt", SimulatedTrainer, storage=str(tmp_path), client=client)
    result = study.tune(first)
    assert len(first.lineage) == 3
    # Exploitation never retrains the donor's prefix: each slot costs `steps`, copies nothing.
    assert executed(log) == population * steps == result.stats.executed_steps
    statuses = result.trials.set_index("trial_id")["status"]
    assert {statuses[e.replaced.id] for e in first.lineage} == {"stopped"}
    assert {statuses[m.id] for m in first.members} == {"done"}
    assert result.best is not None and result.best.trial in first.members
    # The same script again: the same decisions, answered from the plan.
    second = tuner()
    again = hd.Study("pbt", SimulatedTrainer, storage=str(tmp_path), client=client)
    rerun = again.tune(second)
    assert rerun.stats.executed_steps == 0 and executed(log) == population * steps
    assert [e.trial.id for e in second.lineage] == [e.trial.id for e in first.lineage]
    assert rerun.best is not None and rerun.best.metrics == result.best.metrics
