"""Warmup and Piecewise: sequences built from other sequences."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from hippo_dask import seq, space
from hippo_dask.errors import InvalidSequenceError

# --------------------------------------------------------------------------------------------
# Warmup
# --------------------------------------------------------------------------------------------


def test_warmup_design_example() -> None:
    s = seq.Warmup(5, 0.1, then=seq.Exponential(0.1, 0.95))
    ramp = [s(i) for i in range(5)]
    assert ramp == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert ramp[-1] == 0.1
    assert s(5) == 0.1
    assert s(6) == pytest.approx(0.095)
    assert s(6) == seq.Exponential(0.1, 0.95)(1)
    assert s(105) == seq.Exponential(0.1, 0.95)(100)


@pytest.mark.parametrize("steps", [1, 2, 5, 17])
@pytest.mark.parametrize("target", [0.1, 1.0, 3e-4])
def test_warmup_ramp_is_target_times_step_plus_one_over_steps(steps: int, target: float) -> None:
    then = seq.Cosine(target, 40)
    s = seq.Warmup(steps, target, then=then)
    for i in range(steps):
        assert s(i) == target * (i + 1) / steps
        assert s(i) > 0
    assert s(steps - 1) == pytest.approx(target)
    for i in range(steps, steps + 60):
        assert s(i) == then(i - steps)


def test_warmup_then_defaults_to_holding_the_target() -> None:
    s = seq.Warmup(4, 0.2)
    assert s.then == seq.Constant(0.2)
    assert s.values(0, 7).tolist() == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2, 0.2])
    assert s == seq.Warmup(4, 0.2, then=seq.Constant(0.2))


def test_warmup_takes_an_int_target_as_float() -> None:
    s = seq.Warmup(2, 1, then=seq.Constant(1.0))
    assert s.target == 1.0 and type(s(5)) is float
    assert s.kind == "float"


@pytest.mark.parametrize(
    "s",
    [
        seq.Warmup(5, 0.1, then=seq.Exponential(0.1, 0.95)),
        seq.Warmup(1, 0.1),
        seq.Warmup(30, 0.5, then=seq.StepLR(0.5, 0.1, [10, 20])),
        seq.Warmup(3, 0.1, then=seq.Piecewise((seq.Constant(0.1), 4), seq.Cosine(0.1, 9))),
    ],
    ids=repr,
)
def test_warmup_values_agree_with_call_over_random_ranges(s: seq.Sequence) -> None:
    rng = np.random.default_rng(7)
    full = [s(i) for i in range(160)]
    for _ in range(60):
        start = int(rng.integers(0, 80))
        stop = start + int(rng.integers(0, 80))
        assert s.values(start, stop).tolist() == full[start:stop]


BAD_WARMUPS: list[tuple[Callable[[], Any], str]] = [
    (lambda: seq.Warmup(5, 0.1, then=0.1), r"Warmup: `then` must be a sequence"),
    (lambda: seq.Warmup(5, 0.1, then="cosine"), r"Warmup: `then` must be a sequence"),
    (lambda: seq.Warmup(5, 0.1, then=[seq.Constant(0.1)]), r"Warmup: `then` must be a sequence"),
    (lambda: seq.Warmup(5, 0.1, then=seq.Constant), r"Warmup: `then` must be a sequence"),
    (lambda: seq.Warmup(5, 0.1, then=seq.Constant("sgd")), r"Warmup: `then` must hold floats"),
    (lambda: seq.Warmup(5, 0.1, then=seq.Constant(128)), r"Warmup: `then` must hold floats"),
    (lambda: seq.Warmup(0, 0.1), r"Warmup: `steps` must be at least 1"),
    (lambda: seq.Warmup(-5, 0.1), r"Warmup: `steps` must be at least 1"),
    (lambda: seq.Warmup(10.5, 0.1), r"Warmup: `steps` must be a whole number"),
    (lambda: seq.Warmup(5, float("nan")), r"Warmup: `target` must be finite"),
    (lambda: seq.Warmup(5, float("inf")), r"Warmup: `target` must be finite"),
    (lambda: seq.Warmup(5, "0.1"), r"Warmup: `target` must be a number"),
]


@pytest.mark.parametrize(("build", "match"), BAD_WARMUPS)
def test_bad_warmup_arguments(build: Callable[[], Any], match: str) -> None:
    with pytest.raises(InvalidSequenceError, match=match):
        build()


# --------------------------------------------------------------------------------------------
# Piecewise
# --------------------------------------------------------------------------------------------


def test_piecewise_design_example() -> None:
    s = seq.Piecewise((seq.Constant(0.1), 50), seq.Cosine(0.1, 100))
    cosine = seq.Cosine(0.1, 100)
    assert all(s(i) == 0.1 for i in range(50))
    assert s(50) == cosine(0) == 0.1
    assert s(100) == cosine(50)
    assert s(150) == cosine(100) == 0.0


def test_piecewise_pieces_count_their_own_steps_from_zero() -> None:
    s = seq.Piecewise(
        (seq.Exponential(1.0, 0.5), 3),
        (seq.Exponential(1.0, 0.5), 2),
        seq.Linear(0.0, 1.0, 4),
    )
    assert s.values(0, 11).tolist() == [1.0, 0.5, 0.25, 1.0, 0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [s(i) for i in range(11)] == s.values(0, 11).tolist()


def test_piecewise_with_only_a_last_piece_is_that_piece() -> None:
    inner = seq.Cosine(0.1, 20)
    s = seq.Piecewise(inner)
    assert s.values(0, 50).tolist() == inner.values(0, 50).tolist()
    assert s != inner


def test_piecewise_accepts_lists_as_pairs_and_numpy_lengths() -> None:
    a = seq.Piecewise([seq.Constant(0.1), 5], seq.Constant(0.01))
    b = seq.Piecewise((seq.Constant(0.1), np.int64(5)), seq.Constant(0.01))
    assert a == b and hash(a) == hash(b)
    assert a(4) == 0.1 and a(5) == 0.01


def test_piecewise_of_ints_and_strings_keeps_native_types() -> None:
    sizes = seq.Piecewise(
        (seq.Constant(128), 10), (seq.MultiStep([256, 512], [5]), 10), seq.Constant(1024)
    )
    assert sizes.kind == "int"
    assert sizes.values(0, 30).dtype == np.int64
    assert [sizes(i) for i in (0, 9, 10, 14, 15, 19, 20, 1000)] == [
        128,
        128,
        256,
        256,
        512,
        512,
        1024,
        1024,
    ]
    assert all(type(sizes(i)) is int for i in range(30))
    names = seq.Piecewise((seq.Constant("sgd"), 3), seq.MultiStep(["adam", "lamb"], [2]))
    assert names.kind == "str"
    assert names.values(0, 7).tolist() == ["sgd", "sgd", "sgd", "adam", "adam", "lamb", "lamb"]
    assert all(type(names(i)) is str for i in range(7))


def test_piecewise_change_points() -> None:
    s = seq.Piecewise(
        (seq.Constant(0.1), 10), (seq.StepLR(0.1, 0.5, [3, 20]), 10), seq.MultiStep([0.2, 0.3], [4])
    )
    assert isinstance(s, seq.PiecewiseConstant)
    assert s.is_piecewise_constant()
    assert s.change_points(100).tolist() == [10, 13, 20, 24]
    assert s.change_points(24).tolist() == [10, 13, 20]
    assert s.change_points(11).tolist() == [10]
    assert s.change_points(10).tolist() == []
    assert s.change_points(1).tolist() == []


def test_piecewise_with_a_smooth_piece_has_no_change_points() -> None:
    s = seq.Piecewise((seq.Constant(0.1), 10), seq.Exponential(0.1, 0.9))
    assert not s.is_piecewise_constant()
    assert s.change_points(100) is None
    nested = seq.Piecewise(
        (seq.Piecewise((seq.Constant(0.1), 2), seq.Cosine(0.1, 5)), 10), seq.Constant(0.1)
    )
    assert nested.change_points(100) is None


COMPOSITES: list[seq.Sequence] = [
    seq.Piecewise((seq.Constant(0.1), 50), seq.Cosine(0.1, 100)),
    seq.Piecewise(
        (seq.Constant(128), 10), (seq.MultiStep([256, 512], [5]), 10), seq.Constant(1024)
    ),
    seq.Piecewise((seq.Constant("sgd"), 3), seq.MultiStep(["adam", "lamb"], [2])),
    seq.Piecewise(
        (seq.Warmup(2, 0.1), 5),
        (seq.MultiStep([0.1, 0.01], [3]), 10),
        (seq.Piecewise((seq.Cyclic(0.01, 0.1, 2), 6), seq.Linear(0.1, 0.0, 3)), 12),
        seq.Exponential(0.01, 0.9),
    ),
    seq.Warmup(5, 0.1, then=seq.Exponential(0.1, 0.95)),
    seq.Warmup(3, 0.1, then=seq.Piecewise((seq.Cosine(0.1, 10), 10), seq.StepLR(0.05, 0.5, [5]))),
    seq.Warmup(2, 0.5, then=seq.Warmup(3, 0.25, then=seq.CosineWarmRestarts(0.25, 4, t_mult=2))),
    seq.Piecewise(seq.Constant(True)),
]


@pytest.mark.parametrize("s", COMPOSITES, ids=repr)
def test_composite_values_agree_with_call(s: seq.Sequence) -> None:
    rng = np.random.default_rng(3)
    full = [s(i) for i in range(120)]
    kind_type = {"float": float, "int": int, "str": str, "bool": bool}[s.kind]
    assert all(type(v) is kind_type for v in full)
    for _ in range(40):
        start = int(rng.integers(0, 60))
        stop = start + int(rng.integers(0, 60))
        assert s.values(start, stop).tolist() == full[start:stop]


@pytest.mark.parametrize("s", COMPOSITES, ids=repr)
def test_composite_round_trips(s: seq.Sequence) -> None:
    back = seq.from_dict(s.to_dict())
    assert back == s and hash(back) == hash(s)
    via_json = seq.from_dict(json.loads(json.dumps(s.to_dict())))
    assert via_json == s and hash(via_json) == hash(s)
    assert via_json.values(0, 80).tolist() == s.values(0, 80).tolist()
    pickled = pickle.loads(pickle.dumps(s))
    assert pickled == s and pickled.values(0, 80).tolist() == s.values(0, 80).tolist()
    assert json.dumps(via_json.to_dict()) == json.dumps(s.to_dict())


@pytest.mark.parametrize("s", COMPOSITES, ids=repr)
def test_composites_are_immutable(s: seq.Sequence) -> None:
    with pytest.raises(AttributeError, match="immutable"):
        s.kind = "float"
    with pytest.raises(AttributeError):
        del s.kind
    with pytest.raises(AttributeError):
        s.extra = 1


def test_composite_equality_and_hashing() -> None:
    def build() -> seq.Sequence:
        return seq.Piecewise(
            (seq.Warmup(5, 0.1, then=seq.Exponential(0.1, 0.95)), 20), seq.Constant(0.01)
        )

    assert build() == build() and hash(build()) == hash(build())
    assert build() != seq.Piecewise(
        (seq.Warmup(5, 0.1, then=seq.Exponential(0.1, 0.96)), 20), seq.Constant(0.01)
    )
    assert build() != seq.Piecewise(
        (seq.Warmup(5, 0.1, then=seq.Exponential(0.1, 0.95)), 21), seq.Constant(0.01)
    )
    assert seq.Warmup(5, 0.1) != seq.Piecewise(seq.Warmup(5, 0.1))
    assert seq.Piecewise(seq.Constant(1)) != seq.Piecewise(seq.Constant(1.0))
    assert seq.Piecewise((seq.Constant(1), 2), seq.Constant(2)) != seq.Piecewise(
        (seq.Constant(1.0), 2), seq.Constant(2.0)
    )


def test_repr_of_composites() -> None:
    s = seq.Piecewise((seq.Constant(0.1), 50), seq.Cosine(0.1, 100))
    assert repr(s) == "Piecewise((Constant(value=0.1), 50), Cosine(v0=0.1, t_max=100, eta_min=0.0))"
    assert repr(seq.Warmup(5, 0.1)) == "Warmup(steps=5, target=0.1, then=Constant(value=0.1))"


BAD_PIECEWISE: list[tuple[Callable[[], Any], str]] = [
    (lambda: seq.Piecewise(), r"Piecewise: needs at least one sequence"),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), 50)),
        r"Piecewise: the last argument must be a sequence",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), 50), (seq.Constant(0.01), 10)),
        r"Piecewise: the last argument must be a sequence",
    ),
    (
        lambda: seq.Piecewise(seq.Constant(0.1), 0.01),
        r"Piecewise: the last argument must be a sequence",
    ),
    (
        lambda: seq.Piecewise(seq.Constant(0.1), seq.Constant(0.01)),
        r"Piecewise: argument 0 must be a \(sequence, n_steps\) pair",
    ),
    (
        lambda: seq.Piecewise((0.1, 50), seq.Constant(0.01)),
        r"Piecewise: argument 0 must be a \(sequence, n_steps\) pair",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1),), seq.Constant(0.01)),
        r"Piecewise: argument 0 must be a",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), 5, 6), seq.Constant(0.01)),
        r"Piecewise: argument 0 must be a",
    ),
    (
        lambda: seq.Piecewise((50, seq.Constant(0.1)), seq.Constant(0.01)),
        r"Piecewise: argument 0 must be a",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), 5), (seq.Constant(0.1), "5"), seq.Constant(0.01)),
        r"Piecewise: `pieces\[1\] length` must be a whole number",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), 0), seq.Constant(0.01)),
        r"`pieces\[0\] length` must be at least 1",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), -3), seq.Constant(0.01)),
        r"`pieces\[0\] length` must be at least 1",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), 2.5), seq.Constant(0.01)),
        r"`pieces\[0\] length` must be a whole",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(0.1), 5), seq.Constant("sgd")),
        r"Piecewise: pieces hold different kinds.*'float', 'str'",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(True), 5), seq.Constant(0.1)),
        r"Piecewise: pieces hold different kinds.*'bool', 'float'",
    ),
    (
        lambda: seq.Piecewise((seq.Constant(128), 5), seq.Constant(0.1)),
        r"Piecewise: pieces hold different kinds.*'float', 'int'",
    ),
]


@pytest.mark.parametrize(("build", "match"), BAD_PIECEWISE)
def test_bad_piecewise_arguments(build: Callable[[], Any], match: str) -> None:
    with pytest.raises(InvalidSequenceError, match=match) as info:
        build()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("s", COMPOSITES, ids=repr)
def test_composite_bad_step_ranges(s: seq.Sequence) -> None:
    for start, stop in [(5, 4), (-1, 3), (1, 0)]:
        with pytest.raises(ValueError, match="start"):
            s.values(start, stop)
    with pytest.raises(ValueError):
        s(-1)


# --------------------------------------------------------------------------------------------
# Templates inside composites
# --------------------------------------------------------------------------------------------


def test_warmup_with_a_distribution_is_a_template() -> None:
    template = seq.Warmup(
        space.choice([3, 5]), 0.1, then=seq.Exponential(0.1, gamma=space.uniform(0.9, 0.99))
    )
    assert isinstance(template, seq.SequenceTemplate)
    a = template.sample(np.random.default_rng(11))
    b = template.sample(np.random.default_rng(11))
    assert isinstance(a, seq.Warmup) and a == b
    assert a.steps in {3, 5} and isinstance(a.then, seq.Exponential)
    assert 0.9 <= a.then.gamma <= 0.99


def test_piecewise_with_a_distribution_is_a_template() -> None:
    template = seq.Piecewise(
        (seq.Cosine(space.loguniform(1e-3, 1e-1), 20), space.choice([10, 20])), seq.Constant(0.001)
    )
    assert isinstance(template, seq.SequenceTemplate)
    for seed in range(5):
        a = template.sample(np.random.default_rng(seed))
        assert isinstance(a, seq.Piecewise)
        assert a == template.sample(np.random.default_rng(seed))
        ((first, length),) = a.pieces
        assert length in {10, 20} and 1e-3 <= first.v0 <= 1e-1
        assert seq.from_dict(json.loads(json.dumps(a.to_dict()))) == a
