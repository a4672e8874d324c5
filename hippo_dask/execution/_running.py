"""What the driver knows about a stage it submitted and that has not reported yet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hippo_dask.execution._spec import Point
from hippo_dask.plan import Node

__all__ = ["Running"]


@dataclass
class Running:
    """A stage in flight: submitted to ``worker`` as Dask task ``key``, not reported yet.

    ``points`` are the steps it stops at (saves, evaluates), including those added while it
    runs; ``chain`` the keys of the chain it was submitted in.
    """

    key: str
    node: Node
    start: int
    stop: int
    worker: str
    points: dict[int, Point]
    future: Any
    chain: list[str] = field(default_factory=list)
    #: Queued behind another chain on its worker for order alone (not continuing from it):
    #: another worker may take it over while it has not started.
    lookahead: bool = False
    #: When it started, as far as this driver can tell (``time.monotonic()``), else ``None``.
    began: float | None = None

    def seconds(self) -> float:
        """Its estimated training time: steps times the node's profiled seconds per step."""
        return (self.stop - self.start) * self.node.profile()

    def seconds_left(self, now: float) -> float:
        """What is left of :meth:`seconds` at ``now`` (``time.monotonic()``): all of it until
        it is known to have started."""
        if self.began is None:
            return self.seconds()
        return max(0.0, self.began + self.seconds() - now)
