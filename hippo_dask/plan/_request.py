"""What a search plan hands out: :class:`Request` handles and :class:`PlanStats` figures."""

from __future__ import annotations

from dataclasses import dataclass

from hippo_dask.plan._trie import Node
from hippo_dask.trial import Trial

__all__ = ["PlanStats", "Request"]


@dataclass(frozen=True)
class PlanStats:
    """What a plan holds and what sharing saves.

    ``requested_steps`` counts, per request tag (by default the trial), the most steps asked
    for: what a trial-by-trial run that resumes its own trials would train. ``unique_steps`` is
    the size of the prefix tree over per-step values: what the plan trains at most.
    ``merge_rate`` is their ratio (Hippo's *p*), 1.0 for an empty plan.
    """

    trials: int
    requests: int
    requested_steps: int
    unique_steps: int
    merge_rate: float
    nodes: int
    pending: int


@dataclass(frozen=True, eq=False)
class Request:
    """A handle on ``trial`` trained for ``steps`` steps; ``node`` holds the answer."""

    trial: Trial
    steps: int
    node: Node
    tag: str

    @property
    def metrics(self) -> dict[str, float] | None:
        """The metrics at ``steps``, once recorded."""
        return self.node.metrics.get(self.steps)

    @property
    def done(self) -> bool:
        """Whether the metrics are in."""
        return self.steps in self.node.metrics
