"""Median stopping against a fake study: Vizier's rule replayed by hand."""

from __future__ import annotations

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.tuners import MedianStopping
from tests.tuners.fake import FakeStudy, decisions, failure, name, run, trials

# Scores at steps 10, 20, 30, 40 of trials a..e (x = 0..4).
CURVES = {
    0: [0.1, 0.2, 0.3, 0.4],
    1: [0.5, 0.6, 0.7, 0.8],
    2: [0.3, 0.4, 0.5, 0.6],
    3: [0.45, 0.1, 0.1, 0.1],
    4: [0.2, 0.2, 0.2, 0.2],
}


def curve(trial: hd.Trial, steps: int) -> float:
    return CURVES[name(trial)][steps // 10 - 1]


def median(**kwargs: object) -> MedianStopping:
    options: dict[str, object] = {"steps": 40, "grace_steps": 20, "interval": 10, "min_trials": 2}
    options.update(kwargs)
    return MedianStopping(trials(5), "score", **options)  # type: ignore[arg-type]


def test_the_rule_replayed_by_hand() -> None:
    tuner = median()
    study = run(tuner, FakeStudy(curve))
    # Step 20: running averages a .15, b .55, c .35, d .275, e .2. a's best (.2) < median of the
    # others' (.3125): stop; e likewise (.2 < .3125). d's best .45 > .275: it continues.
    # Step 30: b, c, d left; d's best .45 < median(.6, .4) = .5: stop.
    assert decisions(tuner) == [
        (0, 20, "stop"),
        (1, 20, "continue"),
        (2, 20, "continue"),
        (3, 20, "continue"),
        (4, 20, "stop"),
        (1, 30, "continue"),
        (2, 30, "continue"),
        (3, 30, "stop"),
    ]
    assert study.requests == [(x, 10) for x in range(5)] + [(x, 20) for x in range(5)] + [
        (1, 30),
        (2, 30),
        (3, 30),
        (1, 40),
        (2, 40),
    ]
    assert [tuner.trial_status(t) for t in trials(5)] == [
        "stopped",
        None,
        None,
        "stopped",
        "stopped",
    ]


def test_mode_min_makes_the_same_decisions_on_the_negated_metric() -> None:
    tuner = median(mode="min")
    run(tuner, FakeStudy(lambda t, s: -curve(t, s)))
    assert decisions(tuner) == decisions(run_and_return(median()))


def run_and_return(tuner: MedianStopping) -> MedianStopping:
    run(tuner, FakeStudy(curve))
    return tuner


def test_grace_and_min_trials_hold_decisions_back() -> None:
    tuner = run_and_return(median(grace_steps=30))
    assert [s for _, s, _ in decisions(tuner)] == [30] * 5
    tuner = run_and_return(median(min_trials=5))  # only 4 others ever: never stops
    assert all(d == "continue" for _, _, d in decisions(tuner))
    assert tuner.stopped() == set()


def test_failed_and_nan_trials_count_as_the_worst_and_never_crash() -> None:
    def table(trial: hd.Trial, steps: int) -> object:
        if name(trial) == 0 and steps >= 20:
            return failure()
        if name(trial) == 4:
            return float("nan")
        return curve(trial, steps)

    tuner = median()
    study = run(tuner, FakeStudy(table, shuffle=2))  # type: ignore[arg-type]
    at_20 = {n: d for n, s, d in decisions(tuner) if s == 20}
    assert 0 not in at_20 and at_20[4] == "stop"  # failed: the study's; NaN: the worst
    assert (0, 30) not in study.requests and (4, 30) not in study.requests


def test_the_last_increment_may_be_shorter() -> None:
    tuner = MedianStopping(trials(3), "score", steps=25, grace_steps=0, interval=10)
    assert tuner.points == [10, 20, 25]
    study = run(tuner, FakeStudy(lambda t, s: 1.0))
    assert sorted({s for _, s in study.requests}) == [10, 20, 25]


def test_a_grid_sample_follows_the_seed() -> None:
    space = hd.GridSpace(x=list(range(10)), lr=[seq.Constant(0.1)])

    def chosen(seed: int) -> set[int]:
        tuner = MedianStopping(
            space, "score", steps=10, grace_steps=5, interval=5, n_trials=4, seed=seed
        )
        return {n for n, s in run(tuner, FakeStudy(lambda t, s: 1.0)).requests}

    assert chosen(0) == chosen(0) and chosen(0) != chosen(1) and len(chosen(0)) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 50}, r"`interval` is 50, more than steps=40, .*pass interval <= 40"),
        (
            {"grace_steps": 40},
            r"`grace_steps` is 40, but trials end at steps=40, .*grace_steps < 40",
        ),
        ({"grace_steps": -1}, r"`grace_steps` must be a whole number >= 0, got -1"),
        ({"interval": 0}, r"`interval` must be a whole number >= 1, got 0"),
        ({"min_trials": 0}, r"`min_trials` must be a whole number >= 1, got 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(hd.InvalidSpaceError, match="MedianStopping: " + match):
        median(**kwargs)
