"""Every reader ends with the same plan, whatever order it finds the journal's segments in.

Several writers journal into one plan: requests, checkpoints, a gc's forget of one of them, the
same state measured twice, and records of an older version (no ids, no clocks). Sessions that
began earlier flush later, so a reader that looks between flushes finds segments out of name
order. A reader fed the same segments in any order and in any batches answers every question
about a state (its checkpoint, its metrics, the latest checkpoint on a path, pending requests,
the statistics) exactly as a fresh reader does.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import fsspec
from hypothesis import given, settings
from hypothesis import strategies as st

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.plan import SearchPlan
from hippo_dask.plan._journal import encode_line

A = hd.Trial(lr=seq.StepLR(0.1, 0.1, [30]), optimizer="sgd")
B = hd.Trial(lr=seq.StepLR(0.1, 0.1, [40]), optimizer="sgd")
C = hd.Trial(lr=seq.Constant(0.05), optimizer="sgd")
TRIALS = (A, B, C)
STEPS = (10, 20, 30, 45, 60)

Segments = dict[str, bytes]


def fresh_root() -> str:
    return f"memory://journal-order-{uuid.uuid4().hex}"


def segments_of(root: str) -> Segments:
    fs, path = fsspec.core.url_to_fs(root)
    return {
        p.rsplit("/", 1)[-1]: fs.cat_file(p)
        for p in fs.ls(f"{path}/plan", detail=False)
        if p.endswith(".jsonl")
    }


def history() -> tuple[Segments, SearchPlan]:
    """The segments of three writers and a gc on one plan, and one writer, refreshed at the end."""
    root = fresh_root()
    early = SearchPlan.open(root)  # began first, flushes its checkpoint last
    late = SearchPlan.open(root)
    early.add(A, 60)
    early.flush()
    b = late.add(B, 60)
    late.refresh()
    late.record_checkpoint(b.node, 30, "ckpt/shared-30.ckpt")  # the state A and B share
    late.record_metrics(b.node, 60, {"score": 0.25})
    late.flush()
    gc = SearchPlan.open(root)  # forgets the checkpoint it saw (late's record)
    shared = gc.locate(A, 30)
    assert shared is not None and 30 in shared.checkpoints
    gc.forget_checkpoint(shared, 30)
    gc.flush()
    # early never saw late's record nor the forget: it records the shared state again
    a30 = early.locate(A, 30)
    assert a30 is not None
    early.record_checkpoint(a30, 30, "ckpt/shared-30-again.ckpt")
    c = early.add(C, 45)
    early.record_checkpoint(c.node, 20, "ckpt/c20.ckpt")
    early.flush()
    late.refresh()
    c20 = late.locate(C, 20)
    assert c20 is not None
    late.forget_checkpoint(c20, 20)
    late.add(C, 60)
    node_b60 = late.locate(B, 60)
    assert node_b60 is not None
    late.record_metrics(node_b60, 60, {"score": 0.5})  # measured again, later: this one wins
    late.flush()
    early.record_metrics(early.locate(A, 60), 60, {"score": 0.75})  # type: ignore[arg-type]
    early.flush()
    # An older version wrote records without ids or clocks: a checkpoint, a forget, a checkpoint.
    fs, path = fsspec.core.url_to_fs(root)
    legacy = [
        {"op": "checkpoint", "trial": C.id, "step": 10, "uri": "ckpt/old-c10.ckpt"},
        {"op": "forget", "trial": C.id, "step": 10},
        {"op": "checkpoint", "trial": C.id, "step": 10, "uri": "ckpt/old-c10-again.ckpt"},
        {"op": "checkpoint", "trial": A.id, "step": 45, "uri": "ckpt/old-a45.ckpt"},
        {"op": "metrics", "trial": C.id, "step": 45, "values": {"score": 0.1}},
        {"op": "metrics", "trial": C.id, "step": 45, "values": {"score": 0.2}},
    ]
    fs.pipe_file(
        f"{path}/plan/00000000000000000001-oldvers1-000000.jsonl",
        b"".join(encode_line(r) for r in legacy[:3]),
    )
    fs.pipe_file(
        f"{path}/plan/99999999999999999999-oldvers2-000000.jsonl",
        b"".join(encode_line(r) for r in legacy[3:]),
    )
    fs.pipe_file(
        f"{path}/plan/00000000000000000002-oldvers3-000000.jsonl",
        encode_line({"op": "forget", "trial": A.id, "step": 45}),
    )  # before it: no effect
    early.refresh()
    return segments_of(root), early


def view(plan: SearchPlan) -> tuple[Any, ...]:
    """Every answer a plan gives about the states of the trials above."""
    states = {}
    for trial in TRIALS:
        for step in STEPS:
            node = plan.locate(trial, step)
            states[(trial.id, step)] = (
                None
                if node is None
                else (
                    node.checkpoints.get(step),
                    node.metrics.get(step),
                    plan.latest_checkpoint(trial, step),
                )
            )
    pending = sorted((node.owner.id, node.start, steps) for node, steps in plan.pending())
    stats = plan.stats()
    return (
        states,
        len(pending),
        stats.trials,
        stats.requests,
        stats.requested_steps,
        stats.unique_steps,
    )


def read_in(segments: Segments, batches: list[list[str]]) -> SearchPlan:
    """A reader that finds ``batches`` of segments appear one batch after another."""
    root = fresh_root()
    fs, path = fsspec.core.url_to_fs(root)
    reader = SearchPlan.open(root)
    for batch in batches:
        for name in batch:
            fs.pipe_file(f"{path}/plan/{name}", segments[name])
        reader.refresh()
    return reader


def test_the_rules_give_the_expected_plan() -> None:
    segments, writer = history()
    plan = read_in(segments, [sorted(segments)])
    states = view(plan)[0]
    # late's checkpoint was forgotten; early's record of the same state, written without
    # knowing of the forget, is a new record: the state has a checkpoint.
    assert states[(A.id, 30)][0] == states[(B.id, 30)][0] == "ckpt/shared-30-again.ckpt"
    assert states[(C.id, 20)][0] is None  # forgotten by late
    assert states[(C.id, 10)][0] == "ckpt/old-c10-again.ckpt"  # older version: by position
    assert states[(A.id, 45)][0] == "ckpt/old-a45.ckpt"  # its forget came before it
    assert states[(B.id, 60)][1] == {"score": 0.5}  # the newer measurement
    assert states[(C.id, 45)][1] == {"score": 0.2}  # older version: the later line
    assert view(writer) == view(plan)  # a writer is a reader too


def test_a_late_flush_does_not_change_which_checkpoints_exist() -> None:
    # The case: a reader that saw late's and gc's segments before early's later ones
    # appeared (early began first, so they sort first) ends as a fresh reader does.
    segments, _ = shared_history()
    sessions = sorted({n.rsplit("-", 1)[0] for n in segments if "oldvers" not in n})
    early = sorted(n for n in segments if n.startswith(sessions[0]))  # the first one opened
    assert len(early) == 3
    first = [n for n in segments if n not in early[1:]]
    incremental = read_in(segments, [first, early[1:]])
    fresh = read_in(segments, [sorted(segments)])
    assert view(incremental) == view(fresh)
    assert view(incremental)[0][(A.id, 30)][0] == "ckpt/shared-30-again.ckpt"


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_discovery_order_gives_the_same_plan(data: st.DataObject) -> None:
    segments, writer = shared_history()
    order = data.draw(st.permutations(sorted(segments)), label="order")
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1)), label="cuts"))
    batches = [order[i:j] for i, j in zip([0, *cuts], [*cuts, len(order)])]
    assert view(read_in(segments, batches)) == view(writer)


def test_two_readers_that_looked_at_different_times_agree() -> None:
    segments, _ = shared_history()
    names = sorted(segments)
    one = read_in(segments, [[n] for n in reversed(names)])
    two = read_in(segments, [names[::2], names[1::2]])
    assert view(one) == view(two) == view(read_in(segments, [names]))


@functools.lru_cache(maxsize=1)
def shared_history() -> tuple[Segments, SearchPlan]:
    """:func:`history`, built once for the tests that only read it."""
    return history()
