"""Where a study keeps its checkpoints and metrics, on any fsspec URL.

:class:`CheckpointStore` is the interface the engine uses; :class:`FsspecCheckpointStore` keeps
atomic, checksummed checkpoint files on a local disk, ``s3://``, ``gs://``, ``memory://``, ...
:class:`StudyCheckpointStore` is a study's own: locations relative to the study root, confined
to its ``ckpt/`` folder, and leases on the files of running stages (for gc).
:class:`MetricsStore` appends metric rows and stage timings to a zarr v3 group, one subgroup
per writing process, readable by other processes while a study runs.
"""

from __future__ import annotations

from hippo_dask.storage._checkpoints import (
    FORMAT_VERSION,
    MAGIC,
    CheckpointStore,
    FsspecCheckpointStore,
)
from hippo_dask.storage._gc import GarbageReport, collect_garbage
from hippo_dask.storage._metrics import MetricRow, MetricsStore, StageRecord, new_writer_id
from hippo_dask.storage._study_store import StudyCheckpointStore

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CheckpointStore",
    "FsspecCheckpointStore",
    "GarbageReport",
    "MetricRow",
    "MetricsStore",
    "StageRecord",
    "StudyCheckpointStore",
    "collect_garbage",
    "new_writer_id",
]
