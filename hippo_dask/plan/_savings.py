"""What sharing saves: the merge accounting of a set of requests and the one estimate of a
trial-by-trial run that ``result.stats``, the progress bar and the dashboard all show.

Steps. ``requested_steps`` is what a trial-by-trial run trains: each trial's longest request
(a trial extended from 15 to 60 steps costs 60, not 75). ``unique_steps`` is what is left
after merging shared prefixes: the size of the prefix tree over per-step values. Their ratio is
Hippo's merge rate *p*.

Worker time. The shared run's worker-seconds (every stage from submission on its worker to
its end: loading, training, evaluating, checkpointing, task overhead) are compared with a
trial-by-trial run of the same requests costed the same way::

    seconds per step       = worker_seconds / executed_steps      (all-inclusive, measured)
    trial-by-trial seconds = requested_steps x seconds per step
    saved fraction         = 1 - worker_seconds / trial-by-trial seconds
                           = 1 - executed_steps / requested_steps

Both sides pay the same all-inclusive price per step, so the saving is what the shared run did
not train: never negative while it trains fewer steps than the requests add up to, and below
-100 % only if it trained more than twice as many (work lost and redone). The price per step
spreads the shared run's per-stage costs (loading, evaluating, checkpointing) over its steps; a
trial-by-trial run is assumed to pay the same per step for its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from hippo_dask.plan._trie import Node, Trie
from hippo_dask.trial import Trial

__all__ = [
    "RequestTally",
    "mean_seconds_per_step",
    "merge_rate",
    "saved_fraction",
    "trial_by_trial_seconds",
]


def merge_rate(requested_steps: int, unique_steps: int) -> float:
    """Hippo's *p*: requested / unique steps (1.0 while nothing is requested)."""
    return requested_steps / unique_steps if unique_steps else 1.0


def trial_by_trial_seconds(
    requested_steps: int,
    executed_steps: int,
    worker_seconds: float,
    fallback: float | None = None,
) -> float | None:
    """Worker-seconds a trial-by-trial run of the same requests would take.

    ``requested_steps`` times the all-inclusive seconds per step of the shared run,
    ``worker_seconds / executed_steps`` (see the module docstring). ``fallback`` is the seconds
    per step to use when the run trained nothing (every answer came from an earlier run's
    checkpoints): the plan's :func:`mean_seconds_per_step`, a lower bound since it counts
    training only. ``None`` when there is neither.

    Examples
    --------
    >>> trial_by_trial_seconds(720, 300, 150.0)  # 0.5 s per step, all included
    360.0
    >>> trial_by_trial_seconds(720, 0, 0.0) is None
    True
    >>> trial_by_trial_seconds(720, 0, 0.0, fallback=0.25)
    180.0
    """
    if executed_steps > 0:
        per_step = worker_seconds / executed_steps
    elif fallback is not None:
        per_step = fallback
    else:
        return None
    return requested_steps * per_step


def saved_fraction(worker_seconds: float, trial_by_trial: float | None) -> float | None:
    """Share of the trial-by-trial worker time not spent: ``1 - worker / trial-by-trial``
    (``None`` without an estimate)."""
    if not trial_by_trial:
        return None
    return 1.0 - worker_seconds / trial_by_trial


def mean_seconds_per_step(nodes: Iterable[Node]) -> float | None:
    """Mean measured training seconds per step over ``nodes`` (``None`` if none is measured)."""
    measured = [n.seconds_per_step for n in nodes if n.seconds_per_step is not None]
    return sum(measured) / len(measured) if measured else None


class RequestTally:
    """Requested and unique steps of a set of requests, and their merge rate, without the rest of
    a search plan (no requests pending, no checkpoints, no journal).

    Examples
    --------
    >>> from hippo_dask import seq
    >>> tally = RequestTally()
    >>> tally.add(Trial(lr=seq.Constant(0.1)), 10, tag="a")
    >>> tally.add(Trial(lr=seq.MultiStep([0.1, 0.01], milestones=[5])), 10, tag="b")
    >>> tally.add(Trial(lr=seq.Constant(0.1)), 20, tag="a")  # a extended: 20, not 30
    >>> (tally.requested_steps, tally.unique_steps)
    (30, 25)
    """

    __slots__ = ("_tags", "_trie")

    def __init__(self) -> None:
        self._trie = Trie()
        self._tags: dict[str, int] = {}

    def add(self, trial: Trial, steps: int, tag: str | None = None) -> None:
        """Count ``trial`` asked for at ``steps`` steps; requests under one ``tag`` (default:
        the trial's id) count once, at their most steps."""
        self._trie.place(trial, steps)
        tag = trial.id if tag is None else str(tag)
        self._tags[tag] = max(self._tags.get(tag, 0), steps)

    @property
    def trials(self) -> int:
        """Tags counted."""
        return len(self._tags)

    @property
    def requested_steps(self) -> int:
        """Each tag's most steps, summed: what a trial-by-trial run trains."""
        return sum(self._tags.values())

    @property
    def unique_steps(self) -> int:
        """Steps after merging shared prefixes."""
        return self._trie.unique_steps

    @property
    def merge_rate(self) -> float:
        """:func:`merge_rate` of the two."""
        return merge_rate(self.requested_steps, self.unique_steps)
