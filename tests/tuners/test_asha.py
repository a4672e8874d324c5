"""ASHA's decisions against a fake study: Algorithm 2 replayed by hand, order independence,
the end of a finite run, failures."""

from __future__ import annotations

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.tuners import ASHA
from tests.tuners.fake import FakeStudy, decisions, failure, name, run, trials

NAN = float("nan")
Q = {0: 0.5, 1: 0.9, 2: 0.1, 3: 0.7}


def by_name(table: dict[int, object]) -> object:
    return lambda trial, steps: table[name(trial)]


def asha(n: int, **kwargs: object) -> ASHA:
    options: dict[str, object] = {"min_steps": 1, "max_steps": 4, "reduction": 2, "n_trials": n}
    options.update(kwargs)
    return ASHA(trials(n), "score", **options)  # type: ignore[arg-type]


def test_one_at_a_time_promotes_without_waiting_for_the_rung_to_fill() -> None:
    tuner = asha(4, max_concurrent=1)
    study = run(tuner, FakeStudy(by_name(Q)))  # type: ignore[arg-type]
    # After two results the better one (1) is promoted before trial 2 even starts; d (3) once
    # it is in the top half of four; then 1 again, from rung 1 (top rungs are looked at first).
    assert study.requests == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1), (3, 2), (1, 4)]
    assert decisions(tuner) == [
        (1, 1, "promote"),
        (3, 1, "promote"),
        (1, 2, "promote"),
        (0, 1, "stop"),
        (2, 1, "stop"),
        (3, 2, "stop"),
    ]
    assert [tuner.trial_status(t) for t in trials(4)] == ["stopped", None, "stopped", "stopped"]


def test_two_slots_act_in_equal_step_time_order() -> None:
    """Jobs cost the steps they add (1, 1, 2 for rungs 1, 2, 4) on two virtual workers."""
    for shuffle in (None, 1, 2):
        tuner = asha(4, max_concurrent=2)
        study = run(tuner, FakeStudy(by_name(Q), shuffle=shuffle))  # type: ignore[arg-type]
        assert study.requests == [(0, 1), (1, 1), (2, 1), (1, 2), (3, 1), (3, 2), (1, 4)]
        assert decisions(tuner) == [
            (1, 1, "promote"),
            (3, 1, "promote"),
            (1, 2, "promote"),
            (0, 1, "stop"),
            (2, 1, "stop"),
            (3, 2, "stop"),
        ]
    assert study.peak == 2


def scrambled(trial: hd.Trial, steps: int) -> float:
    """A metric whose ranking of trials is unrelated to their order, rising with steps."""
    return ((name(trial) * 7919) % 101) / 100 + steps / 1000


@pytest.mark.parametrize("shuffle", range(6))
def test_decisions_do_not_depend_on_which_request_finishes_first(shuffle: int) -> None:
    reference = asha(40, max_steps=27, reduction=3, max_concurrent=5)
    first = run(reference, FakeStudy(scrambled))
    tuner = asha(40, max_steps=27, reduction=3, max_concurrent=5)
    study = run(tuner, FakeStudy(scrambled, shuffle=shuffle))
    assert study.answered != first.answered  # really another order of completions
    assert study.requests == first.requests and decisions(tuner) == decisions(reference)
    assert study.peak == 5
    # Every trial starts; by the end each rung has promoted at least its top third (ASHA
    # may promote more: a trial in the top third of a rung's first results stays promoted).
    per_rung = [sum(1 for _, s in study.requests if s == r) for r in (1, 3, 9, 27)]
    assert per_rung[0] == 40
    for below, above in zip(per_rung, per_rung[1:]):
        assert below // 3 <= above < below


def test_no_cap_by_default_every_trial_starts_at_once() -> None:
    # The order assumes a worker per trial: the four bottom-rung results come first (in start
    # order), then the two promotions to rung 2, then the one to rung 4.
    for shuffle in (None, 0, 1, 2):
        tuner = asha(4)
        assert tuner.max_concurrent is None
        study = run(tuner, FakeStudy(by_name(Q), shuffle=shuffle))  # type: ignore[arg-type]
        assert study.requests == [(0, 1), (1, 1), (2, 1), (3, 1), (1, 2), (3, 2), (1, 4)]
        assert decisions(tuner) == [
            (1, 1, "promote"),
            (3, 1, "promote"),
            (1, 2, "promote"),
            (0, 1, "stop"),
            (2, 1, "stop"),
            (3, 2, "stop"),
        ]
        if shuffle is not None:  # requests wait to be answered: all four at once
            assert study.peak == 4


@pytest.mark.parametrize("shuffle", range(4))
def test_no_cap_decides_as_a_cap_of_n_trials_whatever_finishes_first(shuffle: int) -> None:
    reference = asha(40, max_steps=27, reduction=3, max_concurrent=40)
    first = run(reference, FakeStudy(scrambled))
    tuner = asha(40, max_steps=27, reduction=3)
    study = run(tuner, FakeStudy(scrambled, shuffle=shuffle))
    assert study.answered != first.answered
    assert study.requests == first.requests and decisions(tuner) == decisions(reference)
    assert study.peak == 40  # every trial in flight, not the old fixed 8
    assert study.requests[:40] == [(i, 1) for i in range(40)]


def test_a_finite_run_ends_with_a_trial_at_max_steps() -> None:
    # Two trials, eta = 4: no rung ever holds four results, yet the best goes to the top.
    tuner = asha(2, max_steps=16, reduction=4)
    study = run(tuner, FakeStudy(by_name({0: 0.3, 1: 0.6})))  # type: ignore[arg-type]
    assert study.requests == [(0, 1), (1, 1), (1, 4), (1, 16)]
    assert decisions(tuner) == [(1, 1, "promote"), (1, 4, "promote"), (0, 1, "stop")]
    # Diverged trials are not worth finishing: all NaN stops at the bottom rung.
    tuner = asha(3, max_steps=16, reduction=4)
    study = run(tuner, FakeStudy(lambda t, s: NAN))
    assert [s for _, s in study.requests] == [1, 1, 1] and tuner.stopped() == {
        t.id for t in trials(3)
    }


def test_failed_trials_rank_worst_and_are_never_promoted() -> None:
    table = {0: failure(), 1: 0.9, 2: 0.5, 3: 0.7}
    tuner = asha(4, max_steps=2, max_concurrent=1)
    study = run(tuner, FakeStudy(by_name(table)))  # type: ignore[arg-type]
    assert study.requests == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
    assert decisions(tuner) == [(1, 1, "promote"), (3, 1, "promote"), (2, 1, "stop")]

    # Failing on promotion: the failure counts in its rung, the rung below goes on.
    def on_promotion(trial: hd.Trial, steps: int) -> object:
        return failure() if name(trial) == 1 and steps > 1 else Q[name(trial)]

    tuner = asha(4, max_steps=2, max_concurrent=1)
    study = run(tuner, FakeStudy(on_promotion))  # type: ignore[arg-type]
    assert study.requests == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
    assert tuner.trial_status(trials(4)[3]) is None  # finished
    assert tuner.trial_status(trials(4)[1]) is None  # failed: the study says so


def test_an_error_that_stops_the_study_propagates_and_cancels_the_rest() -> None:
    def table(trial: hd.Trial, steps: int) -> object:
        return hd.StorageError("storage unreachable") if name(trial) == 3 else 0.5

    study = FakeStudy(table, shuffle=0)  # type: ignore[arg-type]
    with pytest.raises(hd.StorageError, match="unreachable"):
        run(asha(12, max_concurrent=4), study)
    assert study.in_flight == 0


def test_same_seed_same_decisions_other_seed_other_trials() -> None:
    space = hd.GridSpace(x=list(range(30)), lr=[seq.Constant(0.1)])

    def go(seed: int) -> tuple[list[object], list[object]]:
        tuner = ASHA(space, "score", min_steps=1, max_steps=9, reduction=3, n_trials=12, seed=seed)
        study = run(tuner, FakeStudy(lambda t, s: (name(t) * 13) % 30 + s))
        return study.requests, decisions(tuner)

    assert go(4) == go(4)
    assert {n for n, s in go(4)[0]} != {n for n, s in go(5)[0]}


def test_mode_min_promotes_the_lowest() -> None:
    study = run(asha(4, max_concurrent=1, mode="min"), FakeStudy(by_name(Q)))  # type: ignore[arg-type]
    assert study.requests[:3] == [(0, 1), (1, 1), (0, 2)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"max_concurrent": 0},
            r"ASHA: `max_concurrent` must be a whole number >= 1, got 0; use None \(no cap",
        ),
        ({"n_trials": -2}, r"ASHA: `n_trials` must be a whole number >= 1, got -2"),
        ({"reduction": 1}, r"ASHA: `reduction` .* got 1"),
        (
            {"min_steps": 5, "max_steps": 4},
            r"ASHA: `max_steps` .* got 4; it must be at least min_steps=5",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(hd.InvalidSpaceError, match=match):
        asha(4, **kwargs)
    with pytest.raises(hd.InvalidSpaceError, match="`mode` must be 'max' or 'min'"):
        asha(4, mode="maximum")
