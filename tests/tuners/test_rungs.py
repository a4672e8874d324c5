"""Rung, bracket and stopping arithmetic against the papers' tables and hand-made rungs."""

from __future__ import annotations

import math

import pytest

import hippo_dask as hd
from hippo_dask.tuners._rungs import (
    Decision,
    asha_next_promotion,
    asha_promotable,
    hyperband_brackets,
    median_stop,
    rung_steps,
    sha_rung_sizes,
    top_k,
)

NAN = float("nan")
INF = float("inf")


# -- successive halving (Jamieson & Talwalkar 2016; n_i = floor(n eta^-i) as in Li et al. 2018) --


@pytest.mark.parametrize(
    ("low", "high", "eta", "rungs"),
    [
        (1, 81, 3, [1, 3, 9, 27, 81]),
        (25, 200, 2, [25, 50, 100, 200]),
        (10, 160, 4, [10, 40, 160]),
        (5, 5, 3, [5]),
        (10, 100, 3, [10, 30, 90, 100]),  # max_steps off the ladder: an extra, shorter last step
        (10, 89, 3, [10, 30, 89]),
    ],
)
def test_rung_steps(low: int, high: int, eta: int, rungs: list[int]) -> None:
    assert rung_steps(low, high, eta) == rungs


@pytest.mark.parametrize(
    ("n", "eta", "count", "sizes"),
    [
        (81, 3, 5, [81, 27, 9, 3, 1]),  # Hyperband Table 1, s = 4
        (34, 3, 4, [34, 11, 3, 1]),  # s = 3
        (15, 3, 3, [15, 5, 1]),  # s = 2
        (8, 3, 2, [8, 2]),  # s = 1
        (5, 3, 1, [5]),  # s = 0
        (64, 2, 7, [64, 32, 16, 8, 4, 2, 1]),  # halving: n, n/2, ..., 1
        (16, 4, 3, [16, 4, 1]),
        (10, 3, 4, [10, 3, 1, 1]),  # at least one keeps going
    ],
)
def test_sha_rung_sizes_are_the_published_ones(
    n: int, eta: int, count: int, sizes: list[int]
) -> None:
    assert sha_rung_sizes(n, eta, count) == sizes
    # The same as halving the rung below each time: floor(floor(n/a)/b) == floor(n/(ab)).
    for below, above in zip(sizes, sizes[1:]):
        assert above == max(1, below // eta)


def test_top_k_breaks_ties_by_arrival_and_ranks_non_finite_last() -> None:
    assert top_k([0.5, 0.9, 0.9, NAN, 0.1], 3) == [1, 2, 0]
    assert top_k([1.0, 1.0, 1.0], 2) == [0, 1]
    assert top_k([NAN, -INF, INF, -5.0], 4) == [3, 0, 1, 2]  # +inf is not finite either
    assert top_k([0.3, 0.2], 0) == [] and top_k([0.3], 5) == [0] and top_k([], 2) == []


# -- ASHA (Li et al. 2020, Algorithm 2, get_job) ---------------------------------------------------


def test_asha_promotes_from_the_top_of_what_a_rung_holds_so_far() -> None:
    rung = [("a", 0.2), ("b", 0.9), ("c", 0.5), ("d", 0.7), ("e", 0.1), ("f", 0.8)]
    # eta = 3: the rung holds 6, so its best 2 are candidates: b, then f.
    assert asha_promotable(rung, set(), 3) == ["b", "f"]
    assert asha_promotable(rung, {"b"}, 3) == ["f"]
    assert asha_promotable(rung, {"b", "f"}, 3) == []  # d is third: not in the top 6 // 3
    # Fewer than eta results: nobody is promotable yet (the rung does not wait to fill, it
    # just has no top third).
    assert asha_promotable(rung[:2], set(), 3) == []
    assert asha_promotable(rung[:3], set(), 3) == ["b"]
    # Ties: the earlier arrival first.
    assert asha_promotable([("x", 0.5), ("y", 0.5), ("z", 0.1), ("w", 0.5)], set(), 2) == ["x", "y"]
    # A NaN never outranks a finite score.
    assert asha_promotable([("x", NAN), ("y", 0.0), ("z", NAN)], set(), 3) == ["y"]


def test_asha_get_job_looks_at_the_highest_rung_first() -> None:
    rungs = [
        [("a", 0.1), ("b", 0.9), ("c", 0.5), ("d", 0.7)],  # rung 0: top 2 of 4 = b, d
        [("b", 0.8), ("d", 0.6)],  # rung 1: top 1 of 2 = b
        [],  # top rung
    ]
    assert asha_next_promotion(rungs, [{"b"}, set(), set()], 2) == ("b", 1)
    assert asha_next_promotion(rungs, [{"b", "d"}, {"b"}, set()], 2) is None  # grow bottom rung
    assert asha_next_promotion(rungs, [set(), {"b"}, set()], 2) == ("b", 0)
    assert asha_next_promotion(rungs, [{"b"}, {"b"}, set()], 2) == ("d", 0)
    # The top rung never promotes, however full.
    top = [[], [], [("a", 1.0), ("b", 2.0), ("c", 3.0)]]
    assert asha_next_promotion(top, [set(), set(), set()], 2) is None


def test_asha_rule_replayed_by_hand_for_a_growing_bottom_rung() -> None:
    """eta = 2, results arriving one at a time: promotions happen as soon as a rung's top half
    holds an unpromoted trial, without waiting for the rung to fill."""
    arrivals = [("a", 0.5), ("b", 0.9), ("c", 0.1), ("d", 0.7), ("e", 0.8), ("f", 0.95)]
    rung: list[tuple[str, float]] = []
    promoted: set[str] = set()
    out = []
    for arrival in arrivals:
        rung.append(arrival)
        found = asha_next_promotion([rung, []], [promoted, set()], 2)
        while found is not None:
            promoted.add(found[0])
            out.append((len(rung), found[0]))
            found = asha_next_promotion([rung, []], [promoted, set()], 2)
    # 2 results: top 1 = b. 4: top 2 = b, d -> d. 5: top 2 = b, e -> e. 6: top 3 = f, b, e -> f.
    assert out == [(2, "b"), (4, "d"), (5, "e"), (6, "f")]


# -- Hyperband (Li et al. 2018, Algorithm 1 and Table 1) ----------------------------------------


def test_hyperband_brackets_are_table_1_of_the_paper() -> None:
    assert hyperband_brackets(81, 3) == [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],  # s = 4
        [(34, 3), (11, 9), (3, 27), (1, 81)],  # s = 3
        [(15, 9), (5, 27), (1, 81)],  # s = 2
        [(8, 27), (2, 81)],  # s = 1
        [(5, 81)],  # s = 0
    ]
    assert [b[0][0] for b in hyperband_brackets(81, 3)] == [81, 34, 15, 8, 5]


def test_hyperband_brackets_follow_the_formulas() -> None:
    for high, eta, low in [
        (81, 3, 1),
        (243, 3, 3),
        (64, 2, 1),
        (100, 3, 1),
        (256, 4, 4),
        (27, 3, 3),
        (5, 3, 5),
    ]:
        brackets = hyperband_brackets(high, eta, low)
        s_max = math.floor(math.log(high / low, eta) + 1e-9)
        assert len(brackets) == s_max + 1
        for s, bracket in zip(range(s_max, -1, -1), brackets):
            n = math.ceil((s_max + 1) / (s + 1) * eta**s - 1e-9)
            assert [size for size, _ in bracket] == [n // eta**i for i in range(s + 1)]
            steps = [r for _, r in bracket]
            assert steps[-1] == high and steps[0] >= low and steps == sorted(steps)
            if high == low * eta**s_max:  # exact powers: r_i = R eta^(i - s) exactly
                assert steps == [low * eta ** (s_max - s + i) for i in range(s + 1)]
    assert hyperband_brackets(27, 3, 3) == [[(9, 3), (3, 9), (1, 27)], [(5, 9), (1, 27)], [(3, 27)]]
    assert hyperband_brackets(5, 3, 5) == [[(1, 5)]]


# -- Median stopping (Golovin et al. 2017, section 3.2.2) ------------------------------------------


def test_median_stop_compares_best_so_far_with_the_median_of_running_averages() -> None:
    others = [[0.4, 0.6], [0.5, 0.7], [0.1, 0.2]]  # running averages 0.5, 0.6, 0.15
    assert median_stop([0.2, 0.3], others) is Decision.STOP  # best 0.3 < median 0.5
    assert median_stop([0.2, 0.5], others) is Decision.CONTINUE  # not strictly worse
    assert median_stop([0.6, 0.1], others) is Decision.CONTINUE  # its *best* counts
    # Even count: the mean of the middle two (0.15, 0.5, 0.6, 0.8 -> 0.55).
    assert median_stop([0.54], [[0.4, 0.6], [0.5, 0.7], [0.1, 0.2], [0.8, 0.8]]) is Decision.STOP
    assert (
        median_stop([0.55], [[0.4, 0.6], [0.5, 0.7], [0.1, 0.2], [0.8, 0.8]]) is Decision.CONTINUE
    )


def test_median_stop_needs_min_trials_and_ranks_non_finite_worst() -> None:
    assert median_stop([0.0], [[1.0], [1.0]], min_trials=3) is Decision.CONTINUE
    assert median_stop([0.0], [[1.0], [1.0]], min_trials=2) is Decision.STOP
    assert median_stop([NAN, NAN], [[0.1, 0.1]] * 3) is Decision.STOP
    # A peer with a NaN somewhere averages -inf: it lowers the median.
    assert median_stop([0.0], [[NAN], [-INF], [1.0]]) is Decision.CONTINUE
    assert median_stop([-1.0], [[NAN], [-INF], [-INF]]) is Decision.CONTINUE  # median -inf
    assert median_stop([], [[1.0]] * 3) is Decision.CONTINUE


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rung_steps(0, 10, 2), r"`min_steps` must be a whole number >= 1, got 0"),
        (lambda: rung_steps(10, 5, 2), r"`max_steps` must be a whole number >= 10, got 5"),
        (lambda: rung_steps(1, 10, 1), r"`reduction` must be a whole number >= 2, got 1"),
        (lambda: rung_steps(1, 10, 2.5), r"`reduction` must be a whole number >= 2, got 2.5"),
        (lambda: sha_rung_sizes(0, 3, 2), r"`n` must be a whole number >= 1, got 0"),
        (lambda: hyperband_brackets(81, 1), r"`reduction` must be a whole number >= 2, got 1"),
        (
            lambda: hyperband_brackets(81, 3, True),
            r"`min_steps` must be a whole number >= 1, got True",
        ),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(call: object, match: str) -> None:
    with pytest.raises(hd.InvalidSpaceError, match=match):
        call()  # type: ignore[operator]
