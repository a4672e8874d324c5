"""The search plan: a persistent, value-level prefix tree of every requested trial."""

from hippo_dask.plan._journal import Journal
from hippo_dask.plan._plan import SearchPlan
from hippo_dask.plan._request import PlanStats, Request
from hippo_dask.plan._savings import (
    RequestTally,
    mean_seconds_per_step,
    merge_rate,
    saved_fraction,
    trial_by_trial_seconds,
)
from hippo_dask.plan._stages import Stage, StageTree, build_stage_tree
from hippo_dask.plan._trie import Node

__all__ = [
    "Journal",
    "Node",
    "PlanStats",
    "Request",
    "RequestTally",
    "SearchPlan",
    "Stage",
    "StageTree",
    "build_stage_tree",
    "mean_seconds_per_step",
    "merge_rate",
    "saved_fraction",
    "trial_by_trial_seconds",
]
