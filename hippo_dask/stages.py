"""Moved to :mod:`hippo_dask.plan`; this re-export goes once execution and benchmarks import from there."""

from hippo_dask.plan import Stage, StageTree, build_stage_tree

__all__ = ["Stage", "StageTree", "build_stage_tree"]
