"""Names and limits that several packages of hippo_dask agree on, defined once.

A package may import this module; no package imports another package's private modules. What
lives here is plain data: the Dask resource every stage asks for, the scheduler metadata key
adaptive clusters scale on, how a stage ended in the metrics store, and the bounds every journal
reader applies.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BASE_COLUMNS",
    "CANCELLED",
    "DEMAND_KEY",
    "DONE",
    "ENDED",
    "FAILED",
    "GPU",
    "LOST",
    "MAX_STEPS",
    "RETRIED",
    "STAGE_STATUSES",
    "SUBMITTED",
]

GPU: Final = "GPU"
"""The Dask worker resource every stage asks for one of: a GPU (or a slot on a CPU machine)."""

DEMAND_KEY: Final = "hippo-demand"
"""Scheduler metadata key under which each driver publishes ``[workers it could use, unix
time]``; the SLURM cluster's adaptive scaling reads it."""

BASE_COLUMNS: Final = ("trial", "step", "wall_time", "worker", "writer", "kind")
"""Columns of the metrics store's table before the metric columns; no metric may use these."""

MAX_STEPS: Final = 10**12
"""Most steps a journal record may name; more is a damaged or hostile record, not a training
run (``hippo.max-steps`` may lower, never raise, what a study accepts)."""

SUBMITTED: Final = "submitted"
"""The driver handed the stage to its worker; it runs or waits there until an ending record."""
DONE: Final = "done"
"""The stage trained to its end and reported (the only status older writers wrote)."""
FAILED: Final = "failed"
"""It failed for good: the trials needing it failed (``error`` says with what)."""
RETRIED: Final = "retried"
"""The trainer raised; the stage is planned again (``Study(retries=...)``)."""
LOST: Final = "lost"
"""Its worker left (killed, pre-empted, restarted); it is planned again from checkpoints."""
CANCELLED: Final = "cancelled"
"""The driver stopped it (the study closed), or it never ran because the stage it continues
from failed."""
STAGE_STATUSES: Final = (SUBMITTED, DONE, FAILED, RETRIED, LOST, CANCELLED)
"""What the driver writes in a stage record's ``status``."""
ENDED: Final = (DONE, FAILED, RETRIED, LOST, CANCELLED)
"""Statuses that end a stage."""
