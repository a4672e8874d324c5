"""Random search against a fake study: which trials, from which seed."""

from __future__ import annotations

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.tuners import Random
from tests.tuners.fake import FakeStudy, failure, name, run, trials


def test_a_random_space_is_sampled_and_trained_to_steps() -> None:
    space = hd.RandomSpace(
        x=hd.randint(0, 10**6), lr=seq.Constant(hd.loguniform(1e-3, 1)), random_state=2
    )
    study = run(Random(space, 6, "score", steps=30), FakeStudy(lambda t, s: 0.5))
    assert study.requests == [(name(t), 30) for t in space.sample(6)]


def test_a_grid_is_sampled_without_replacement_by_the_tuners_seed() -> None:
    grid = hd.GridSpace(x=list(range(10)), lr=[seq.Constant(0.1)])

    def chosen(seed: int, n: int | None = 4) -> list[int]:
        return [
            x
            for x, _ in run(
                Random(grid, n, "score", steps=5, seed=seed), FakeStudy(lambda t, s: 0.5)
            ).requests
        ]

    assert chosen(0) == chosen(0) and chosen(0) != chosen(1)
    assert len(set(chosen(3))) == 4 and chosen(3) == sorted(chosen(3))  # kept in grid order
    assert chosen(0, None) == list(range(10))
    assert sorted(chosen(0, 10)) == list(range(10))


def test_failures_do_not_stop_the_others() -> None:
    table = lambda t, s: failure() if name(t) == 1 else 0.5  # noqa: E731
    study = run(Random(trials(3), None, "score", steps=5), FakeStudy(table))  # type: ignore[arg-type]
    assert study.answered == [(0, 5), (1, 5), (2, 5)]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(
        hd.InvalidSpaceError, match=r"Random: `steps` must be a whole number >= 1, got 0"
    ):
        Random(trials(3), 2, "score", steps=0)
    with pytest.raises(hd.InvalidSpaceError, match=r"Random: `n_trials` must be .* got 0"):
        Random(trials(3), 0, "score", steps=3)
    with pytest.raises(hd.InvalidSpaceError, match=r"Random: `space` must be a GridSpace"):
        run(Random("abc", 2, "score", steps=3), FakeStudy(lambda t, s: 0.5))  # type: ignore[arg-type]
    with pytest.raises(hd.InvalidSpaceError, match=r"Random: the space has no trials"):
        run(Random([], None, "score", steps=3), FakeStudy(lambda t, s: 0.5))
