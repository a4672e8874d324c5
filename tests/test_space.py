"""GridSpace, RandomSpace and distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import hippo_dask as hd
from hippo_dask import seq


def test_grid_is_the_cartesian_product_in_argument_order() -> None:
    space = hd.GridSpace(
        lr=[seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]), seq.Warmup(5, 0.1)],
        batch_size=[seq.Constant(128), seq.MultiStep([128, 256], milestones=[25])],
        optimizer=["sgd", "adam"],
    )
    trials = list(space)
    assert len(space) == len(trials) == 8
    assert len(set(trials)) == 8
    assert trials[0].config == {
        "optimizer": "sgd",
        "batch_size": seq.Constant(128),
        "lr": seq.StepLR(0.1, 0.1, [30, 45]),
    }
    assert [t.fixed["optimizer"] for t in trials[:2]] == ["sgd", "adam"]


def test_grid_where_filters_configurations() -> None:
    space = hd.GridSpace(
        optimizer=["sgd", "adam"],
        momentum=[0.0, 0.9],
        where=lambda c: not (c["optimizer"] == "adam" and c["momentum"] > 0),
    )
    assert len(space) == 3
    assert {(t.fixed["optimizer"], t.fixed["momentum"]) for t in space} == {
        ("sgd", 0.0),
        ("sgd", 0.9),
        ("adam", 0.0),
    }


def test_grid_single_values_choice_and_list_valued_fixed() -> None:
    space = hd.GridSpace(seed=0, lr=seq.Constant(0.1), layers=[[64, 32]], opt=hd.choice(["a", "b"]))
    assert len(space) == 2
    assert next(iter(space)).fixed["layers"] == [64, 32]


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"lr": []}, "axis `lr` has no options"),
        ({"lr": hd.uniform(0, 1)}, "distribution"),
        ({"lr": [seq.StepLR(hd.uniform(0.01, 0.1), 0.1, [3])]}, "random"),
        ({}, "at least one axis"),
    ],
)
def test_grid_rejects_what_it_cannot_enumerate(axes: dict[str, object], message: str) -> None:
    with pytest.raises(hd.InvalidSpaceError, match=message):
        hd.GridSpace(**axes)


def test_grid_where_must_be_callable() -> None:
    with pytest.raises(hd.InvalidSpaceError, match="`where`"):
        hd.GridSpace(lr=[0.1], where="lr > 0")  # type: ignore[arg-type]


def random_space(random_state: int = 0) -> hd.RandomSpace:
    return hd.RandomSpace(
        lr=seq.StepLR(
            hd.loguniform(1e-3, 1), gamma=0.1, milestones=hd.choice([[30, 45], [40, 60]])
        ),
        batch_size=hd.choice(
            [seq.Constant(128), seq.MultiStep([128, hd.choice([256, 512])], [25])]
        ),
        optimizer=hd.choice(["sgd", "adam"]),
        width=hd.randint(1, 4),
        dropout=hd.uniform(0.0, 0.5),
        seed=7,
        random_state=random_state,
    )


def test_random_space_draws_inside_sequences_and_is_deterministic() -> None:
    trials = random_space(0).sample(200)
    assert trials == random_space(0).sample(200)
    assert trials != random_space(1).sample(200)
    assert trials[:5] == random_space(0).sample(5)
    v0s = np.array([t.sequences["lr"].v0 for t in trials])  # type: ignore[attr-defined]
    assert v0s.min() >= 1e-3 and v0s.max() < 1
    # log-uniform: about half the draws below the geometric middle
    assert 70 < (v0s < math.sqrt(1e-3)).sum() < 130
    assert {t.sequences["lr"].milestones for t in trials} == {(30, 45), (40, 60)}  # type: ignore[attr-defined]
    assert {t.fixed["width"] for t in trials} == {1, 2, 3}
    assert {t.fixed["seed"] for t in trials} == {7}
    second = {t.sequences["batch_size"](30) for t in trials}
    assert second == {128, 256, 512}


def test_random_space_size_is_explicit() -> None:
    space = random_space()
    with pytest.raises(TypeError, match="n_trials"):
        list(space)
    finite = hd.RandomSpace(lr=hd.uniform(0, 1), random_state=3, n_trials=4)
    assert len(finite) == 4 and list(finite) == finite.sample(4)


def test_random_space_without_random_state_is_stable_per_object() -> None:
    space = hd.RandomSpace(lr=hd.uniform(0, 1))
    assert space.sample(3) == space.sample(3)


def test_random_where_that_rejects_everything_stops_with_an_error() -> None:
    space = hd.RandomSpace(lr=hd.uniform(0, 1), where=lambda c: c["lr"] > 2, random_state=0)
    with pytest.raises(hd.InvalidSpaceError, match="rejects almost everything"):
        space.sample(1)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: hd.uniform(1, 1), "low < high"),
        (lambda: hd.loguniform(0, 1), "low > 0"),
        (lambda: hd.uniform(0, float("nan")), "finite"),
        (lambda: hd.randint(3, 3), "exclusive"),
        (lambda: hd.randint(0.5, 3), "int"),
        (lambda: hd.choice([]), "empty"),
        (lambda: hd.choice("abc"), "list"),
        (lambda: hd.RandomSpace(lr=hd.uniform(0, 1), random_state="x"), "random_state"),
        (lambda: hd.RandomSpace(lr=hd.uniform(0, 1), n_trials=0), "n_trials"),
    ],
)
def test_bad_distributions_fail_when_built(build: object, message: str) -> None:
    with pytest.raises(hd.InvalidSpaceError, match=message):
        build()  # type: ignore[operator]


def test_invalid_sampled_sequence_names_the_family() -> None:
    space = hd.RandomSpace(lr=seq.StepLR(0.1, hd.uniform(-2, -1), [10]), random_state=0)
    with pytest.raises(hd.InvalidSequenceError, match="gamma"):
        space.sample(1)
