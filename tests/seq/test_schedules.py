"""The schedule families: torch conformance, validation, evaluation, identity and serialisation."""

from __future__ import annotations

import json
import math
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from hippo_dask import seq, space
from hippo_dask.errors import InvalidSequenceError

N_STEPS = 300
L = torch.optim.lr_scheduler
Factory = Callable[[torch.optim.Optimizer], Any]


def torch_lrs(make_scheduler: Factory | None, base_lr: float, n: int = N_STEPS) -> np.ndarray:
    """The lr torch trains step ``s`` at: read before the ``s + 1``-th ``scheduler.step()``."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler = None if make_scheduler is None else make_scheduler(optimizer)
        for _ in range(n):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    return np.asarray(out, dtype=np.float64)


def assert_matches_torch(s: seq.Sequence, expected: np.ndarray) -> None:
    ours = s.values(0, len(expected))
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, expected, rtol=1e-9)
    called = np.asarray([s(step) for step in range(len(expected))])
    np.testing.assert_allclose(called, expected, rtol=1e-9)
    np.testing.assert_array_equal(called, ours)


# --------------------------------------------------------------------------------------------
# Torch conformance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.1, 1e-3, 0.5, 3.0])
def test_constant_matches_a_bare_optimizer(value: float) -> None:
    assert_matches_torch(seq.Constant(value), torch_lrs(None, value))


@pytest.mark.parametrize("value", [0.1, 1e-3, 0.5])
def test_constant_matches_constant_lr_with_factor_one(value: float) -> None:
    expected = torch_lrs(lambda o: L.ConstantLR(o, factor=1.0, total_iters=5), value)
    assert_matches_torch(seq.Constant(value), expected)


STEP_CASES = [
    (0.1, 0.1, [30, 60, 90]),
    (0.1, 0.1, [90, 135]),
    (0.5, 0.5, [1, 2, 3, 150, 299]),
    (0.05, 2.0, [100]),
    (0.1, 0.1, []),
    (0.2, 0.3, [299, 300, 400]),
]


@pytest.mark.parametrize(("v0", "gamma", "milestones"), STEP_CASES)
def test_steplr_matches_torch_multisteplr(v0: float, gamma: float, milestones: list[int]) -> None:
    expected = torch_lrs(lambda o: L.MultiStepLR(o, milestones=milestones, gamma=gamma), v0)
    assert_matches_torch(seq.StepLR(v0, gamma=gamma, milestones=milestones), expected)


@pytest.mark.parametrize(
    ("v0", "gamma", "step_size"), [(0.1, 0.1, 30), (0.3, 0.5, 7), (1.0, 0.9, 1)]
)
def test_steplr_with_regular_milestones_matches_torch_steplr(
    v0: float, gamma: float, step_size: int
) -> None:
    expected = torch_lrs(lambda o: L.StepLR(o, step_size=step_size, gamma=gamma), v0)
    milestones = list(range(step_size, N_STEPS + 1, step_size))
    assert_matches_torch(seq.StepLR(v0, gamma=gamma, milestones=milestones), expected)


@pytest.mark.parametrize(
    ("v0", "gamma"), [(0.1, 0.95), (1.0, 0.99), (0.01, 1.01), (0.3, 0.5), (0.1, 1.0)]
)
def test_exponential_matches_torch_exponentiallr(v0: float, gamma: float) -> None:
    expected = torch_lrs(lambda o: L.ExponentialLR(o, gamma=gamma), v0)
    assert_matches_torch(seq.Exponential(v0, gamma=gamma), expected)


LINEAR_CASES = [
    (0.25, 1.0, 17),
    (1.0, 0.1, 100),
    (0.5, 0.5, 10),
    (1 / 3, 1.0, 299),
    (0.1, 1.0, 1),
    (0.9, 0.2, 500),
    (1.0, 1.0, 3),
]


@pytest.mark.parametrize(("start", "end", "steps"), LINEAR_CASES)
def test_linear_matches_torch_linearlr(start: float, end: float, steps: int) -> None:
    expected = torch_lrs(
        lambda o: L.LinearLR(o, start_factor=start, end_factor=end, total_iters=steps), 1.0
    )
    assert_matches_torch(seq.Linear(start, end, steps), expected)


COSINE_CASES = [
    (0.1, 50, 0.0),
    (0.1, 50, 0.001),
    (0.1, 7, 0.0),
    (1.0, 300, 0.0),
    (0.05, 1, 0.0),
    (0.2, 299, 0.01),
]


@pytest.mark.parametrize(("v0", "t_max", "eta_min"), COSINE_CASES)
def test_cosine_matches_torch_cosineannealinglr(v0: float, t_max: int, eta_min: float) -> None:
    expected = torch_lrs(lambda o: L.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), v0)
    assert_matches_torch(seq.Cosine(v0, t_max, eta_min=eta_min), expected)


RESTART_CASES = [
    (0.1, 10, 1, 0.0),
    (0.1, 50, 1, 0.001),
    (0.1, 1, 1, 0.0),
    (0.1, 10, 2, 0.0),
    (0.1, 1, 2, 0.0),
    (0.1, 7, 2, 0.01),
    (0.5, 3, 3, 0.0),
    (0.1, 299, 2, 0.0),
]


@pytest.mark.parametrize(("v0", "t_0", "t_mult", "eta_min"), RESTART_CASES)
def test_cosine_warm_restarts_matches_torch(
    v0: float, t_0: int, t_mult: int, eta_min: float
) -> None:
    expected = torch_lrs(
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=t_mult, eta_min=eta_min), v0
    )
    assert_matches_torch(seq.CosineWarmRestarts(v0, t_0, t_mult=t_mult, eta_min=eta_min), expected)


CYCLIC_CASES = [
    (0.01, 0.1, 7, None),
    (0.01, 0.1, 7, 13),
    (0.001, 0.006, 20, 5),
    (0.01, 0.1, 1, None),
    (0.01, 0.1, 1, 1),
    (0.01, 0.1, 150, 150),
    (0.1, 0.01, 10, None),
]


@pytest.mark.parametrize(("base", "top", "up", "down"), CYCLIC_CASES)
def test_cyclic_matches_torch_cycliclr(base: float, top: float, up: int, down: int | None) -> None:
    expected = torch_lrs(
        lambda o: L.CyclicLR(
            o,
            base_lr=base,
            max_lr=top,
            step_size_up=up,
            step_size_down=down,
            mode="triangular",
            cycle_momentum=False,
        ),
        0.5,
    )
    assert_matches_torch(seq.Cyclic(base, top, up, step_size_down=down), expected)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

BAD_ARGUMENTS: list[tuple[Callable[[], Any], str]] = [
    # milestones
    (
        lambda: seq.StepLR(0.1, 0.1, [60, 30]),
        r"`milestones`.*strictly increasing.*milestones=\[30, 60\]",
    ),
    (lambda: seq.StepLR(0.1, 0.1, [30, 30, 60]), r"`milestones`.*milestones=\[30, 60\]"),
    (
        lambda: seq.MultiStep([1, 2, 3], [50, 10]),
        r"`milestones`.*did you mean milestones=\[10, 50\]",
    ),
    (lambda: seq.StepLR(0.1, 0.1, [0, 30]), r"`milestones`.*>= 1"),
    (lambda: seq.StepLR(0.1, 0.1, [-5]), r"`milestones`.*>= 1"),
    (lambda: seq.MultiStep([0.1, 0.01], [0]), r"`milestones`.*>= 1"),
    (lambda: seq.StepLR(0.1, 0.1, [30.5]), r"`milestones`.*whole steps"),
    (lambda: seq.StepLR(0.1, 0.1, [30.0, 60]), r"`milestones`.*whole steps"),
    (lambda: seq.StepLR(0.1, 0.1, ["30"]), r"`milestones`.*whole steps"),
    (lambda: seq.StepLR(0.1, 0.1, [True]), r"`milestones`.*whole steps"),
    (lambda: seq.StepLR(0.1, 0.1, 30), r"`milestones`.*list of steps"),
    (lambda: seq.StepLR(0.1, 0.1, "30"), r"`milestones`.*list of steps"),
    # non-finite values
    (lambda: seq.StepLR(NAN, 0.1, [30]), r"StepLR: `v0` must be finite"),
    (lambda: seq.StepLR(0.1, INF, [30]), r"StepLR: `gamma` must be finite"),
    (lambda: seq.Exponential(-INF, 0.9), r"Exponential: `v0` must be finite"),
    (lambda: seq.Exponential(0.1, NAN), r"Exponential: `gamma` must be finite"),
    (lambda: seq.Constant(NAN), r"Constant: `value` must be finite"),
    (lambda: seq.Constant(INF), r"Constant: `value` must be finite"),
    (lambda: seq.Constant(np.float64("nan")), r"Constant: `value` must be finite"),
    (lambda: seq.Linear(NAN, 1.0, 10), r"Linear: `start` must be finite"),
    (lambda: seq.Linear(0.1, INF, 10), r"Linear: `end` must be finite"),
    (lambda: seq.Cosine(NAN, 10), r"Cosine: `v0` must be finite"),
    (lambda: seq.Cosine(0.1, 10, eta_min=INF), r"Cosine: `eta_min` must be finite"),
    (lambda: seq.CosineWarmRestarts(INF, 10), r"CosineWarmRestarts: `v0` must be finite"),
    (lambda: seq.Cyclic(NAN, 0.1, 5), r"Cyclic: `base` must be finite"),
    (lambda: seq.Cyclic(0.01, INF, 5), r"Cyclic: `max` must be finite"),
    (lambda: seq.MultiStep([0.1, NAN], [5]), r"MultiStep: `values` must be finite"),
    # non-numbers where numbers belong
    (lambda: seq.StepLR("0.1", 0.1, [30]), r"StepLR: `v0` must be a number"),
    (lambda: seq.Exponential(0.1, None), r"Exponential: `gamma` must be a number"),
    (lambda: seq.Cosine(True, 10), r"Cosine: `v0` must be a number"),
    # gamma <= 0
    (lambda: seq.StepLR(0.1, 0.0, [30]), r"StepLR: `gamma` must be > 0"),
    (lambda: seq.StepLR(0.1, -0.1, [30]), r"StepLR: `gamma` must be > 0"),
    (lambda: seq.Exponential(0.1, 0.0), r"Exponential: `gamma` must be > 0"),
    (lambda: seq.Exponential(0.1, -2), r"Exponential: `gamma` must be > 0"),
    # step counts
    (lambda: seq.Cosine(0.1, 0), r"Cosine: `t_max` must be at least 1"),
    (lambda: seq.Cosine(0.1, -10), r"Cosine: `t_max` must be at least 1"),
    (lambda: seq.Cosine(0.1, 10.5), r"Cosine: `t_max` must be a whole number"),
    (lambda: seq.Cosine(0.1, 10.0), r"Cosine: `t_max` must be a whole number.*use 10"),
    (lambda: seq.CosineWarmRestarts(0.1, 0), r"CosineWarmRestarts: `t_0` must be at least 1"),
    (lambda: seq.CosineWarmRestarts(0.1, -3), r"CosineWarmRestarts: `t_0` must be at least 1"),
    (lambda: seq.CosineWarmRestarts(0.1, 10.5), r"CosineWarmRestarts: `t_0` must be a whole"),
    (
        lambda: seq.CosineWarmRestarts(0.1, 10, t_mult=0),
        r"CosineWarmRestarts: `t_mult` must be at least 1",
    ),
    (
        lambda: seq.CosineWarmRestarts(0.1, 10, t_mult=1.5),
        r"CosineWarmRestarts: `t_mult` must be a whole",
    ),
    (lambda: seq.Linear(0.1, 1.0, 0), r"Linear: `steps` must be at least 1"),
    (lambda: seq.Linear(0.1, 1.0, 10.5), r"Linear: `steps` must be a whole number"),
    (lambda: seq.Linear(0.1, 1.0, True), r"Linear: `steps` must be a whole number"),
    (lambda: seq.Cyclic(0.01, 0.1, 0), r"Cyclic: `step_size_up` must be at least 1"),
    (lambda: seq.Cyclic(0.01, 0.1, 10.5), r"Cyclic: `step_size_up` must be a whole"),
    (
        lambda: seq.Cyclic(0.01, 0.1, 10, step_size_down=0),
        r"Cyclic: `step_size_down` must be at least 1",
    ),
    (
        lambda: seq.Cyclic(0.01, 0.1, 10, step_size_down=2.5),
        r"Cyclic: `step_size_down` must be a whole",
    ),
    # MultiStep shape and kinds
    (
        lambda: seq.MultiStep([0.1, 0.01], [10, 20]),
        r"MultiStep: needs one more value than milestones",
    ),
    (
        lambda: seq.MultiStep([0.1, 0.01, 0.001], [10]),
        r"MultiStep: needs one more value than milestones",
    ),
    (lambda: seq.MultiStep([], []), r"MultiStep: needs one more value than milestones"),
    (lambda: seq.MultiStep(["sgd", 0.1], [10]), r"MultiStep: `values` mix \['float', 'str'\]"),
    (lambda: seq.MultiStep([True, 2], [10]), r"MultiStep: `values` mix \['bool', 'int'\]"),
    (lambda: seq.MultiStep("sgd", []), r"MultiStep: `values` must be a list"),
    (lambda: seq.MultiStep(0.1, []), r"MultiStep: `values` must be a list"),
    (lambda: seq.MultiStep([[1], [2]], [10]), r"MultiStep: `values` holds \[1\] of type list"),
    # Constant of unsupported types
    (lambda: seq.Constant([0.1, 0.2]), r"Constant: `value` holds \[0.1, 0.2\] of type list"),
    (lambda: seq.Constant(object()), r"Constant: `value` holds .* of type object"),
    (lambda: seq.Constant(None), r"Constant: `value` holds None of type NoneType"),
    (lambda: seq.Constant({"a": 1}), r"Constant: `value` holds .* of type dict"),
    (lambda: seq.Constant(1 + 2j), r"Constant: `value` holds .* of type complex"),
]


@pytest.mark.parametrize(("build", "match"), BAD_ARGUMENTS)
def test_bad_arguments_raise_invalid_sequence_error_naming_the_argument(
    build: Callable[[], Any], match: str
) -> None:
    with pytest.raises(InvalidSequenceError, match=match) as info:
        build()
    assert isinstance(info.value, ValueError)


def test_invalid_sequence_error_is_caught_as_value_error() -> None:
    with pytest.raises(ValueError, match="gamma"):
        seq.Exponential(0.1, -1.0)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

EXAMPLES: list[seq.Sequence] = [
    seq.Constant(0.1),
    seq.Constant(128),
    seq.Constant("sgd"),
    seq.Constant(True),
    seq.MultiStep([128, 256, 512], [25, 70]),
    seq.MultiStep(["sgd", "adam"], [50]),
    seq.MultiStep([0.1, 1, 0.001], [3, 4]),
    seq.MultiStep([False, True], [7]),
    seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
    seq.StepLR(0.1, gamma=0.1, milestones=[]),
    seq.Exponential(0.1, gamma=0.95),
    seq.Linear(0.01, 0.1, 20),
    seq.Cosine(0.1, 50),
    seq.Cosine(0.1, 13, eta_min=0.002),
    seq.CosineWarmRestarts(0.1, 10),
    seq.CosineWarmRestarts(0.1, 3, t_mult=2, eta_min=0.001),
    seq.Cyclic(0.001, 0.01, 4),
    seq.Cyclic(0.001, 0.01, 4, step_size_down=9),
]


def _ids(items: list[seq.Sequence]) -> list[str]:
    return [repr(s) for s in items]


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
def test_values_agree_with_call_over_random_ranges(s: seq.Sequence) -> None:
    rng = np.random.default_rng(1234)
    for _ in range(25):
        start = int(rng.integers(0, 400))
        stop = start + int(rng.integers(0, 200))
        got = s.values(start, stop)
        assert isinstance(got, np.ndarray)
        assert got.shape == (stop - start,)
        expected = [s(i) for i in range(start, stop)]
        assert got.tolist() == expected
    assert s.values(0, 0).shape == (0,)
    assert s.values(17, 17).shape == (0,)


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
def test_call_returns_native_python_types(s: seq.Sequence) -> None:
    expected_type = {"float": float, "int": int, "str": str, "bool": bool}[s.kind]
    for step in (0, 1, 5, 49, 50, 51, 1000, np.int64(7)):
        value = s(step)
        assert type(value) is expected_type, (step, value)


def test_native_types_of_constants() -> None:
    assert seq.Constant(128)(0) == 128 and type(seq.Constant(128)(0)) is int
    assert seq.Constant(np.int64(128))(3) == 128 and type(seq.Constant(np.int64(128))(3)) is int
    assert type(seq.Constant(np.float32(0.5))(3)) is float
    assert seq.Constant("sgd")(99) == "sgd" and type(seq.Constant("sgd")(99)) is str
    assert type(seq.Constant(0.1)(0)) is float
    assert seq.Constant(False)(0) is False
    assert seq.Constant(128).kind == "int"
    assert seq.Constant(128.0).kind == "float"
    assert seq.Constant(np.bool_(True)).kind == "bool"
    assert seq.Constant(128).values(0, 3).dtype == np.int64
    assert seq.Constant(0.1).values(0, 3).dtype == np.float64
    assert seq.Constant("sgd").values(0, 3).tolist() == ["sgd"] * 3


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
@pytest.mark.parametrize(("start", "stop"), [(5, 4), (-1, 3), (-3, -1), (1, 0)])
def test_bad_step_ranges_raise_value_error(s: seq.Sequence, start: int, stop: int) -> None:
    with pytest.raises(ValueError, match="start"):
        s.values(start, stop)


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
def test_negative_step_raises_value_error(s: seq.Sequence) -> None:
    with pytest.raises(ValueError):
        s(-1)


def test_multistep_switches_optimizer_by_name() -> None:
    s = seq.MultiStep(["sgd", "adam", "lamb"], milestones=[50, 80])
    assert s.kind == "str"
    assert [s(i) for i in (0, 49, 50, 79, 80, 10_000)] == [
        "sgd",
        "sgd",
        "adam",
        "adam",
        "lamb",
        "lamb",
    ]
    assert s.values(48, 52).tolist() == ["sgd", "sgd", "adam", "adam"]
    assert s.change_points(80).tolist() == [50]
    assert s.change_points(81).tolist() == [50, 80]


def test_multistep_of_ints_is_a_batch_size_schedule() -> None:
    s = seq.MultiStep([128, 256], milestones=[70])
    assert s.kind == "int"
    assert s(69) == 128 and s(70) == 256
    assert type(s(70)) is int
    values = s.values(0, 100)
    assert values.dtype == np.int64
    assert (values[:70] == 128).all() and (values[70:] == 256).all()


def test_multistep_of_ints_and_floats_holds_floats() -> None:
    s = seq.MultiStep([1, 0.5], [10])
    assert s.kind == "float"
    assert s(0) == 1.0 and type(s(0)) is float


def test_steplr_values() -> None:
    s = seq.StepLR(0.1, gamma=0.1, milestones=[30, 45])
    assert s(0) == 0.1 and s(29) == 0.1
    assert s(30) == pytest.approx(0.01) and s(44) == pytest.approx(0.01)
    assert s(45) == pytest.approx(0.001) and s(10_000) == pytest.approx(0.001)
    assert s.change_points(1000).tolist() == [30, 45]
    assert s.change_points(45).tolist() == [30]


def test_linear_holds_end_after_its_steps() -> None:
    s = seq.Linear(0.0, 1.0, 4)
    assert s.values(0, 7).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_warm_restarts_restart_where_torch_restarts() -> None:
    s = seq.CosineWarmRestarts(1.0, 2, t_mult=2)
    restarts = [i for i in range(1, 40) if s(i) == 1.0]
    assert restarts == [2, 6, 14, 30]


def test_cyclic_is_triangular() -> None:
    s = seq.Cyclic(0.0, 1.0, 2, step_size_down=4)
    assert s.values(0, 13).tolist() == pytest.approx(
        [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    )


# --------------------------------------------------------------------------------------------
# Identity: immutability, equality, hashing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
def test_sequences_are_immutable(s: seq.Sequence) -> None:
    name = next(iter(s._params()))
    attribute = {"values": "levels"}.get(name, name)
    before = getattr(s, attribute)
    with pytest.raises(AttributeError, match="immutable"):
        setattr(s, attribute, 0.5)
    with pytest.raises(AttributeError, match="immutable"):
        s.kind = "str"
    with pytest.raises(AttributeError):
        s.brand_new = 1
    with pytest.raises(AttributeError):
        delattr(s, attribute)
    assert getattr(s, attribute) == before
    assert not hasattr(s, "__dict__")


FACTORIES: list[Callable[[], seq.Sequence]] = [
    lambda: seq.Constant(0.1),
    lambda: seq.Constant(128),
    lambda: seq.Constant("sgd"),
    lambda: seq.MultiStep([128, 256], [70]),
    lambda: seq.MultiStep(["sgd", "adam"], [50]),
    lambda: seq.StepLR(0.1, gamma=0.1, milestones=[30, 45]),
    lambda: seq.Exponential(0.1, gamma=0.95),
    lambda: seq.Linear(0.01, 0.1, 20),
    lambda: seq.Cosine(0.1, 50),
    lambda: seq.CosineWarmRestarts(0.1, 10, t_mult=2),
    lambda: seq.Cyclic(0.001, 0.01, 4),
]


@pytest.mark.parametrize("factory", FACTORIES, ids=[repr(f()) for f in FACTORIES])
def test_equal_arguments_give_equal_sequences_with_equal_hashes(
    factory: Callable[[], seq.Sequence],
) -> None:
    a, b = factory(), factory()
    assert a is not b
    assert a == b and not (a != b)
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: 1}[b] == 1


def test_equality_ignores_how_arguments_were_spelled() -> None:
    assert seq.StepLR(1, 0.1, [30, 45]) == seq.StepLR(1.0, 0.1, (30, 45))
    assert seq.StepLR(0.1, 0.1, np.array([30, 45])) == seq.StepLR(0.1, 0.1, [30, 45])
    assert hash(seq.StepLR(1, 0.1, [30, 45])) == hash(seq.StepLR(1.0, 0.1, (30, 45)))
    assert seq.Cyclic(0.01, 0.1, 5) == seq.Cyclic(0.01, 0.1, 5, step_size_down=5)
    assert seq.Cosine(0.1, 10) == seq.Cosine(0.1, 10, eta_min=0)
    assert seq.MultiStep((1, 2), [5]) == seq.MultiStep([1, 2], [5])


def test_different_arguments_are_not_equal() -> None:
    assert seq.StepLR(0.1, 0.1, [30, 45]) != seq.StepLR(0.1, 0.1, [30, 46])
    assert seq.Exponential(0.1, 0.95) != seq.Exponential(0.1, 0.96)
    assert seq.Constant("sgd") != seq.Constant("adam")
    assert seq.Cyclic(0.01, 0.1, 5) != seq.Cyclic(0.01, 0.1, 5, step_size_down=6)


def test_values_of_different_kinds_are_not_equal() -> None:
    # 128 == 128.0 in Python, but a trainer must never receive one for the other.
    assert seq.Constant(128) != seq.Constant(128.0)
    assert seq.Constant(1) != seq.Constant(True)
    assert seq.Constant(0) != seq.Constant(False)
    assert seq.MultiStep([128, 256], [5]) != seq.MultiStep([128.0, 256.0], [5])
    assert len({seq.Constant(128), seq.Constant(128.0), seq.Constant(True), seq.Constant(1)}) == 4


def test_different_families_are_never_equal() -> None:
    items = [f() for f in FACTORIES] + [
        seq.MultiStep([0.1, 0.1], [5]),  # same values as Constant(0.1)
        seq.StepLR(0.1, 1.0, []),
        seq.Linear(0.1, 0.1, 5),
        seq.Exponential(0.1, 1.0),
    ]
    for i, a in enumerate(items):
        for j, b in enumerate(items):
            if i != j:
                assert a != b, (a, b)
                assert not (a == b), (a, b)
    assert seq.Constant(0.1) != 0.1
    assert seq.Constant("sgd") != "sgd"


def test_repr_names_the_family_and_arguments() -> None:
    assert repr(seq.StepLR(0.1, 0.1, [30, 45])) == "StepLR(v0=0.1, gamma=0.1, milestones=[30, 45])"
    assert repr(seq.Constant("sgd")) == "Constant(value='sgd')"


# --------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
def test_to_dict_round_trip(s: seq.Sequence) -> None:
    data = s.to_dict()
    assert data["type"] == type(s).__name__
    back = seq.from_dict(data)
    assert back == s and hash(back) == hash(s) and back.kind == s.kind
    assert back.values(0, 100).tolist() == s.values(0, 100).tolist()


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
def test_json_round_trip(s: seq.Sequence) -> None:
    text = json.dumps(s.to_dict())
    back = seq.from_dict(json.loads(text))
    assert back == s and back.kind == s.kind
    assert type(back(0)) is type(s(0))
    assert back.values(0, 100).tolist() == s.values(0, 100).tolist()
    assert json.dumps(back.to_dict()) == text


@pytest.mark.parametrize("s", EXAMPLES, ids=_ids(EXAMPLES))
def test_pickle_round_trip(s: seq.Sequence) -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(s, protocol=protocol))
        assert type(back) is type(s)
        assert back == s and hash(back) == hash(s) and back.kind == s.kind
        assert back.values(0, 60).tolist() == s.values(0, 60).tolist()


def test_from_dict_rejects_unknown_types() -> None:
    with pytest.raises(InvalidSequenceError, match="unknown sequence type 'Banana'"):
        seq.from_dict({"type": "Banana", "v0": 0.1})
    with pytest.raises(InvalidSequenceError, match="unknown sequence type None"):
        seq.from_dict({"v0": 0.1})


def test_from_dict_validates_like_the_constructor() -> None:
    with pytest.raises(InvalidSequenceError, match="milestones"):
        seq.from_dict({"type": "StepLR", "v0": 0.1, "gamma": 0.1, "milestones": [45, 30]})


# --------------------------------------------------------------------------------------------
# Templates: sequences built with distributions
# --------------------------------------------------------------------------------------------


def test_distribution_argument_gives_a_template() -> None:
    template = seq.StepLR(
        space.loguniform(1e-3, 1.0), gamma=0.1, milestones=space.choice([[30, 45], [40, 60]])
    )
    assert isinstance(template, seq.SequenceTemplate)
    assert not isinstance(template, seq.Sequence)
    assert "StepLR" in repr(template)
    drawn = template.sample(np.random.default_rng(0))
    assert isinstance(drawn, seq.StepLR)
    assert 1e-3 <= drawn.v0 <= 1.0
    assert drawn.gamma == 0.1
    assert drawn.milestones in {(30, 45), (40, 60)}
    again = template.sample(np.random.default_rng(0))
    assert again == drawn and hash(again) == hash(drawn)
    draws = {template.sample(np.random.default_rng(seed)) for seed in range(20)}
    assert len(draws) > 1
    assert {d.milestones for d in draws} == {(30, 45), (40, 60)}


@pytest.mark.parametrize(
    "build",
    [
        lambda: seq.Constant(space.choice([128, 256])),
        lambda: seq.Constant(space.choice(["sgd", "adam"])),
        lambda: seq.Exponential(space.loguniform(1e-3, 1e-1), gamma=space.uniform(0.9, 0.99)),
        lambda: seq.MultiStep(space.choice([[128, 256], [64, 128]]), milestones=[25]),
        lambda: seq.Cosine(0.1, t_max=space.randint(10, 100)),
        lambda: seq.CosineWarmRestarts(0.1, t_0=space.randint(1, 20), t_mult=space.choice([1, 2])),
        lambda: seq.Cyclic(space.loguniform(1e-4, 1e-3), 0.01, step_size_up=space.randint(1, 9)),
        lambda: seq.Linear(space.uniform(0.01, 0.1), 1.0, 10),
    ],
)
def test_templates_sample_valid_deterministic_sequences(build: Callable[[], Any]) -> None:
    template = build()
    assert isinstance(template, seq.SequenceTemplate)
    for seed in range(5):
        a = template.sample(np.random.default_rng(seed))
        b = template.sample(np.random.default_rng(seed))
        assert isinstance(a, seq.Sequence) and type(a) is template.family
        assert a == b
        assert a.values(0, 50).tolist() == b.values(0, 50).tolist()
        assert seq.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_template_validates_what_it_draws() -> None:
    template = seq.StepLR(0.1, gamma=space.uniform(-1.0, -0.5), milestones=[10])
    with pytest.raises(InvalidSequenceError, match="gamma"):
        template.sample(np.random.default_rng(0))


def test_template_values_are_in_range() -> None:
    template = seq.Exponential(space.loguniform(1e-3, 1e-1), gamma=0.9)
    for seed in range(50):
        v0 = template.sample(np.random.default_rng(seed)).v0
        assert 1e-3 <= v0 <= 1e-1 and math.isfinite(v0)
