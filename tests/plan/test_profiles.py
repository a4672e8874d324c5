"""Seconds-per-step estimates for nodes nothing has measured yet (hippo_dask.plan._profiles)."""

from __future__ import annotations

from pathlib import Path

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.plan._profiles import DEFAULT_SECONDS_PER_STEP, Profiles, profile_group


def trial(lr: float = 0.1, milestones: tuple[int, ...] = (30,), **fixed: object) -> hd.Trial:
    return hd.Trial(lr=seq.StepLR(lr, 0.1, list(milestones)), **fixed)


def test_an_empty_plan_assumes_the_default() -> None:
    plan = SearchPlan()
    r = plan.add(trial(width=64), 60)
    assert r.node.profile() == DEFAULT_SECONDS_PER_STEP == 1.0


def test_a_new_root_takes_the_median_of_its_fixed_values_then_of_the_plan() -> None:
    plan = SearchPlan()
    measured = [plan.add(trial(lr, width=64), 60) for lr in (0.1, 0.2, 0.3)]
    wide = plan.add(trial(0.1, width=512), 60)
    for r, seconds in zip(measured, (100.0, 110.0, 400.0)):
        plan.record_profile(r.node, seconds)
    plan.record_profile(wide.node, 900.0)
    # A root that differs from the measured ones only in its starting lr: they have no common
    # ancestor, so the pool of the same fixed values answers (median: one slow outlier is ignored).
    late = plan.add(trial(0.05, width=64), 60)
    assert late.node.parent is None and late.node.seconds_per_step is None
    assert late.node.profile() == 110.0
    # Fixed values nothing was measured with: the median of the whole plan (100, 110, 400, 900).
    other = plan.add(trial(0.05, width=128), 60)
    assert other.node.profile() == (110.0 + 400.0) / 2


def test_the_nearest_measured_ancestor_comes_before_the_pool() -> None:
    plan = SearchPlan()
    root = plan.add(trial(0.1, (30,), width=64), 60)
    plan.record_profile(root.node, 2.0)
    for lr in (0.2, 0.3):
        plan.record_profile(plan.add(trial(lr, width=64), 60).node, 50.0)
    child = plan.add(trial(0.1, (40,), width=64), 60)
    assert child.node.parent is root.node
    assert child.node.profile() == 2.0
    plan.record_profile(child.node, 3.0)
    assert child.node.profile() == 3.0


def test_a_new_measurement_of_a_node_replaces_its_old_one() -> None:
    plan = SearchPlan()
    a = plan.add(trial(0.1, width=64), 60)
    plan.record_profile(a.node, 1000.0)
    plan.record_profile(a.node, 4.0)
    assert plan.add(trial(0.2, width=64), 60).node.profile() == 4.0
    assert len(plan._trie.profiles) == 1


def test_values_the_study_adds_do_not_split_the_pool() -> None:
    # Study(sharing=False) adds a per-trial _hippo_isolate value: every trial is its own root,
    # but the step costs the same.
    plan = SearchPlan()
    a = plan.add(hd.Trial(lr=seq.Constant(0.1), width=64, _hippo_isolate="a"), 10)
    plan.add(hd.Trial(lr=seq.Constant(0.1), width=512, _hippo_isolate="c"), 10)
    plan.record_profile(a.node, 7.0)
    plan.record_profile(plan.nodes[1], 90.0)
    b = plan.add(hd.Trial(lr=seq.Constant(0.1), width=64, _hippo_isolate="b"), 10)
    assert b.node.parent is None and b.node.profile() == 7.0
    assert profile_group(a.trial) == profile_group(b.trial)


def test_the_pool_is_rebuilt_when_a_journal_is_replayed(tmp_path: Path) -> None:
    with SearchPlan.open(str(tmp_path)) as plan:
        for lr, seconds in ((0.1, 5.0), (0.2, 6.0), (0.3, 9.0)):
            plan.record_profile(plan.add(trial(lr, width=64), 60).node, seconds)
        plan.add(trial(0.4, width=64), 60)
    again = SearchPlan.open(str(tmp_path))
    assert again.nodes[-1].seconds_per_step is None
    assert again.nodes[-1].profile() == 6.0


def test_a_new_root_weighs_in_the_critical_path_in_the_same_unit() -> None:
    # Before: an unmeasured root counted 1.0 s per step against 100 s measured ones, so its 40
    # steps looked like 40 s next to a 10-step stage of 1000 s.
    plan = SearchPlan()
    old = plan.add(trial(0.1, width=64), 50)
    plan.record_checkpoint(old.node, 40, "ckpt/40")
    plan.record_profile(old.node, 100.0)
    new = plan.add(trial(0.2, width=64), 40)
    path = plan.stage_tree().critical_path()
    assert [s.node for s in path] == [new.node]
    assert path[0].seconds == 40 * 100.0


def test_profiles_pool_by_group_and_count_each_node_once() -> None:
    book = Profiles()
    a, b = trial(width=1), trial(width=2)
    assert book.estimate(a) is None
    book.record(0, a, 3.0)
    book.record(1, b, 5.0)
    book.record(2, b, 9.0)
    assert (book.estimate(a), book.estimate(b), book.estimate(trial(width=3))) == (3.0, 7.0, 5.0)
    book.record(2, b, 1.0)
    assert len(book) == 3 and book.estimate(b) == 3.0
