"""SearchPlan: merging, requests, checkpoints, metrics, stats (unit tests on known plans)."""

from __future__ import annotations

import math

import pytest

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import Node, SearchPlan


def lr_trial(milestones: list[int], **fixed: object) -> hd.Trial:
    return hd.Trial(lr=seq.StepLR(0.1, gamma=0.1, milestones=milestones), **fixed)


def test_design_example_shares_steps_before_the_first_differing_milestone() -> None:
    plan = SearchPlan()
    a = plan.add(lr_trial([90, 135]), 200)
    b = plan.add(lr_trial([100, 150]), 200)
    stats = plan.stats()
    assert stats.requested_steps == 400
    assert stats.unique_steps == 200 + 110
    assert stats.merge_rate == pytest.approx(400 / 310)
    assert b.node.parent is a.node
    assert b.node.start == 90


def test_sharing_is_decided_on_values_not_on_how_the_sequence_is_written() -> None:
    plan = SearchPlan()
    a = plan.add(hd.Trial(lr=seq.Constant(0.1)), 100)
    b = plan.add(hd.Trial(lr=seq.MultiStep([0.1, 0.01], [50])), 100)
    c = plan.add(hd.Trial(lr=seq.Piecewise((seq.Constant(0.1), 50), seq.Constant(0.01))), 100)
    assert b.node.parent is a.node and b.node.start == 50
    assert c.node is b.node  # equal values everywhere: the same node
    assert plan.stats().unique_steps == 150


def test_fixed_values_and_value_kinds_separate_trees() -> None:
    plan = SearchPlan()
    plan.add(hd.Trial(lr=seq.Constant(0.1), optimizer="sgd"), 10)
    plan.add(hd.Trial(lr=seq.Constant(0.1), optimizer="adam"), 10)
    plan.add(hd.Trial(bs=seq.Constant(128)), 10)
    plan.add(hd.Trial(bs=seq.Constant(128.0)), 10)
    plan.add(hd.Trial(bs=seq.Constant(128)), 10)
    stats = plan.stats()
    assert stats.unique_steps == 40
    assert stats.nodes == 4
    assert stats.requested_steps == 40  # the repeated trial counts once (same tag)


def test_a_shorter_request_ends_inside_an_existing_node() -> None:
    plan = SearchPlan()
    long = plan.add(lr_trial([30]), 60)
    short = plan.add(lr_trial([40]), 25)  # equal to the first up to step 29
    assert short.node is long.node
    assert plan.stats().unique_steps == 60
    later = plan.add(lr_trial([40]), 60)  # now it must split at 30
    assert later.node.parent is long.node and later.node.start == 30
    assert plan.stats().unique_steps == 90


def test_nodes_are_never_removed_and_ids_follow_creation() -> None:
    plan = SearchPlan()
    seen: list[Node] = []
    for milestones in ([50], [40], [30], [20], [45]):
        plan.add(lr_trial(milestones), 60)
        assert plan.nodes[: len(seen)] == seen
        seen = plan.nodes
    assert [n.id for n in seen] == list(range(len(seen)))
    assert all(n.parent is None or n.parent.id < n.id for n in seen)


def test_requested_steps_count_the_longest_request_per_tag() -> None:
    plan = SearchPlan()
    t = lr_trial([30])
    plan.add(t, 15)
    plan.add(t, 60)
    plan.add(t, 30)
    assert plan.stats().requested_steps == 60
    plan.add(t, 60, tag="second-study/0")
    assert plan.stats().requested_steps == 120
    assert plan.stats().unique_steps == 60


def test_metrics_answer_requests_and_leave_the_pending_set() -> None:
    plan = SearchPlan()
    r = plan.add(lr_trial([30]), 40)
    assert not r.done and r.metrics is None
    assert plan.pending() == [(r.node, 40)]
    plan.record_metrics(r.node, 40, {"val_acc": 0.9, "val_loss": float("nan")})
    assert r.done
    assert (
        r.metrics is not None and r.metrics["val_acc"] == 0.9 and math.isnan(r.metrics["val_loss"])
    )
    assert plan.pending() == []
    again = plan.add(lr_trial([30]), 40)
    assert again.done and plan.stats().pending == 0
    assert plan.metrics(lr_trial([30]), 40) == r.metrics
    assert plan.metrics(lr_trial([30]), 41) is None


def test_state_at_a_branch_step_belongs_to_the_parent() -> None:
    plan = SearchPlan()
    a = plan.add(lr_trial([30]), 60)
    b = plan.add(lr_trial([40]), 60)
    assert b.node.start == 30
    plan.record_checkpoint(b.node, 30, "ckpt/a30")
    assert a.node.checkpoints == {30: "ckpt/a30"} and b.node.checkpoints == {}
    assert plan.latest_checkpoint(lr_trial([40]), 60) == (30, "ckpt/a30")
    assert plan.latest_checkpoint(lr_trial([40]), 29) is None


def test_latest_checkpoint_walks_up_to_ancestors() -> None:
    plan = SearchPlan()
    a = plan.add(lr_trial([30]), 60)
    b = plan.add(lr_trial([40]), 60)
    plan.record_checkpoint(a.node, 10, "ckpt/10")
    plan.record_checkpoint(a.node, 50, "ckpt/a50")
    plan.record_checkpoint(b.node, 45, "ckpt/b45")
    assert plan.latest_checkpoint(lr_trial([40]), 60) == (45, "ckpt/b45")
    assert plan.latest_checkpoint(lr_trial([40]), 44) == (10, "ckpt/10")
    assert plan.latest_checkpoint(lr_trial([30]), 60) == (50, "ckpt/a50")
    plan.forget_checkpoint(b.node, 45)
    assert plan.latest_checkpoint(lr_trial([40]), 60) == (10, "ckpt/10")


def test_locate_does_not_grow_the_plan() -> None:
    plan = SearchPlan()
    plan.add(lr_trial([30]), 60)
    before = plan.stats()
    assert plan.locate(lr_trial([40]), 30) is plan.nodes[0]
    assert plan.locate(lr_trial([40]), 31) is None
    assert plan.locate(hd.Trial(lr=seq.Constant(0.5)), 1) is None
    assert plan.stats() == before


@pytest.mark.parametrize("steps", [0, -1, 2.5, True, "10"])
def test_bad_steps_are_rejected_with_the_value(steps: object) -> None:
    plan = SearchPlan()
    with pytest.raises(ValueError, match="steps"):
        plan.add(lr_trial([30]), steps)  # type: ignore[arg-type]


def test_add_takes_trials_only() -> None:
    with pytest.raises(hd.InvalidTrialError, match="takes a Trial"):
        SearchPlan().add({"lr": 0.1}, 10)  # type: ignore[arg-type]


def test_metrics_must_be_numbers() -> None:
    plan = SearchPlan()
    r = plan.add(lr_trial([30]), 40)
    with pytest.raises(TypeError, match="val_acc"):
        plan.record_metrics(r.node, 40, {"val_acc": "high"})


def test_profile_is_inherited_until_measured() -> None:
    plan = SearchPlan()
    a = plan.add(lr_trial([30]), 60)
    b = plan.add(lr_trial([40]), 60)
    assert b.node.profile() == 1.0
    plan.record_profile(a.node, 0.25)
    assert b.node.profile() == 0.25
    plan.record_profile(b.node, 2.0)
    assert (a.node.profile(), b.node.profile()) == (0.25, 2.0)
    with pytest.raises(ValueError, match="seconds_per_step"):
        plan.record_profile(a.node, float("nan"))
