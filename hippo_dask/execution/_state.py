"""The state the driver's parts share, declared once: what :class:`Driver` holds.

The driver is one object in four modules (``_driver``, ``_placement``, ``_submission``,
``_reports``); each part is a base class of :class:`~hippo_dask.execution.Driver` and reads and
writes this state, which ``Driver.__init__`` sets. The methods declared here are those one
part calls on another; the part that defines them comes first in the driver's bases.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hippo_dask.execution._running import Running
from hippo_dask.execution._spec import Point, StageReport
from hippo_dask.plan import Node, SearchPlan
from hippo_dask.stages import Stage, StageTree
from hippo_dask.trial import Trial

if TYPE_CHECKING:
    import distributed

    from hippo_dask.errors import TrialFailedError
    from hippo_dask.execution._recorder import Recorder
    from hippo_dask.storage import CheckpointStore
    from hippo_dask.trainer import Trainer

__all__ = ["DriverState"]


class DriverState:
    """Attributes and cross-part methods of the driver (types only; see the module doc)."""

    plan: SearchPlan
    client: distributed.Client
    trainer_cls: type[Trainer]
    config_of: Callable[[Trial], dict[str, Any]]
    store: CheckpointStore
    _shipped_store: CheckpointStore | None = None  # what tasks carry (see _credentials)
    salt: str
    eval_every: int | None
    retries: int
    storage_timeout: float
    checkpoint_interval: float
    withdraw_after: float
    stats: Any
    loop: asyncio.AbstractEventLoop
    on_report: list[Callable[[StageReport], None]]
    _waiters: dict[tuple[Node, int], list[asyncio.Future[dict[str, float]]]]
    _failed: dict[tuple[Node, int], TrialFailedError]
    _running: dict[str, Running]
    _queued: dict[str, list[str]]  # worker -> keys submitted there, in order
    _closed: bool
    _digests: dict[tuple[str, int], str]
    _finished: OrderedDict[str, tuple[Any, StageReport]]
    _losses: dict[tuple[Node, int], set[str]]
    _dead: set[str]
    _attempts: dict[str, int]
    _missing: dict[str, int]
    _dead_ends: dict[tuple[Node, int], int]
    _recorder: Recorder | None
    _deadlines: dict[str, tuple[float, float] | None]
    _closing: set[str]
    _withdrawing: bool
    _withdrawal: asyncio.Task[None] | None

    # -- defined by Driver ----------------------------------------------------------------------
    def kick(self) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _fail_everyone(self, error: BaseException) -> None:
        raise NotImplementedError

    def _resolve_journaled(self, node: Node, step: int) -> None:
        raise NotImplementedError

    # -- defined by Placement -------------------------------------------------------------------
    def _add_points(self, r: Running, points: list[Point]) -> None:
        raise NotImplementedError

    # -- defined by Submission ------------------------------------------------------------------
    def _checkpoint_name(self, node: Node, step: int) -> str:
        raise NotImplementedError

    def _submit(self, chain: list[Stage], worker: str, tree: StageTree,
                after: Running | None = None) -> None:
        raise NotImplementedError

    def _renew_key(self, key: str) -> None:
        raise NotImplementedError

    # -- defined by Reports ---------------------------------------------------------------------
    def _done(self, key: str, payload: tuple[str, Any, str]) -> None:
        raise NotImplementedError

    def _ended(self, running: Running, status: str, report: StageReport | None = None, *,
               finished: float | None = None, error: str = "") -> None:
        raise NotImplementedError
