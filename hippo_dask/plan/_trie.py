"""The value-level prefix tree under a search plan.

A node is a configuration from a start step on: the fixed values and sequences of the trial that
created it (its *owner*), trained from the state its parent reaches at ``start``. A trial walks
the tree from its root (found by fixed values, value kinds and the values at step 0); at each
node it continues while its values equal the owner's, and at the first step ``d`` where they
differ it moves to the child that branched off at ``d`` with the same values at ``d``, or
creates it. So nodes split exactly where values differ, whatever family wrote the sequences, and
nodes are only ever added.

Invariant that keeps the walk cheap: a trial standing in node ``N`` agrees with ``N``'s owner on
every step up to ``N.start`` (it agreed with the ancestors before, and with the owner at the
branch step, which is the child index's key). So the first step where they differ at all, which
:class:`~hippo_dask.seq.DifferenceCache` memoises per pair of sequences, is the step where the
trial leaves ``N``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from hippo_dask.plan._profiles import DEFAULT_SECONDS_PER_STEP, Profiles
from hippo_dask.seq import DifferenceCache
from hippo_dask.trial import Trial

__all__ = ["Node", "Trie"]

RootKey = tuple[Any, ...]


class Node:
    """One configuration from ``start`` on; holds what the plan knows about it.

    Attributes
    ----------
    id
        Creation order within this plan (a child always has a larger id than its parent).
    parent, start
        The node whose state at step ``start`` this one trains from (``None`` and 0 at a root).
    owner
        The trial whose fixed values and sequences this node trains with.
    extent
        Requested steps reach up to here: the node covers steps ``start .. extent - 1``.
    checkpoints, metrics
        By step: the state after that many steps along this node's path. A state at a child's
        branch step belongs to the parent (the node that trained the last step before it).
    requests
        By step: how many requests end there.
    seconds_per_step
        Measured training seconds per step, or ``None`` until measured. Setting it also records the
        measurement in the plan's pool of profiles (:class:`~hippo_dask.plan._profiles.Profiles`),
        which :meth:`profile` consults for nodes with nothing measured on their path.
    """

    __slots__ = (
        "_profiles",
        "_seconds_per_step",
        "checkpoint_steps",
        "checkpoints",
        "children",
        "depth",
        "extent",
        "id",
        "metrics",
        "owner",
        "parent",
        "requests",
        "start",
    )

    def __init__(
        self,
        id: int,
        owner: Trial,
        start: int,
        parent: Node | None,
        profiles: Profiles | None = None,
    ) -> None:
        self.id = id
        self.owner = owner
        self.start = start
        self.parent = parent
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.children: dict[tuple[int, tuple[Any, ...]], Node] = {}
        self.extent = start
        self.checkpoints: dict[int, str] = {}
        self.checkpoint_steps: list[int] = []
        self.metrics: dict[int, dict[str, float]] = {}
        self.requests: dict[int, int] = {}
        self._seconds_per_step: float | None = None
        self._profiles = profiles

    @property
    def seconds_per_step(self) -> float | None:
        """This node's own measured training seconds per step (``None`` until measured)."""
        return self._seconds_per_step

    @seconds_per_step.setter
    def seconds_per_step(self, seconds: float | None) -> None:
        self._seconds_per_step = seconds
        if seconds is not None and self._profiles is not None:
            self._profiles.record(self.id, self.owner, seconds)

    def latest_checkpoint(self, step: int) -> int | None:
        """The largest checkpointed step in ``(start, step]`` of this node, or ``None``."""
        steps = self.checkpoint_steps
        i = bisect.bisect_right(steps, step)
        if i and steps[i - 1] > self.start:
            return steps[i - 1]
        return None

    def add_checkpoint(self, step: int, uri: str) -> None:
        if step not in self.checkpoints:
            bisect.insort(self.checkpoint_steps, step)
        self.checkpoints[step] = uri

    def remove_checkpoint(self, step: int) -> None:
        if self.checkpoints.pop(step, None) is not None:
            self.checkpoint_steps.remove(step)

    def profile(self) -> float:
        """Seconds per step for planning (critical paths, checkpoint intervals).

        This node's measurement, else its nearest measured ancestor's, else the median of the
        plan's measured nodes with the same fixed values and sequential hyper-parameters, else
        the median of all its measured nodes; 1.0 only while nothing is measured (see
        :mod:`hippo_dask.plan._profiles`).
        """
        for node in self.ancestors(inclusive=True):
            if node._seconds_per_step is not None:
                return node._seconds_per_step
        pooled = None if self._profiles is None else self._profiles.estimate(self.owner)
        return DEFAULT_SECONDS_PER_STEP if pooled is None else pooled

    def ancestors(self, *, inclusive: bool = False) -> Iterator[Node]:
        """The nodes above this one, nearest first: its parent, the parent's parent, and so on up
        to the root. With ``inclusive`` this node comes first. :meth:`path` is the same chain
        from the root down.

        A walk up a trial's path that tracks how far each node is used reads::

            reach = steps
            for node in located.ancestors(inclusive=True):
                ...  # node's steps node.start .. reach - 1
                reach = node.start
        """
        node = self if inclusive else self.parent
        while node is not None:
            yield node
            node = node.parent

    def path(self) -> list[Node]:
        """Nodes from the root down to this one."""
        return list(self.ancestors(inclusive=True))[::-1]

    def __repr__(self) -> str:
        return f"<Node {self.id} start={self.start} extent={self.extent} owner={self.owner!r}>"


class Trie:
    """Nodes of a search plan and the walk that places a trial's steps among them."""

    def __init__(self) -> None:
        self.roots: dict[RootKey, Node] = {}
        self.nodes: list[Node] = []
        self.unique_steps = 0
        self.profiles = Profiles()
        self._diff = DifferenceCache()

    def _new_node(self, owner: Trial, start: int, parent: Node | None) -> Node:
        node = Node(len(self.nodes), owner, start, parent, self.profiles)
        self.nodes.append(node)
        return node

    def attach(self, owner: Trial, start: int, parent: Node | None, extent: int) -> Node:
        """Add a node as :meth:`place` created it, without the walk (rebuilding a snapshot:
        parents first). Raises ``ValueError`` where that place is taken or impossible."""
        if parent is None:
            key: Any = self.root_key(owner)
            if start != 0 or key in self.roots:
                raise ValueError(f"a root of {owner.id} at step {start} cannot be added")
        else:
            key = (start, owner.value_key(start))
            if not parent.start < start or key in parent.children:
                raise ValueError(f"a child of node {parent.id} at step {start} cannot be added")
        if extent < start:
            raise ValueError(f"node extent {extent} is before its start {start}")
        node = self._new_node(owner, start, parent)
        if parent is None:
            self.roots[key] = node
        else:
            parent.children[key] = node
        node.extent = extent
        self.unique_steps += extent - start
        return node

    def _extend(self, node: Node, stop: int) -> None:
        if stop > node.extent:
            self.unique_steps += stop - node.extent
            node.extent = stop

    def _leave_step(self, node: Node, trial: Trial, stop: int) -> int | None:
        """First step before ``stop`` where ``trial`` no longer follows ``node``'s owner."""
        owner = node.owner
        if owner is trial:
            return None
        first: int | None = None
        diff = self._diff
        owner_seqs = owner.sequences
        for name, sequence in trial.sequences.items():
            step = diff(owner_seqs[name], sequence, stop if first is None else first)
            if step is not None and (first is None or step < first):
                first = step
        return first

    @staticmethod
    def root_key(trial: Trial) -> RootKey:
        return (trial.fixed_key, trial.names, trial.kinds, trial.value_key(0))

    def place(
        self, trial: Trial, steps: int, *, create: bool = True, extend: bool = True
    ) -> Node | None:
        """The node holding ``trial``'s step ``steps - 1`` (where its state after ``steps`` lives).

        With ``create`` the missing part of the path is added; with ``extend`` the path's nodes
        are marked as requested up to ``steps`` (counted in ``unique_steps``). Without ``create``
        a path that leaves the tree gives ``None``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        key = self.root_key(trial)
        node = self.roots.get(key)
        if node is None:
            if not create:
                return None
            node = self._new_node(trial, 0, None)
            self.roots[key] = node
        while True:
            leave = self._leave_step(node, trial, steps)
            if leave is None:
                break
            if extend:
                self._extend(node, leave)
            child_key = (leave, trial.value_key(leave))
            child = node.children.get(child_key)
            if child is None:
                if not create:
                    return None
                child = self._new_node(trial, leave, node)
                node.children[child_key] = child
            node = child
        if extend:
            self._extend(node, steps)
        return node

    @staticmethod
    def owner_of_state(node: Node, step: int) -> Node:
        """The node a state at ``step`` reached through ``node`` is kept on (the canonical one).

        The state after ``step`` steps belongs to the node that trained step ``step - 1``: at a
        branch step that is the parent.
        """
        if step < node.start:
            raise ValueError(f"step {step} is before node {node.id}'s start {node.start}")
        if step == node.start and node.parent is not None:
            return node.parent
        return node
