"""Trial: fixed versus sequential values, normalisation, identity."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import hippo_dask as hd
from hippo_dask import seq


def test_plain_values_are_fixed_and_sequences_sequential() -> None:
    t = hd.Trial(lr=seq.StepLR(0.1, 0.1, [30]), optimizer="sgd", seed=0)
    assert dict(t.fixed) == {"optimizer": "sgd", "seed": 0}
    assert list(t.sequences) == ["lr"]
    assert t.values_at(29) == {"lr": 0.1} and t.values_at(30) == {"lr": pytest.approx(0.01)}
    assert t.config["lr"] == seq.StepLR(0.1, 0.1, [30])


def test_fixed_values_take_their_json_form() -> None:
    t = hd.Trial(layers=(64, 32), width=np.int64(3), scale=np.float32(0.5), flag=np.bool_(True))
    assert t.fixed["layers"] == [64, 32]
    assert type(t.fixed["width"]) is int and type(t.fixed["flag"]) is bool
    assert hd.Trial.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_identity_is_content_and_argument_order_does_not_matter() -> None:
    a = hd.Trial(lr=seq.Constant(0.1), optimizer="sgd")
    b = hd.Trial(optimizer="sgd", lr=seq.Constant(0.1))
    assert a == b and hash(a) == hash(b) and a.id == b.id
    assert a != hd.Trial(optimizer="adam", lr=seq.Constant(0.1))
    assert a != hd.Trial(optimizer="sgd", lr=0.1)  # fixed 0.1 is not the sequence Constant(0.1)
    assert pickle.loads(pickle.dumps(a)) == a


def test_trials_are_immutable() -> None:
    t = hd.Trial(seed=0)
    with pytest.raises(AttributeError):
        t.id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.fixed["seed"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    "value, why",
    [
        (object(), "cannot be stored"),
        (float("nan"), "NaN"),
        ({1: "a"}, "cannot be stored"),
        (float("inf"), "NaN and inf"),
    ],
)
def test_values_that_cannot_be_stored_are_rejected_by_name(value: object, why: str) -> None:
    with pytest.raises(hd.InvalidTrialError, match=f"`model`.*{why}"):
        hd.Trial(model=value)


def test_an_undrawn_distribution_is_not_a_trial_value() -> None:
    with pytest.raises(hd.InvalidTrialError, match="still a distribution"):
        hd.Trial(lr=hd.loguniform(1e-3, 1))
    with pytest.raises(hd.InvalidTrialError, match="RandomSpace"):
        hd.Trial(lr=seq.StepLR(hd.loguniform(1e-3, 1), 0.1, [30]))
