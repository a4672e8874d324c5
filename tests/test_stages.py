"""Stage trees (Algorithm 1) and critical paths on hand-made plans."""

from __future__ import annotations

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan, StageTree


def lr(milestones: list[int]) -> hd.Trial:
    return hd.Trial(lr=seq.StepLR(0.1, gamma=0.1, milestones=milestones))


def spans(tree: StageTree) -> list[tuple[int, int, int]]:
    return [(s.node.id, s.start, s.stop) for s in tree.stages]


def test_shared_prefix_is_one_stage_with_a_child_per_branch() -> None:
    plan = SearchPlan()
    for m in ([30], [40], [50]):
        plan.add(lr(m), 60)
    tree = plan.stage_tree()
    # [40] leaves [30]'s node at 30; [50] follows [40] (both 0.1 there) and leaves it at 40.
    assert spans(tree) == [(0, 0, 30), (0, 30, 60), (1, 30, 40), (1, 40, 60), (2, 40, 60)]
    assert tree.total_steps == plan.stats().unique_steps
    root = tree.roots
    assert len(root) == 1 and root[0].start == 0 and root[0].load_from is None


def test_each_stage_starts_where_its_parent_stopped() -> None:
    plan = SearchPlan()
    for m in ([30], [40], [50], [30, 45]):
        plan.add(lr(m), 60)
    tree = plan.stage_tree()
    for stage in tree.stages:
        if stage.parent is not None:
            assert stage.start == stage.parent.stop
            assert stage in stage.parent.children
        else:
            assert stage.start == 0
    assert tree.total_steps == plan.stats().unique_steps


def test_several_requests_in_one_node_become_consecutive_stages() -> None:
    plan = SearchPlan()
    t = lr([100])
    for steps in (15, 35, 60):
        plan.add(t, steps, tag=f"r{steps}")
    tree = plan.stage_tree()
    assert spans(tree) == [(0, 0, 15), (0, 15, 35), (0, 35, 60)]
    assert all(s.evaluate for s in tree.stages)
    assert [s.parent for s in tree.stages[1:]] == tree.stages[:2]


def test_stages_resume_from_the_latest_checkpoint() -> None:
    plan = SearchPlan()
    a = plan.add(lr([30]), 60)
    plan.record_checkpoint(a.node, 20, "ckpt/20")
    plan.record_checkpoint(a.node, 25, "ckpt/25")
    plan.record_checkpoint(a.node, 70, "ckpt/70")  # past the request: useless here
    tree = plan.stage_tree()
    assert spans(tree) == [(0, 25, 60)]
    assert tree.stages[0].load_from == "ckpt/25"


def test_a_checkpoint_at_the_branch_step_feeds_the_children_directly() -> None:
    plan = SearchPlan()
    a = plan.add(lr([30]), 60)
    b = plan.add(lr([40]), 60)
    plan.record_checkpoint(a.node, 30, "ckpt/30")
    plan.record_metrics(a.node, 60, {"acc": 1.0})
    tree = plan.stage_tree()
    assert spans(tree) == [(b.node.id, 30, 60)]
    assert tree.stages[0].load_from == "ckpt/30"


def test_answered_requests_need_no_stage_and_a_checkpointed_one_only_evaluates() -> None:
    plan = SearchPlan()
    a = plan.add(lr([30]), 60)
    plan.record_checkpoint(a.node, 60, "ckpt/60")
    tree = plan.stage_tree()
    assert spans(tree) == [(0, 60, 60)]
    assert tree.stages[0].evaluate and tree.stages[0].load_from == "ckpt/60"
    plan.record_metrics(a.node, 60, {"acc": 0.5})
    assert len(plan.stage_tree()) == 0


def test_a_running_stage_is_a_source_for_every_step_it_will_pass() -> None:
    plan = SearchPlan()
    a = plan.add(lr([30]), 60)
    b = plan.add(lr([40]), 80)
    # Node a is being trained 0 -> 60 by a running stage; b branches off at 30 and
    # a's own request is answered by that stage.
    tree = plan.stage_tree(running={"run-0": (a.node, 0, 60)}, exclude=[(a.node, 60)])
    assert spans(tree) == [(b.node.id, 30, 80)]
    child = tree.stages[0]
    assert child.after == ("run-0", 30) and child.parent is None and child.load_from is None
    # A later checkpoint beats the running stage; an earlier one does not.
    plan.record_checkpoint(a.node, 20, "ckpt/20")
    tree = plan.stage_tree(running={"run-0": (a.node, 0, 60)}, exclude=[(a.node, 60)])
    assert tree.stages[0].after == ("run-0", 30)
    tree = plan.stage_tree(running={"run-0": (a.node, 0, 25)}, exclude=[(a.node, 60)])
    assert spans(tree) == [(a.node.id, 25, 30), (b.node.id, 30, 80)]
    assert tree.stages[0].after == ("run-0", 25)


def test_critical_path_follows_profiled_time_not_step_count() -> None:
    plan = SearchPlan()
    a = plan.add(lr([30]), 100)  # 70 more steps after the branch
    b = plan.add(lr([40]), 60)  # 30 more steps after the branch, but slow
    plan.record_profile(a.node, 1.0)
    plan.record_profile(b.node, 5.0)
    tree = plan.stage_tree()
    path = tree.critical_path()
    assert [s.node for s in path] == [a.node, b.node]
    assert sum(s.seconds for s in path) == 30 * 1.0 + 30 * 5.0
    plan.record_profile(b.node, 1.0)
    assert [s.node for s in plan.stage_tree().critical_path()] == [a.node, a.node]


def test_paths_cover_every_stage_once_longest_first() -> None:
    plan = SearchPlan()
    for m in ([10], [20], [30], [20, 40], [50]):
        plan.add(lr(m), 60)
    plan.add(hd.Trial(lr=seq.Constant(0.5)), 35)
    tree = plan.stage_tree()
    paths = tree.paths()
    flat = [s for p in paths for s in p]
    assert sorted(map(id, flat)) == sorted(map(id, tree.stages))
    assert paths[0] == tree.critical_path()
    totals = [tree.remaining(p[0]) for p in paths]
    assert totals[0] == max(totals)
    for chain in paths:
        for parent, child in zip(chain, chain[1:]):
            assert child.parent is parent


def test_describe_is_plain_data_that_names_the_source() -> None:
    plan = SearchPlan()
    plan.add(lr([30]), 60)
    plan.add(lr([40]), 60)
    described = [s.describe() for s in plan.stage_tree().stages]
    assert described[0][-1] == ("scratch",)
    assert described[1][-1][0] == "stage"
    assert hash(tuple(described))
