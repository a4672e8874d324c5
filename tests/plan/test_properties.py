"""Property tests: the plan against a brute-force model of the sharing rule.

Random request streams over mixed families (shared and unshared prefixes, fixed values) check
that unique steps equal a per-step trie count, that stage trees train every pending step exactly
once and never across differing values, and that a reopened plan is the same plan.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import hippo_dask as hd
from hippo_dask.plan import SearchPlan
from hippo_dask.testing.strategies import requests, trials
from tests.plan.model import state, unique_steps

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(requests())
def test_unique_steps_equal_a_brute_force_trie_count(stream: list[tuple[hd.Trial, int]]) -> None:
    plan = SearchPlan()
    for trial, steps in stream:
        plan.add(trial, steps)
    stats = plan.stats()
    assert stats.unique_steps == unique_steps(stream)
    longest: dict[str, int] = {}
    for trial, steps in stream:
        longest[trial.id] = max(longest.get(trial.id, 0), steps)
    assert stats.requested_steps == sum(longest.values())


@SETTINGS
@given(requests())
def test_every_node_trains_with_one_set_of_values(stream: list[tuple[hd.Trial, int]]) -> None:
    plan = SearchPlan()
    placed = [(trial, steps, plan.add(trial, steps).node) for trial, steps in stream]
    for trial, steps, _ in placed:
        # The request's state is the one its node's owner reaches at that step.
        node = plan.locate(trial, steps)
        assert node is not None
        assert state(trial, steps) == state(node.owner, steps)
        # And every node on the way agrees with the trial on the steps the trial spends in it.
        path = node.path()
        for on_path, below in zip(path, path[1:] + [None]):
            leave = steps if below is None else below.start
            assert on_path.extent >= leave
            for s in range(on_path.start, leave):
                assert trial.values_at(s) == on_path.owner.values_at(s)


def _check_stage_tree(
    plan: SearchPlan,
    stream: list[tuple[hd.Trial, int]],
    saved: dict[tuple[Any, ...], str],
    answered: set[tuple[Any, ...]],
) -> None:
    tree = plan.stage_tree()
    pending = {state(t, T): (t, T) for t, T in stream if state(t, T) not in answered}
    # Steps that must be trained: from the latest saved state on each pending path.
    needed: set[tuple[Any, ...]] = set()
    for trial, T in pending.values():
        latest = max((c for c in range(1, T + 1) if state(trial, c) in saved), default=0)
        needed.update(state(trial, s) for s in range(latest + 1, T + 1))
    trained: list[tuple[Any, ...]] = []
    for stage in tree.stages:
        owner = stage.node.owner
        trained.extend(state(owner, s) for s in range(stage.start + 1, stage.stop + 1))
        if stage.parent is not None:
            assert stage.start == stage.parent.stop
            assert state(stage.parent.node.owner, stage.start) == state(owner, stage.start)
        elif stage.load_from is not None:
            assert saved[state(owner, stage.start)] == stage.load_from
        else:
            assert stage.start == 0 and stage.after is None
        assert stage.node.start <= stage.start <= stage.stop
    assert len(trained) == len(set(trained)), "a step is trained twice"
    assert set(trained) == needed
    evaluated = {state(s.node.owner, s.stop) for s in tree.stages if s.evaluate}
    assert evaluated == set(pending)


@SETTINGS
@given(requests(), st.data())
def test_stage_trees_train_each_pending_step_once_from_the_latest_checkpoint(
    stream: list[tuple[hd.Trial, int]], data: st.DataObject
) -> None:
    plan = SearchPlan()
    for trial, steps in stream:
        plan.add(trial, steps)
    saved: dict[tuple[Any, ...], str] = {}
    answered: set[tuple[Any, ...]] = set()
    _check_stage_tree(plan, stream, saved, answered)
    # Record checkpoints and metrics at random points on the requested paths, then rebuild.
    for _ in range(data.draw(st.integers(0, 6), label="records")):
        index = data.draw(st.integers(0, len(stream) - 1), label="request")
        trial, steps = stream[index]
        at = data.draw(st.integers(1, steps), label="step")
        node = plan.locate(trial, at)
        assert node is not None
        if data.draw(st.booleans(), label="checkpoint?"):
            uri = f"ckpt/{uuid.uuid4().hex}"
            plan.record_checkpoint(node, at, uri)
            saved[state(trial, at)] = uri
        else:
            plan.record_metrics(node, at, {"acc": 0.5})
            answered.add(state(trial, at))
    _check_stage_tree(plan, stream, saved, answered)


def _describe(plan: SearchPlan) -> tuple[Any, ...]:
    nodes = [
        (
            n.owner.id,
            n.start,
            n.extent,
            n.parent.id if n.parent else None,
            sorted(n.checkpoints.items()),
            sorted(n.metrics.items()),
            n.seconds_per_step,
        )
        for n in plan.nodes
    ]
    return (plan.stats(), nodes, [s.describe() for s in plan.stage_tree().stages])


@SETTINGS
@given(requests(), st.data())
def test_reopening_a_persisted_plan_gives_the_same_plan(
    stream: list[tuple[hd.Trial, int]], data: st.DataObject
) -> None:
    url = f"memory://plans/{uuid.uuid4().hex}"
    plan = SearchPlan.open(url)
    for i, (trial, steps) in enumerate(stream):
        request = plan.add(trial, steps)
        if data.draw(st.booleans(), label="record?"):
            at = data.draw(st.integers(1, steps), label="step")
            node = plan.locate(trial, at)
            assert node is not None
            plan.record_checkpoint(node, at, f"ckpt/{i}")
            plan.record_profile(node, 0.5 + i)
            plan.record_metrics(request.node, steps, {"acc": i / 10})
        if data.draw(st.booleans(), label="flush?"):
            plan.flush()
    plan.flush()
    assert _describe(SearchPlan.open(url)) == _describe(plan)


class PlanMachine(RuleBasedStateMachine):
    """Add, record and reopen against an in-memory model of states, checkpoints and metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.url = f"memory://machine/{uuid.uuid4().hex}"
        self.plan = SearchPlan.open(self.url)
        self.stream: list[tuple[hd.Trial, int]] = []
        self.saved: dict[tuple[Any, ...], str] = {}
        self.metrics: dict[tuple[Any, ...], float] = {}

    @rule(trial=trials(), steps=st.integers(1, 30))
    def add(self, trial: hd.Trial, steps: int) -> None:
        request = self.plan.add(trial, steps)
        self.stream.append((trial, steps))
        expected = self.metrics.get(state(trial, steps))
        assert request.done == (expected is not None)
        if expected is not None:
            assert request.metrics == {"acc": expected}

    @precondition(lambda self: self.stream)
    @rule(data=st.data())
    def record(self, data: st.DataObject) -> None:
        trial, steps = data.draw(st.sampled_from(self.stream))
        at = data.draw(st.integers(1, steps))
        node = self.plan.locate(trial, at)
        assert node is not None
        if data.draw(st.booleans()):
            uri = f"ckpt/{len(self.saved)}"
            self.plan.record_checkpoint(node, at, uri)
            self.saved[state(trial, at)] = uri
        else:
            value = float(len(self.metrics))
            self.plan.record_metrics(node, at, {"acc": value})
            self.metrics[state(trial, at)] = value

    @rule()
    def reopen(self) -> None:
        self.plan.flush()
        self.plan = SearchPlan.open(self.url)

    @invariant()
    def agrees_with_the_model(self) -> None:
        stats = self.plan.stats()
        assert stats.unique_steps == unique_steps(self.stream)
        pending = {state(t, T) for t, T in self.stream} - set(self.metrics)
        assert stats.pending == len(pending)
        for trial, steps in self.stream:
            latest = max(
                (c for c in range(1, steps + 1) if state(trial, c) in self.saved), default=0
            )
            found = self.plan.latest_checkpoint(trial, steps)
            if latest:
                assert found == (latest, self.saved[state(trial, latest)])
            else:
                assert found is None


PlanMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPlanMachine = PlanMachine.TestCase
