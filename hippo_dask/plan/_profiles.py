"""Seconds per step for nodes that nothing has measured yet.

A node's profile (measured training seconds per step, reported at the end of each stage) drives
two decisions before the node has run at all: the critical path (steps x seconds per step,
:mod:`hippo_dask.plan._stages`) and how often a long stage saves an interval checkpoint
(``hippo.checkpoint-interval`` seconds of training, in steps). A fixed 1.0 s per step was
wrong in both by the ratio of the real step time to one second: a new root of the tree looked
a hundred times shorter than its profiled neighbours (epochs of 100 s), and its first stage,
whose interval in steps came out longer than the stage, saved nothing inside it, so a trial
arriving later that branched inside that stage trained the prefix again from scratch.

The time of a step depends on the configuration: on fixed values (model width, optimizer) and
on sequential ones (batch size). :meth:`Node.profile <hippo_dask.plan.Node.profile>` therefore
asks, in this order: the node's own measurement; its nearest measured ancestor's (same fixed
values, same sequence values up to the branch step); then this pool: the median of the measured
nodes with the same fixed values and the same sequential hyper-parameters (a root that differs
from measured roots only in a starting learning rate); then the median of every measured node
of the plan; only an empty plan falls back to :data:`DEFAULT_SECONDS_PER_STEP`. Medians keep one
outlier (a node measured on a slow worker, a stage that was mostly start-up) from moving the
estimate. Values the study adds to every trial (names starting with ``_hippo_``, such as the
per-trial isolation key of ``Study(sharing=False)``) do not change what a step costs and are
left out of the grouping.

Pure Python, no dask or torch: like the rest of the plan, it is tested without a cluster.
"""

from __future__ import annotations

import bisect
from typing import Any

from hippo_dask.trial import Trial

__all__ = ["DEFAULT_SECONDS_PER_STEP", "Profiles", "profile_group"]

#: Seconds per step assumed while a plan holds no measurement at all.
DEFAULT_SECONDS_PER_STEP = 1.0
#: Prefix of the values a study adds to every trial (not the user's configuration).
ENGINE_PREFIX = "_hippo_"

Group = tuple[tuple[Any, ...], tuple[str, ...]]


def profile_group(trial: Trial) -> Group:
    """The trials whose measured step times are pooled for ``trial``: the same fixed values
    (without the study's own ``_hippo_*`` values) and the same sequential hyper-parameters."""
    fixed = tuple(item for item in trial.fixed_key if not str(item[0]).startswith(ENGINE_PREFIX))
    return fixed, trial.names


def _median(values: list[float]) -> float:
    """Median of a sorted, non-empty list."""
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


class Profiles:
    """Measured seconds per step of a plan's nodes, pooled by :func:`profile_group`.

    Each node counts once, with its latest measurement.

    Examples
    --------
    >>> from hippo_dask import Trial, seq
    >>> book = Profiles()
    >>> a = Trial(lr=seq.Constant(0.1), width=64)
    >>> book.record(0, a, 2.0)
    >>> book.record(1, a, 4.0)
    >>> book.record(2, Trial(lr=seq.Constant(0.1), width=512), 30.0)
    >>> book.estimate(Trial(lr=seq.Constant(0.3), width=64))   # same fixed values
    3.0
    >>> book.estimate(Trial(lr=seq.Constant(0.3), width=128))  # the plan's median
    4.0
    """

    def __init__(self) -> None:
        self._by_node: dict[int, tuple[Group, float]] = {}
        self._groups: dict[Group, list[float]] = {}
        self._all: list[float] = []
        self._group_of: dict[str, Group] = {}

    def __len__(self) -> int:
        return len(self._by_node)

    def _group(self, trial: Trial) -> Group:
        group = self._group_of.get(trial.id)
        if group is None:
            group = self._group_of[trial.id] = profile_group(trial)
        return group

    def record(self, node_id: int, owner: Trial, seconds: float) -> None:
        """Node ``node_id`` (owned by ``owner``) measured ``seconds`` per step; replaces an
        earlier measurement of the same node."""
        old = self._by_node.get(node_id)
        if old is not None:
            group, value = old
            members = self._groups[group]
            del members[bisect.bisect_left(members, value)]
            del self._all[bisect.bisect_left(self._all, value)]
        group = self._group(owner)
        self._by_node[node_id] = (group, seconds)
        bisect.insort(self._groups.setdefault(group, []), seconds)
        bisect.insort(self._all, seconds)

    def estimate(self, owner: Trial) -> float | None:
        """Seconds per step for a node of ``owner`` that has no measurement on its path: the
        median over its group, else over the plan, else ``None`` (nothing measured)."""
        members = self._groups.get(self._group(owner))
        if members:
            return _median(members)
        if self._all:
            return _median(self._all)
        return None
