"""SHA's decisions against a fake study: rung sizes, who is promoted, failures, determinism."""

from __future__ import annotations

from collections import Counter

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.tuners import SHA, Decision
from tests.tuners.fake import FakeStudy, decisions, failure, name, run, trials

NAN = float("nan")


def quality(trial: hd.Trial, steps: int) -> float:
    """Trial x is better the higher (x * 37) % 81: a fixed ranking, unrelated to x's order."""
    return (name(trial) * 37) % 81 + steps / 1000


def test_the_published_rungs_of_81_trials_at_eta_3() -> None:
    tuner = SHA(trials(81), "score", min_steps=1, max_steps=81, reduction=3)
    study = run(tuner, FakeStudy(quality))
    assert Counter(steps for _, steps in study.requests) == {1: 81, 3: 27, 9: 9, 27: 3, 81: 1}
    ranking = sorted(range(81), key=lambda x: -((x * 37) % 81))
    for rung, keep in [(1, 27), (3, 9), (9, 3), (27, 1)]:
        promoted = [n for n, steps, d in decisions(tuner) if steps == rung and d == "promote"]
        assert promoted == ranking[:keep]  # the best first
        stopped = [n for n, steps, d in decisions(tuner) if steps == rung and d == "stop"]
        assert len(stopped) == {1: 81, 3: 27, 9: 9, 27: 3}[rung] - keep
    # Promoted trials are asked for the next rung's steps: the plan resumes them.
    assert [n for n, steps in study.requests if steps == 81] == ranking[:1]
    assert tuner.stopped() == {t.id for t in trials(81)} - {trials(81)[ranking[0]].id}


def test_each_rung_ranks_by_its_own_results() -> None:
    # Curves cross: at 2 steps x=0 and 1 lead, at 4 steps x=1 beats x=0.
    table = {
        (0, 2): 0.9,
        (1, 2): 0.8,
        (2, 2): 0.1,
        (3, 2): 0.2,
        (0, 4): 0.3,
        (1, 4): 0.5,
        (1, 8): 0.6,
    }
    tuner = SHA(trials(4), "score", min_steps=2, max_steps=8, reduction=2)
    study = run(tuner, FakeStudy(lambda t, s: table[name(t), s]))
    assert study.requests == [(0, 2), (1, 2), (2, 2), (3, 2), (0, 4), (1, 4), (1, 8)]
    assert decisions(tuner) == [
        (0, 2, "promote"),
        (1, 2, "promote"),
        (2, 2, "stop"),
        (3, 2, "stop"),
        (1, 4, "promote"),
        (0, 4, "stop"),
    ]
    assert [tuner.trial_status(t) for t in trials(4)] == ["stopped", None, "stopped", "stopped"]


def test_min_mode_ties_and_an_extra_last_rung() -> None:
    # mode="min": lower is better. Ties (x = 1, 2, 3 all 0.5) go to the earlier trial.
    table = lambda t, s: {0: 0.9, 1: 0.5, 2: 0.5, 3: 0.5}[name(t)]  # noqa: E731
    tuner = SHA(trials(4), "score", mode="min", min_steps=3, max_steps=10, reduction=2)
    assert tuner.rungs == [3, 6, 10]
    study = run(tuner, FakeStudy(table))
    assert study.requests[4:] == [(1, 6), (2, 6), (1, 10)]


def test_nan_and_failed_trials_rank_worst_and_failed_ones_are_never_promoted() -> None:
    def table(trial: hd.Trial, steps: int) -> object:
        x = name(trial)
        if x == 0:
            return failure()  # fails at once
        if x == 1:
            return 5.0 if steps == 2 else failure()  # the best at rung 0 fails on promotion
        if x == 2:
            return NAN
        return x / 10 + steps / 100

    tuner = SHA(trials(8), "score", min_steps=2, max_steps=8, reduction=2)
    study = run(tuner, FakeStudy(table))  # type: ignore[arg-type]
    # Rung 0 keeps 4 of 8: 1, 7, 6, 5 (never the failure, never the NaN); 1 then fails.
    assert [n for n, s in study.requests if s == 4] == [1, 7, 6, 5]
    assert [n for n, s in study.requests if s == 8] == [7, 6]
    assert [(n, d) for n, s, d in decisions(tuner) if s == 2] == [
        (1, "promote"),
        (7, "promote"),
        (6, "promote"),
        (5, "promote"),
        (2, "stop"),
        (3, "stop"),
        (4, "stop"),
    ]  # 0 failed: the study reports it
    assert [(n, d) for n, s, d in decisions(tuner) if s == 4] == [
        (7, "promote"),
        (6, "promote"),
        (5, "stop"),
    ]


def test_all_but_one_failing_still_finishes_the_survivor() -> None:
    table = lambda t, s: failure() if name(t) else 0.5  # noqa: E731
    tuner = SHA(trials(4), "score", min_steps=1, max_steps=4, reduction=2)
    study = run(tuner, FakeStudy(table))  # type: ignore[arg-type]
    assert study.requests[4:] == [(0, 2), (0, 4)]
    assert tuner.stopped() == set()  # the failed ones are the study's "failed", not "stopped"


def test_all_failing_ends_quietly() -> None:
    tuner = SHA(trials(4), "score", min_steps=1, max_steps=4, reduction=2)
    study = run(tuner, FakeStudy(lambda t, s: failure()))
    assert len(study.requests) == 4 and decisions(tuner) == []


def test_an_error_that_stops_the_study_propagates() -> None:
    def table(trial: hd.Trial, steps: int) -> object:
        return hd.StorageError("storage unreachable") if name(trial) == 2 else 0.5

    with pytest.raises(hd.StorageError, match="unreachable"):
        run(SHA(trials(4), "score", min_steps=1, max_steps=4, reduction=2), FakeStudy(table))  # type: ignore[arg-type]


def test_same_seed_same_decisions_other_seed_other_trials() -> None:
    space = hd.GridSpace(x=list(range(20)), lr=[seq.Constant(0.1)])

    def go(seed: int, shuffle: int | None = None) -> tuple[list[object], list[object]]:
        tuner = SHA(space, "score", min_steps=1, max_steps=9, reduction=3, n_trials=9, seed=seed)
        study = run(tuner, FakeStudy(quality, shuffle=shuffle))
        return sorted(study.requests), decisions(tuner)

    first = go(0)
    assert go(0) == first
    assert go(0, shuffle=5) == first  # answers in another order: the same decisions
    other = go(1)
    assert {n for n, s in other[0] if s == 1} != {n for n, s in first[0] if s == 1}
    assert len({n for n, s in first[0] if s == 1}) == 9


def test_a_grid_with_n_trials_none_uses_every_trial_and_a_random_space_samples() -> None:
    grid = hd.GridSpace(x=list(range(6)), lr=[seq.Constant(0.1), seq.Constant(0.2)])
    study = run(SHA(grid, "score", min_steps=1, max_steps=3, reduction=3), FakeStudy(quality))
    assert sum(1 for _, s in study.requests if s == 1) == 12
    space = hd.RandomSpace(x=hd.randint(0, 1000), lr=seq.Constant(0.1), random_state=3)
    study = run(
        SHA(space, "score", min_steps=1, max_steps=3, reduction=3, n_trials=6), FakeStudy(quality)
    )
    assert [n for n, s in study.requests if s == 1] == [name(t) for t in space.sample(6)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_steps": 0, "max_steps": 8}, r"SHA: `min_steps` must be a whole number >= 1, got 0"),
        (
            {"min_steps": 8, "max_steps": 4},
            r"SHA: `max_steps` .* got 4; it must be at least min_steps=8",
        ),
        (
            {"min_steps": 1, "max_steps": 8, "reduction": 1},
            r"SHA: `reduction` .* got 1; e.g. reduction=3",
        ),
        ({"min_steps": 1, "max_steps": 8, "n_trials": 0}, r"SHA: `n_trials` must be .* got 0"),
        ({"min_steps": 1, "max_steps": 8, "seed": -1}, r"SHA: `seed` must be .* got -1"),
        ({"min_steps": 1.5, "max_steps": 8}, r"SHA: `min_steps` .* got 1.5"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(hd.InvalidSpaceError, match=match):
        SHA(trials(4), "score", **kwargs)  # type: ignore[arg-type]


def test_bad_spaces_are_named_when_the_run_starts() -> None:
    with pytest.raises(hd.InvalidSpaceError, match=r"`n_trials` is 5, but the space has only 4"):
        run(SHA(trials(4), "score", min_steps=1, max_steps=2, n_trials=5), FakeStudy(quality))
    with pytest.raises(hd.InvalidSpaceError, match=r"RandomSpace has no fixed size; pass n_trials"):
        run(
            SHA(hd.RandomSpace(x=hd.randint(0, 9)), "score", min_steps=1, max_steps=2),
            FakeStudy(quality),
        )
    with pytest.raises(hd.InvalidSpaceError, match=r"yielded 3, not a hippo_dask.Trial"):
        run(SHA([3], "score", min_steps=1, max_steps=2), FakeStudy(quality))  # type: ignore[list-item]
    assert Decision.PROMOTE.value == "promote"
