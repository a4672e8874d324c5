"""Exceptions and warnings raised by hippo_dask.

Every error also subclasses the builtin a caller would naturally catch (``ValueError`` for bad
input, ``FileNotFoundError`` for a missing checkpoint), so code that does not know hippo_dask
still handles it sensibly.
"""

from __future__ import annotations

__all__ = [
    "CheckpointNotFoundError",
    "ClusterStartError",
    "CorruptCheckpointError",
    "DependencyError",
    "HippoError",
    "HippoWarning",
    "InvalidMetricsError",
    "InvalidSequenceError",
    "InvalidSpaceError",
    "InvalidTrialError",
    "JournalError",
    "StorageError",
    "StudyNotFoundError",
    "TrialFailedError",
]


class HippoError(Exception):
    """Base class of every error hippo_dask raises on purpose."""


class HippoWarning(UserWarning):
    """Something was wrong but the study could go on (a torn journal record, say)."""


class InvalidSequenceError(HippoError, ValueError):
    """A hyper-parameter sequence was built with arguments that cannot describe a schedule."""


class InvalidSpaceError(HippoError, ValueError):
    """A search space or distribution was built with arguments that describe no trials."""


class InvalidTrialError(HippoError, ValueError):
    """A trial holds a value the engine cannot store, compare or hand to a trainer."""


class JournalError(HippoError, OSError):
    """The search plan's journal could not be read or written."""


class StudyNotFoundError(HippoError, FileNotFoundError):
    """A storage URL holds no study, or not the study asked for; the message says what it holds."""


class CheckpointNotFoundError(HippoError, FileNotFoundError):
    """A checkpoint the plan refers to is not in storage (deleted behind the engine's back)."""


class CorruptCheckpointError(HippoError, ValueError):
    """A checkpoint failed its checksum or format check, or would need code to load."""


class DependencyError(HippoError, RuntimeError):
    """An installed dependency is older than what one of hippo_dask's guarantees rests on (a
    torch whose ``weights_only`` loading crafted checkpoints could bypass)."""


class ClusterStartError(HippoError, RuntimeError):
    """A cluster could not start its workers: the batch system refused the jobs (``sbatch``
    rejected a partition, a gres, a time limit); the message quotes it and names the fix."""


class StorageError(HippoError, OSError):
    """Storage could not be reached or written.

    ``transient`` says whether waiting may help: ``True`` for an outage (a timeout, a refused
    connection, a 5xx answer, throttling), which the engine retries for
    ``hippo.storage-timeout`` seconds; ``False`` for a refusal that only the user can fix
    (access denied, no such bucket or file), which fails at once; ``None`` when the raiser did
    not say (treated as an outage).
    """

    def __init__(self, *args: object, transient: bool | None = None) -> None:
        super().__init__(*args)
        self.transient = transient


class InvalidMetricsError(HippoError, ValueError):
    """``Trainer.evaluate()`` returned something that is not a dict of metric name to number,
    or used a name the engine keeps for itself."""


class TrialFailedError(HippoError, RuntimeError):
    """A stage a trial needs raised in the trainer; carries the worker's traceback."""

    def __init__(self, message: str, *, exc_type: str, stage: str, worker_traceback: str) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.stage = stage
        self.worker_traceback = worker_traceback
