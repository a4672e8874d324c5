"""Hyperband against a fake study: the paper's brackets, run side by side, decided per bracket."""

from __future__ import annotations

from collections import Counter

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.tuners import Hyperband
from tests.tuners.fake import FakeStudy, decisions, failure, name, run, trials


def quality(trial: hd.Trial, steps: int) -> float:
    return float(trial.fixed["q"]) + steps / 1000


def test_r81_eta3_trains_the_papers_brackets() -> None:
    space = hd.RandomSpace(x=hd.randint(0, 10**9), q=hd.uniform(0, 1), random_state=0)
    tuner = Hyperband(space, "score", max_steps=81, reduction=3)
    assert [bracket[0][0] for bracket in tuner.brackets] == [81, 34, 15, 8, 5]
    study = run(tuner, FakeStudy(quality, shuffle=0))
    # Table 1 summed over brackets: 81 at 1; 27 + 34 at 3; 9 + 11 + 15 at 9; ...
    assert Counter(s for _, s in study.requests) == {
        1: 81,
        3: 27 + 34,
        9: 9 + 11 + 15,
        27: 3 + 3 + 5 + 8,
        81: 1 + 1 + 1 + 2 + 5,
    }
    # One RandomSpace draw of 143 trials, split into brackets in order.
    drawn = space.sample(143)
    assert [n for n, s in study.requests if s == 1] == [name(t) for t in drawn[:81]]
    assert {n for n, s in study.requests if s == 81} >= {name(t) for t in drawn[138:]}
    # Each bracket keeps its own best: bracket s = 4 sends the best of its 81 to 81 steps.
    best_of_first = max(drawn[:81], key=lambda t: t.fixed["q"])
    assert (name(best_of_first), 81) in study.requests
    assert len(tuner.stopped()) == 143 - 10


def test_brackets_run_side_by_side_and_decide_alone() -> None:
    space = hd.GridSpace(x=list(range(12)), q=[0.0], lr=[seq.Constant(0.1)])
    table = lambda t, s: (name(t) * 5) % 12 + s / 100  # noqa: E731
    tuner = Hyperband(space, "score", max_steps=27, min_steps=3, reduction=3, seed=1)
    assert tuner.brackets == [[(9, 3), (3, 9), (1, 27)], [(5, 9), (1, 27)], [(3, 27)]]
    study = run(tuner, FakeStudy(table))
    # The first requests of every bracket go out before any result is in.
    assert [s for _, s in study.requests[:17]] == [3] * 9 + [9] * 5 + [27] * 3
    same = Hyperband(space, "score", max_steps=27, min_steps=3, reduction=3, seed=1)
    shuffled = run(same, FakeStudy(table, shuffle=3))
    assert decisions(same) == decisions(tuner)  # bracket by bracket, whatever the timing
    assert sorted(shuffled.requests) == sorted(study.requests)
    other = Hyperband(space, "score", max_steps=27, min_steps=3, reduction=3, seed=2)
    run(other, FakeStudy(table))
    assert decisions(other) != decisions(tuner)


def test_a_trial_finished_in_one_bracket_is_not_stopped_by_another() -> None:
    # Three trials; bracket s=1 holds all three, bracket s=0 two of them, trained to the end.
    space = [hd.Trial(x=i, q=q) for i, q in enumerate([0.1, 0.9, 0.5])]
    tuner = Hyperband(space, "score", max_steps=3, reduction=3)
    assert tuner.brackets == [[(3, 1), (1, 3)], [(2, 3)]]
    study = run(tuner, FakeStudy(quality))
    finished = {n for n, s in study.requests if s == 3}
    assert 1 in finished and len(finished) >= 2
    for trial in space:
        expected = None if name(trial) in finished else "stopped"
        assert tuner.trial_status(trial) == expected
    assert {n for n, s, d in decisions(tuner) if d == "stop"} == {0, 2}  # in bracket s=1


def test_failures_do_not_stop_the_other_brackets() -> None:
    space = hd.RandomSpace(x=hd.randint(0, 10**9), q=hd.uniform(0, 1), random_state=1)
    table = lambda t, s: failure() if t.fixed["q"] > 0.8 else quality(t, s)  # noqa: E731
    tuner = Hyperband(space, "score", max_steps=9, reduction=3)
    study = run(tuner, FakeStudy(table))  # type: ignore[arg-type]
    assert all(t.fixed["q"] <= 0.8 for t in (r.trial for r in tuner.decisions))
    assert sum(1 for _, s in study.requests if s == 9) >= 3


def test_a_space_smaller_than_the_first_bracket_is_refused_with_the_fix() -> None:
    with pytest.raises(
        hd.InvalidSpaceError,
        match=r"first bracket starts 81 trials, but the space has only 12; use a "
        r"RandomSpace",
    ):
        Hyperband(hd.GridSpace(x=list(range(12))), "score", max_steps=81)
    with pytest.raises(hd.InvalidSpaceError, match=r"only 2"):
        run(Hyperband(iter(trials(2)), "score", max_steps=9), FakeStudy(quality))
    with pytest.raises(
        hd.InvalidSpaceError, match=r"Hyperband: `max_steps` .* got 2; it must be at least"
    ):
        Hyperband(trials(9), "score", max_steps=2, min_steps=3)
