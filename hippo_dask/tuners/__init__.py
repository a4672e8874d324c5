"""Tuning algorithms: each is one coroutine over ``study.train``."""

from hippo_dask.tuners._base import Tuner, wait_all, wait_any
from hippo_dask.tuners._grid import Grid

__all__ = ["Grid", "Tuner", "wait_all", "wait_any"]
