"""hippo_dask: hyper-parameter optimization on Dask that never trains the same thing twice.

Trials whose hyper-parameter sequences agree on a prefix share it: the prefix is trained once,
checkpointed, and every trial below resumes from it (Hippo's stage trees).
"""

from hippo_dask import seq
from hippo_dask.errors import (
    HippoError,
    HippoWarning,
    InvalidSequenceError,
    InvalidSpaceError,
    InvalidTrialError,
    JournalError,
)
from hippo_dask.plan import Node, PlanStats, Request, SearchPlan
from hippo_dask.space import GridSpace, RandomSpace, choice, loguniform, randint, uniform
from hippo_dask.stages import Stage, StageTree
from hippo_dask.trial import Trial

__version__ = "0.1.0.dev0"

__all__ = [
    "GridSpace",
    "HippoError",
    "HippoWarning",
    "InvalidSequenceError",
    "InvalidSpaceError",
    "InvalidTrialError",
    "JournalError",
    "Node",
    "PlanStats",
    "RandomSpace",
    "Request",
    "SearchPlan",
    "Stage",
    "StageTree",
    "Trial",
    "choice",
    "loguniform",
    "randint",
    "seq",
    "uniform",
]
