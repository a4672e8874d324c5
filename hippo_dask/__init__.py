"""hippo_dask: hyper-parameter optimization on Dask that never trains the same thing twice.

Trials whose hyper-parameter sequences agree on a prefix share it: the prefix is trained once,
checkpointed, and every trial below resumes from it (Hippo's stage trees).
"""

from hippo_dask import _settings  # noqa: F401  (registers hippo.yaml with dask.config)
from hippo_dask import cluster, seq, tuners
from hippo_dask.errors import (
    CheckpointNotFoundError,
    ClusterStartError,
    CorruptCheckpointError,
    DependencyError,
    HippoError,
    HippoWarning,
    InvalidMetricsError,
    InvalidSequenceError,
    InvalidSpaceError,
    InvalidTrialError,
    JournalError,
    StorageError,
    StudyNotFoundError,
)
from hippo_dask.plan import Node, PlanStats, Request, SearchPlan
from hippo_dask.space import GridSpace, RandomSpace, choice, loguniform, randint, uniform
from hippo_dask.stages import Stage, StageTree
from hippo_dask.execution import TrialFailedError
from hippo_dask.study import Result, Study, StudyStats, TrialResult
from hippo_dask.trainer import Trainer
from hippo_dask.trial import Trial
from hippo_dask.tuners import Tuner, wait_all, wait_any

__version__ = "0.1.0.dev0"

__all__ = [
    "CheckpointNotFoundError",
    "ClusterStartError",
    "CorruptCheckpointError",
    "DependencyError",
    "GridSpace",
    "HippoError",
    "HippoWarning",
    "InvalidMetricsError",
    "InvalidSequenceError",
    "InvalidSpaceError",
    "InvalidTrialError",
    "JournalError",
    "Node",
    "PlanStats",
    "RandomSpace",
    "Request",
    "Result",
    "SearchPlan",
    "Stage",
    "StageTree",
    "StorageError",
    "Study",
    "StudyNotFoundError",
    "StudyStats",
    "Trainer",
    "Trial",
    "TrialFailedError",
    "TrialResult",
    "Tuner",
    "choice",
    "cluster",
    "loguniform",
    "randint",
    "seq",
    "tuners",
    "uniform",
    "wait_all",
    "wait_any",
]
