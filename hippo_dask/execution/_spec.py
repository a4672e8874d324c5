"""What the driver sends to a worker for one stage, and what comes back. Plain data only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hippo_dask.trial import Trial

if TYPE_CHECKING:
    from hippo_dask.storage import CheckpointStore
    from hippo_dask.trainer import Trainer

__all__ = ["Point", "PointResult", "StageReport", "StageSpec"]


@dataclass(frozen=True)
class Point:
    """A step where the stage stops to evaluate and/or save a checkpoint (named ``checkpoint``)."""

    step: int
    evaluate: bool = False
    checkpoint: str | None = None

    def merge(self, other: Point) -> Point:
        """This point and ``other`` (the same step) as one: evaluate if either does, save under
        this one's name, else ``other``'s."""
        return Point(
            self.step, self.evaluate or other.evaluate, self.checkpoint or other.checkpoint
        )

    def covers(self, other: Point) -> bool:
        """Whether stopping here does all that ``other`` asks for."""
        return (self.evaluate or not other.evaluate) and (
            self.checkpoint is not None or other.checkpoint is None
        )


@dataclass(frozen=True)
class StageSpec:
    """Train ``trial``'s path from ``start`` to ``stop`` with ``trainer_cls``.

    The worker resumes, in order of preference: the live trainer the previous stage of its chain
    left in this worker's memory (``previous``, checked by ``start_digest``); then each of
    ``sources`` (checkpoints on the path at or before ``start``, latest first), training the
    missing steps; then from scratch. So a lost worker or a bad checkpoint costs retraining,
    never a wrong result.
    """

    key: str
    trainer_cls: type[Trainer]
    config: dict[str, Any]
    trial: Trial
    start: int
    stop: int
    start_digest: str
    stop_digest: str
    fingerprint: str
    points: tuple[Point, ...]
    store: CheckpointStore
    sources: tuple[tuple[int, str], ...] = ()
    previous: str | None = None
    storage_timeout: float = 300.0
    #: The first Dask dependency is the stage whose end state this one continues from (its
    #: failure means this stage must not run); otherwise dependencies only order stages.
    chained: bool = False


@dataclass(frozen=True)
class PointResult:
    """What happened at one point: metrics measured, checkpoint written (its URI)."""

    step: int
    metrics: dict[str, float] | None = None
    checkpoint: str | None = None
    wall_time: float = 0.0


@dataclass
class StageReport:
    """The outcome of one stage, gathered by the driver."""

    key: str
    worker: str
    started: float
    finished: float
    trained_steps: int
    train_seconds: float
    resumed_from: str
    points: list[PointResult] = field(default_factory=list)
    bad_checkpoints: list[tuple[str, str]] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    error: tuple[str, str, str] | None = None  # (type, message, traceback) if the trainer raised
    skipped: bool = False  # not run: the stage it continues from failed

    @property
    def seconds_per_step(self) -> float | None:
        """Measured training time per step (``None`` when nothing was trained)."""
        return self.train_seconds / self.trained_steps if self.trained_steps else None
