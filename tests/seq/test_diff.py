"""first_difference and DifferenceCache: where two sequences stop sharing steps."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hippo_dask import seq
from hippo_dask.seq import DifferenceCache, first_difference


def brute_force(a: seq.Sequence, b: seq.Sequence, stop: int, start: int = 0) -> int | None:
    """The first step in ``[start, stop)`` where the trainer would see different values."""
    for step in range(start, stop):
        x, y = a(step), b(step)
        if type(x) is not type(y) or x != y:
            return step
    return None


# --------------------------------------------------------------------------------------------
# Examples from the design
# --------------------------------------------------------------------------------------------


def test_steplr_with_different_milestones_differs_at_the_first_differing_milestone() -> None:
    a = seq.StepLR(0.1, gamma=0.1, milestones=[90, 135])
    b = seq.StepLR(0.1, gamma=0.1, milestones=[100, 150])
    assert first_difference(a, b, 200) == 90
    assert first_difference(b, a, 200) == 90
    assert first_difference(a, b, 91) == 90
    assert first_difference(a, b, 90) is None
    assert first_difference(a, b, 200, start=95) == 95
    # From 100 on both are at 0.01 again, until a's second milestone.
    assert first_difference(a, b, 200, start=100) == 135
    assert first_difference(a, b, 135, start=100) is None


def test_constant_and_multistep_share_until_the_milestone() -> None:
    a = seq.Constant(0.1)
    b = seq.MultiStep([0.1, 0.01], [50])
    assert first_difference(a, b, 100) == 50
    assert first_difference(b, a, 100) == 50
    assert first_difference(a, b, 50) is None
    assert first_difference(a, b, 51) == 50


def test_values_of_different_kinds_differ_at_once() -> None:
    assert first_difference(seq.Constant(128), seq.Constant(128.0), 10) == 0
    assert first_difference(seq.Constant(128.0), seq.Constant(128), 10) == 0
    assert first_difference(seq.Constant(1), seq.Constant(True), 10) == 0
    assert first_difference(seq.Constant(128), seq.Constant(128.0), 10, start=4) == 4
    assert first_difference(seq.Constant(128), seq.Constant(128.0), 0) is None
    ints = seq.MultiStep([128, 256], [5])
    floats = seq.MultiStep([128.0, 256.0], [5])
    assert first_difference(ints, floats, 10) == 0
    cache = DifferenceCache()
    assert cache(seq.Constant(128), seq.Constant(128.0), 10) == 0
    assert cache(ints, floats, 10) == 0


def test_equal_sequences_never_differ() -> None:
    for s in [
        seq.Constant(0.1),
        seq.StepLR(0.1, 0.1, [30, 45]),
        seq.Exponential(0.1, 0.95),
        seq.Warmup(5, 0.1, then=seq.Cosine(0.1, 50)),
        seq.Piecewise((seq.Constant("sgd"), 5), seq.Constant("adam")),
    ]:
        twin = seq.from_dict(s.to_dict())
        assert first_difference(s, s, 1000) is None
        assert first_difference(s, twin, 1000) is None
        assert DifferenceCache()(s, twin, 1000) is None


def test_differently_written_sequences_with_equal_values_share_everything() -> None:
    pairs = [
        (seq.Constant(0.1), seq.MultiStep([0.1, 0.1], [5])),
        (seq.Constant(0.1), seq.StepLR(0.1, 1.0, [5, 10])),
        (seq.Constant(0.1), seq.Exponential(0.1, 1.0)),
        (seq.Constant(0.1), seq.Linear(0.1, 0.1, 7)),
        (seq.Constant(0.1), seq.Warmup(1, 0.1)),
        (seq.Constant(0.1), seq.Piecewise((seq.Constant(0.1), 5), seq.Constant(0.1))),
        (seq.Linear(0.1, 0.2, 5), seq.Piecewise((seq.Linear(0.1, 0.2, 5), 5), seq.Constant(0.2))),
        (seq.Cosine(0.1, 10), seq.Piecewise((seq.Cosine(0.1, 10), 300), seq.Constant(0.5))),
        (seq.StepLR(0.1, 0.5, [5]), seq.MultiStep([0.1, 0.05], [5])),
    ]
    for a, b in pairs:
        assert first_difference(a, b, 300) is None, (a, b)
        assert first_difference(b, a, 300) is None, (a, b)
        assert brute_force(a, b, 300) is None


def test_horizon_is_respected() -> None:
    a = seq.Exponential(0.1, 1.0)
    b = seq.Piecewise((seq.Constant(0.1), 130), seq.Exponential(0.1, 0.5))
    assert first_difference(a, b, 131) is None
    assert first_difference(a, b, 132) == 131
    assert first_difference(a, b, 10_000) == 131
    assert first_difference(a, b, 0) is None
    assert first_difference(a, b, 10, start=10) is None
    assert first_difference(a, b, 10, start=20) is None
    assert first_difference(seq.Constant(0.1), seq.MultiStep([0.1, 0.2], [500]), 500) is None


@pytest.mark.parametrize("where", [1, 63, 64, 65, 127, 191, 192, 193, 1000, 70_000])
def test_vectorised_fallback_finds_differences_across_chunk_boundaries(where: int) -> None:
    a = seq.Exponential(0.25, 1.0)
    b = seq.Piecewise((seq.Linear(0.25, 0.25, 3), where), seq.Cosine(0.5, 4))
    assert first_difference(a, b, where + 1) == where
    assert first_difference(a, b, where) is None
    assert first_difference(a, b, 200_000) == where
    assert first_difference(a, b, 200_000, start=where // 2) == where


def test_piecewise_constant_fast_path_does_not_walk_every_step() -> None:
    # A billion steps would take minutes per step-wise loop; change points make it instant.
    horizon = 10**9
    began = time.perf_counter()
    assert (
        first_difference(seq.StepLR(0.1, 0.1, [90, 135]), seq.StepLR(0.1, 0.1, [100, 150]), horizon)
        == 90
    )
    assert first_difference(seq.Constant(0.1), seq.MultiStep([0.1, 0.1], [5]), horizon) is None
    assert (
        first_difference(seq.Constant(0.1), seq.MultiStep([0.1, 0.01], [10**8]), horizon) == 10**8
    )
    a = seq.Piecewise((seq.Constant(0.1), 1000), seq.StepLR(0.1, 0.5, [10**6]))
    b = seq.Piecewise((seq.MultiStep([0.1, 0.1], [10]), 1000), seq.StepLR(0.1, 0.5, [10**6 + 1]))
    assert first_difference(a, b, horizon) == 1000 + 10**6
    assert time.perf_counter() - began < 2.0


def test_mixed_pairs_use_the_vectorised_path() -> None:
    # One side piecewise constant, the other smooth.
    a = seq.Constant(0.1)
    b = seq.Warmup(3, 0.1)
    assert first_difference(a, b, 100) == 0
    assert first_difference(a, seq.Cosine(0.1, 10), 100) == 1
    assert first_difference(seq.Cosine(0.1, 10), a, 100) == 1


# --------------------------------------------------------------------------------------------
# DifferenceCache
# --------------------------------------------------------------------------------------------


def test_difference_cache_examples() -> None:
    cache = DifferenceCache()
    a = seq.StepLR(0.1, gamma=0.1, milestones=[90, 135])
    b = seq.StepLR(0.1, gamma=0.1, milestones=[100, 150])
    assert cache(a, b, 50) is None
    assert cache(a, b, 90) is None
    assert cache(a, b, 200) == 90
    assert cache(a, b, 60) is None
    assert cache(a, b, 91) == 90
    assert cache(a, b, 200) == 90
    assert cache(b, a, 1000) == 90
    assert cache(a, a, 1000) is None
    assert cache(a, seq.from_dict(a.to_dict()), 1000) is None


def test_difference_cache_extends_a_known_horizon() -> None:
    cache = DifferenceCache()
    a = seq.Exponential(0.1, 1.0)
    b = seq.Piecewise((seq.Constant(0.1), 300), seq.Exponential(0.1, 0.9))
    for stop in (10, 100, 250, 300, 301):
        assert cache(a, b, stop) is None
    assert cache(a, b, 302) == 301
    assert cache(a, b, 5) is None
    assert cache(a, b, 10**6) == 301


# --------------------------------------------------------------------------------------------
# Property tests against a per-step loop
# --------------------------------------------------------------------------------------------

V0 = st.sampled_from([0.1, 0.01])
MILESTONES = st.sampled_from([[], [5], [10], [5, 10], [3, 5, 8], [63], [64], [65, 130]])
FLOAT_LEVELS = st.sampled_from([0.1, 0.01, 0.05])
INT_LEVELS = st.sampled_from([128, 256])


@st.composite
def multistep(draw: Any, levels: st.SearchStrategy[Any]) -> seq.Sequence:
    marks = draw(MILESTONES)
    values = [draw(levels) for _ in range(len(marks) + 1)]
    return seq.MultiStep(values, marks)


FLOAT_SIMPLE = st.one_of(
    st.builds(seq.Constant, st.sampled_from([0.1, 0.01, 0.05])),
    multistep(FLOAT_LEVELS),
    st.builds(seq.StepLR, V0, st.sampled_from([0.1, 0.5, 1.0]), MILESTONES),
    st.builds(seq.Exponential, V0, st.sampled_from([1.0, 0.5])),
    st.builds(seq.Linear, V0, V0, st.sampled_from([1, 5, 10])),
    st.builds(seq.Cosine, st.just(0.1), st.sampled_from([5, 10]), st.sampled_from([0.0, 0.1])),
    st.builds(
        seq.CosineWarmRestarts, st.just(0.1), st.sampled_from([3, 5]), st.sampled_from([1, 2])
    ),
    st.builds(seq.Cyclic, V0, V0, st.sampled_from([2, 5])),
)
FLOAT_SEQUENCES = st.one_of(
    FLOAT_SIMPLE,
    st.builds(seq.Warmup, st.sampled_from([1, 3]), V0, FLOAT_SIMPLE),
    st.builds(
        lambda first, n, last: seq.Piecewise((first, n), last),
        FLOAT_SIMPLE,
        st.sampled_from([3, 5, 10, 64]),
        FLOAT_SIMPLE,
    ),
)
INT_SIMPLE = st.one_of(st.builds(seq.Constant, INT_LEVELS), multistep(INT_LEVELS))
INT_SEQUENCES = st.one_of(
    INT_SIMPLE,
    st.builds(
        lambda first, n, last: seq.Piecewise((first, n), last),
        INT_SIMPLE,
        st.sampled_from([3, 5, 64]),
        INT_SIMPLE,
    ),
)
OTHER_SEQUENCES = st.one_of(
    st.builds(seq.Constant, st.sampled_from([128.0, 1, True, "sgd"])),
    multistep(st.sampled_from(["sgd", "adam"])),
)
# Numerically equal in Python (128 == 128.0 == ..., 1 == 1.0 == True) but of different kinds.
KIND_TWINS = st.one_of(
    st.builds(seq.Constant, st.sampled_from([128, 128.0, 1, 1.0, True])),
    st.builds(
        seq.MultiStep,
        st.sampled_from([[128, 256], [128.0, 256.0], [1, 0], [True, False]]),
        st.just([5]),
    ),
    st.builds(
        lambda value: seq.Piecewise((seq.Constant(value), 3), seq.Constant(value)),
        st.sampled_from([1, 1.0, True]),
    ),
)
SEQUENCES = st.one_of(FLOAT_SEQUENCES, INT_SEQUENCES, OTHER_SEQUENCES, KIND_TWINS)
# Pairs of the same kind most of the time, so that equal prefixes actually happen.
PAIRS = st.one_of(
    st.tuples(FLOAT_SEQUENCES, FLOAT_SEQUENCES),
    st.tuples(FLOAT_SEQUENCES, FLOAT_SEQUENCES),
    st.tuples(INT_SEQUENCES, INT_SEQUENCES),
    st.tuples(SEQUENCES, SEQUENCES),
    st.tuples(KIND_TWINS, KIND_TWINS),
)
STOPS = st.sampled_from([0, 1, 4, 5, 6, 10, 11, 30, 64, 65, 140, 200])


@settings(max_examples=200, deadline=None)
@given(pair=PAIRS, stop=STOPS)
def test_first_difference_matches_a_per_step_loop(
    pair: tuple[seq.Sequence, seq.Sequence], stop: int
) -> None:
    a, b = pair
    expected = brute_force(a, b, stop)
    assert first_difference(a, b, stop) == expected
    assert first_difference(b, a, stop) == expected


@settings(max_examples=200, deadline=None)
@given(pair=PAIRS, stop=STOPS, data=st.data())
def test_first_difference_from_a_start_matches_a_per_step_loop(
    pair: tuple[seq.Sequence, seq.Sequence], stop: int, data: st.DataObject
) -> None:
    a, b = pair
    start = data.draw(st.integers(0, stop + 2), label="start")
    assert first_difference(a, b, stop, start=start) == brute_force(a, b, stop, start=start)


@settings(max_examples=200, deadline=None)
@given(pair=PAIRS, stops=st.lists(STOPS, min_size=1, max_size=8))
def test_difference_cache_matches_a_per_step_loop(
    pair: tuple[seq.Sequence, seq.Sequence], stops: list[int]
) -> None:
    a, b = pair
    cache = DifferenceCache()
    first = brute_force(a, b, max(stops))
    for stop in stops + sorted(stops) + sorted(stops, reverse=True):
        expected = first if first is not None and first < stop else None
        assert cache(a, b, stop) == expected, (stop, stops)
        assert cache(b, a, stop) == expected, (stop, stops)


@settings(max_examples=200, deadline=None)
@given(s=SEQUENCES, stop=STOPS)
def test_change_points_cover_every_change(s: seq.Sequence, stop: int) -> None:
    if not isinstance(s, seq.PiecewiseConstant):
        return
    points = s.change_points(stop)
    if points is None:
        return
    assert points.dtype.kind == "i"
    assert all(0 < p < stop for p in points.tolist())
    values = s.values(0, stop)
    changes = [i for i in range(1, stop) if values[i] != values[i - 1]]
    assert set(changes) <= set(points.tolist())


def test_piecewise_constant_families_expose_change_points() -> None:
    for s in [seq.Constant(0.1), seq.MultiStep([1, 2], [3]), seq.StepLR(0.1, 0.1, [3])]:
        assert isinstance(s, seq.PiecewiseConstant)
    for s in [
        seq.Exponential(0.1, 0.9),
        seq.Cosine(0.1, 3),
        seq.Warmup(3, 0.1),
        seq.Linear(0.1, 0.2, 3),
    ]:
        assert not isinstance(s, seq.PiecewiseConstant)
    assert np.asarray(seq.Constant(0.1).change_points(100)).size == 0
