"""Stage trees: the pending work of a search plan, cut into schedulable stages.

A stage trains one plan node from step ``start`` to ``stop``, starting from a checkpoint, from
the end of its parent stage, from a state another running stage promised, or from scratch. The
tree is built by Hippo's Algorithm 1 (Shin et al., "Hippo: Taming Hyper-parameter Optimization of
Deep Learning with Stage Trees", section 3.2): every pending request resumes from the latest
checkpoint on its path; nodes below share the stages above them. It is transient: rebuilt from
the plan whenever a scheduling decision is made, never stored.

The critical path (section 4.3) is the root-to-leaf chain with the longest estimated time (steps
times profiled seconds per step); :meth:`StageTree.paths` repeats that on what is left, which is
how the scheduler hands whole chains to workers. A node not measured yet is estimated by
:meth:`Node.profile <hippo_dask.plan.Node.profile>`: its nearest measured ancestor, else the
median of measured nodes with the same fixed values, else of the whole plan (1.0 s only while
nothing is measured), so a new part of the tree is weighed in the same unit as the rest.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hippo_dask.plan._trie import Node

__all__ = ["Stage", "StageTree", "build_stage_tree"]


@dataclass(eq=False, repr=False)
class Stage:
    """Train ``node`` from step ``start`` to ``stop``.

    Exactly one of ``parent`` (continue from that stage's end state), ``load_from`` (a checkpoint
    URI at ``start``) and ``after`` (``(token, start)``: the state a running stage, named by the
    execution layer's token, reaches at ``start``) is set, or none when training from scratch at
    step 0. A stage with ``start == stop`` only loads and evaluates.
    """

    node: Node
    start: int
    stop: int
    parent: Stage | None = None
    load_from: str | None = None
    after: Hashable | None = None
    evaluate: bool = False
    children: list[Stage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        """Steps this stage trains."""
        return self.stop - self.start

    def describe(self) -> tuple[Any, ...]:
        """A plain-data identity (owner trial id, start, stop, source), equal across processes."""
        source: Any
        if self.parent is not None:
            source = ("stage", self.parent.describe())
        elif self.load_from is not None:
            source = ("checkpoint", self.load_from)
        elif self.after is not None:
            source = ("after", self.after)
        else:
            source = ("scratch",)
        return (self.node.owner.id, self.node.start, self.start, self.stop, self.evaluate, source)

    def __repr__(self) -> str:
        source = (
            f"after stage {self.parent.node.id}:{self.parent.stop}"
            if self.parent is not None
            else f"from {self.load_from}"
            if self.load_from is not None
            else f"after {self.after!r}"
            if self.after is not None
            else "from scratch"
        )
        return f"<Stage node={self.node.id} {self.start}->{self.stop} {source}>"


class StageTree:
    """The pending stages of a plan, linked parent to children.

    Attributes
    ----------
    stages
        Every stage, parents before children.
    roots
        Stages that start from a checkpoint, a promise or scratch.
    """

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self.roots = [s for s in stages if s.parent is None]
        self._tail: dict[int, float] = {}
        for stage in reversed(stages):
            best = max((self._tail[id(c)] for c in stage.children), default=0.0)
            self._tail[id(stage)] = stage.seconds + best

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self) -> Any:
        return iter(self.stages)

    def remaining(self, stage: Stage) -> float:
        """Estimated seconds from the start of ``stage`` to the end of its longest descendant chain."""
        return self._tail[id(stage)]

    def _heaviest_chain(self, head: Stage) -> list[Stage]:
        chain = [head]
        while chain[-1].children:
            chain.append(max(chain[-1].children, key=self.remaining))
        return chain

    def critical_path(self) -> list[Stage]:
        """The root-to-leaf chain of stages with the longest estimated time (empty if none).

        A stage's estimate is its steps times the ``seconds_per_step`` the tree was built with
        (:meth:`Node.profile` unless told otherwise); ties go to the root listed first.
        """
        if not self.roots:
            return []
        return self._heaviest_chain(max(self.roots, key=self.remaining))

    def paths(self) -> list[list[Stage]]:
        """Split the tree into chains, longest first: the critical path, then the critical path
        of what hangs off it, and so on. Each chain is what one worker runs in one go."""
        heads = [(-self.remaining(r), i, r) for i, r in enumerate(self.roots)]
        heapq.heapify(heads)
        counter = len(heads)
        out: list[list[Stage]] = []
        while heads:
            _, _, head = heapq.heappop(heads)
            chain = self._heaviest_chain(head)
            out.append(chain)
            on_chain = set(map(id, chain))
            for stage in chain:
                for child in stage.children:
                    if id(child) not in on_chain:
                        heapq.heappush(heads, (-self.remaining(child), counter, child))
                        counter += 1
        return out

    @property
    def total_steps(self) -> int:
        """Steps the stages train, all together."""
        return sum(s.steps for s in self.stages)

    def __repr__(self) -> str:
        return f"<StageTree {len(self.stages)} stages, {self.total_steps} steps>"


_Source = tuple[
    str, Any
]  # ("stage", Stage) | ("checkpoint", uri) | ("after", token) | ("scratch", None)


def build_stage_tree(
    pending: Iterable[tuple[Node, int]],
    *,
    running: Mapping[Hashable, tuple[Node, int, int]] | None = None,
    seconds_per_step: Callable[[Node], float] = Node.profile,
) -> StageTree:
    """Algorithm 1: stages that answer every pending ``(node, step)`` from the latest state.

    Parameters
    ----------
    pending
        Requests still waiting for metrics: ``(node, step)`` with ``step`` in ``node``'s range.
    running
        Stages already running, by the execution layer's token: ``(node, start, stop)``. They
        can provide the state at any step in ``(start, stop]`` of ``node`` (the execution layer
        asks them to save there), so nothing they will pass is planned again; a stage starting
        from such a state gets ``after=(token, step)``.
    seconds_per_step
        The per-node time estimate for the critical path; by default :meth:`Node.profile`
        (measured, else estimated from the ancestors and the plan's other measurements).
    """
    in_flight: dict[Node, list[tuple[Hashable, int, int]]] = {}
    for token, (node, begin, end) in (running or {}).items():
        in_flight.setdefault(node, []).append((token, begin, end))

    def latest_source(node: Node, step: int) -> tuple[int, _Source] | None:
        best: tuple[int, _Source] | None = None
        found = node.latest_checkpoint(step)
        if found is not None:
            best = (found, ("checkpoint", node.checkpoints[found]))
        for token, begin, end in in_flight.get(node, ()):
            reach = min(step, end)
            if reach > begin and reach > node.start and (best is None or reach > best[0]):
                best = (reach, ("after", (token, reach)))
        return best

    # Pass 1, deepest nodes first: which steps must each node reach, and which nodes need
    # their parent's state at their branch step.
    needed: dict[Node, set[int]] = {}
    requested: dict[Node, set[int]] = {}
    heap: list[tuple[int, Node]] = []
    for node, step in pending:
        if node not in needed:
            needed[node] = set()
            requested[node] = set()
            heapq.heappush(heap, (-node.id, node))
        needed[node].add(step)
        requested[node].add(step)
    order: list[Node] = []
    while heap:
        _, node = heapq.heappop(heap)
        order.append(node)
        first = min(needed[node])
        if node.parent is None or latest_source(node, first) is not None:
            continue
        parent = node.parent
        if parent not in needed:
            needed[parent] = set()
            heapq.heappush(heap, (-parent.id, parent))
        needed[parent].add(node.start)

    # Pass 2, parents first: cut each node's needed steps into stages.
    state: dict[tuple[Node, int], _Source] = {}
    stages: list[Stage] = []
    for node in reversed(order):
        previous: tuple[int, _Source] | None = None
        spp = seconds_per_step(node)
        for target in sorted(needed[node]):
            source = latest_source(node, target)
            if previous is not None and (source is None or previous[0] >= source[0]):
                start, origin = previous
            elif source is not None:
                start, origin = source
            elif node.parent is not None:
                start, origin = node.start, state[(node.parent, node.start)]
            else:
                start, origin = 0, ("scratch", None)
            evaluate = target in requested.get(node, ())
            if start == target and not evaluate:
                state[(node, target)] = origin
            else:
                stage = Stage(node=node, start=start, stop=target, evaluate=evaluate)
                kind, value = origin
                if kind == "stage":
                    stage.parent = value
                    value.children.append(stage)
                elif kind == "checkpoint":
                    stage.load_from = value
                elif kind == "after":
                    stage.after = value
                stage.seconds = stage.steps * spp
                stages.append(stage)
                state[(node, target)] = origin if start == target else ("stage", stage)
            previous = (target, state[(node, target)])
    return StageTree(stages)
