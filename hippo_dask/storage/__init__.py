"""Where a study keeps its checkpoints and metrics, on any fsspec URL.

:class:`CheckpointStore` is the interface the engine uses; :class:`FsspecCheckpointStore` keeps
atomic, checksummed checkpoint files on a local disk, ``s3://``, ``gs://``, ``memory://``, ...
:class:`StudyCheckpointStore` is a study's own: locations relative to the study root, confined
to its ``ckpt/`` folder, and leases on the files of running stages (for gc).
:class:`MetricsStore` appends metric rows and stage timings to a zarr v3 group, one subgroup
per writing process, readable by other processes while a study runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hippo_dask.storage._checkpoints import (
    FORMAT_VERSION,
    MAGIC,
    CheckpointStore,
    FsspecCheckpointStore,
)
from hippo_dask.storage._gc import GarbageReport, collect_garbage
from hippo_dask.storage._metrics import MetricRow, MetricsStore, StageRecord, new_writer_id

# For the other packages of hippo_dask (outside __all__): how storage calls are retried, and
# which storage errors pass.
from hippo_dask.storage._retry import (  # noqa: E402
    permanent_error as permanent_error,
)
from hippo_dask.storage._retry import (
    transient as transient,
)
from hippo_dask.storage._retry import (
    with_retries as with_retries,
)
from hippo_dask.storage._retry import (
    with_retries_async as with_retries_async,
)
from hippo_dask.storage._study_store import StudyCheckpointStore

if TYPE_CHECKING:
    from hippo_dask.storage._state_file import SAFE_GLOBALS as SAFE_GLOBALS
    from hippo_dask.storage._state_file import load_state as load_state
    from hippo_dask.storage._state_file import safe_globals as safe_globals
    from hippo_dask.storage._state_file import save_state as save_state

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

# The state file format (the payload of every checkpoint) needs torch; these names import it on
# first use, so importing storage does not. Users reach them as hippo_dask.torch's.
_STATE_FILE: frozenset[str] = frozenset(
    {"SAFE_GLOBALS", "load_state", "safe_globals", "save_state"}
)


def __getattr__(name: str) -> Any:
    if name in _STATE_FILE:
        from hippo_dask.storage import _state_file

        return getattr(_state_file, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
