"""The top level exports what a study's user writes; the model underneath is in hippo_dask.plan."""

from __future__ import annotations

import pytest

import hippo_dask as hd
import hippo_dask.plan

USER_FACING = {
    "Study",
    "Trainer",
    "Trial",
    "GridSpace",
    "RandomSpace",
    "choice",
    "loguniform",
    "randint",
    "uniform",
    "seq",
    "tuners",
    "cluster",
    "Tuner",
    "wait_all",
    "wait_any",
    "Result",
    "TrialResult",
    "StudyStats",
    "HippoError",
    "TrialFailedError",
    "StorageError",
}
MODEL = ("Node", "PlanStats", "Request", "SearchPlan", "Stage", "StageTree")


def test_the_top_level_holds_what_users_write() -> None:
    assert USER_FACING <= set(hd.__all__)
    assert all(hasattr(hd, name) for name in hd.__all__)
    assert not set(MODEL) & set(hd.__all__)


@pytest.mark.parametrize("name", MODEL)
def test_the_model_is_in_hippo_dask_plan_and_the_old_names_still_work(name: str) -> None:
    assert name in hippo_dask.plan.__all__
    with pytest.warns(DeprecationWarning, match=f"use hippo_dask.plan.{name}"):
        assert getattr(hd, name) is getattr(hippo_dask.plan, name)
    with pytest.raises(AttributeError):
        hd.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
