"""hippo_dask: hyper-parameter optimization on Dask that never trains the same thing twice.

Trials whose hyper-parameter sequences agree on a prefix share it: the prefix is trained once,
checkpointed, and every trial below resumes from it (Hippo's stage trees).

What a study's user writes is here: :class:`Study`, :class:`Trainer`, :class:`Trial`, the
spaces and distributions, :mod:`~hippo_dask.seq`, :mod:`~hippo_dask.tuners`,
:mod:`~hippo_dask.cluster`, the errors and what ``tune`` returns. The model underneath (the
search plan, its nodes and requests, stage trees) is in :mod:`hippo_dask.plan`.
"""

import warnings
from typing import Any

from hippo_dask import (
    _settings,  # noqa: F401  (registers hippo.yaml with dask.config)
    cluster,
    seq,
    tuners,
)
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
    TrialFailedError,
)
from hippo_dask.space import GridSpace, RandomSpace, choice, loguniform, randint, uniform
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
    "RandomSpace",
    "Result",
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

_MOVED = frozenset({"Node", "PlanStats", "Request", "SearchPlan", "Stage", "StageTree"})


def __getattr__(name: str) -> Any:
    """The plan's types, once exported here, are in :mod:`hippo_dask.plan` (deprecated here)."""
    if name in _MOVED:
        warnings.warn(
            f"hippo_dask.{name} is deprecated: use hippo_dask.plan.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        from hippo_dask import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'hippo_dask' has no attribute {name!r}")
