"""Stage trees to Dask tasks: the driver (scheduling, reports) and the worker-side stage runner."""

from hippo_dask.execution._driver import Driver, RunStats, TrialFailedError
from hippo_dask.execution._identity import state_digest
from hippo_dask.execution._spec import Point, PointResult, StageReport, StageSpec
from hippo_dask.execution._worker import run_stage

__all__ = [
    "Driver",
    "Point",
    "PointResult",
    "RunStats",
    "StageReport",
    "StageSpec",
    "TrialFailedError",
    "run_stage",
    "state_digest",
]
