"""The placement policy on plain data: a real search plan and stage tree, flights built by hand,
workers as a list; no Dask, no storage, no clock. Each test states a decision the driver (and
the simulator, which calls the same functions) makes."""

from __future__ import annotations

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.execution._flights import Flight, Flights
from hippo_dask.execution._placement import (
    AddPoint,
    Submit,
    Withdraw,
    Workers,
    cover,
    place,
    withdrawals,
)
from hippo_dask.execution._spec import Point
from hippo_dask.plan import Node, SearchPlan

# Unprofiled nodes count 1 s per step.
A = hd.Trial(lr=seq.Constant(0.1))
B = hd.Trial(lr=seq.Constant(0.2))
C = hd.Trial(lr=seq.Constant(0.3))
BRANCHY = [hd.Trial(lr=seq.MultiStep([0.1, lr], [60])) for lr in (0.01, 0.001)]  # share 0..60


def plan_of(*requests: tuple[hd.Trial, int]) -> tuple[SearchPlan, list[tuple[Node, int]]]:
    plan = SearchPlan()
    wanted = [(plan.add(t, steps).node, steps) for t, steps in requests]
    return plan, wanted


def flight(
    key: str,
    node: Node,
    start: int,
    stop: int,
    worker: str,
    *,
    points: dict[int, Point] | None = None,
    lookahead: bool = False,
    began: float | None = 0.0,
) -> Flight:
    stops = points if points is not None else {stop: Point(stop, False, f"ckpt-{key}")}
    return Flight(key, node, start, stop, worker, stops, lookahead=lookahead, began=began)


def decide(
    plan: SearchPlan, wanted: list[tuple[Node, int]], flights: Flights, workers: Workers
) -> tuple[list[Submit | AddPoint], int]:
    """One pass as the driver makes it: requests flights pass become points, then the tree of
    the rest is placed."""
    points, covered = cover(wanted, flights)
    for p in points:
        flights.add_points(p.key, [Point(p.step, p.evaluate, f"ckpt-{p.step}")])
    tree = plan.stage_tree(
        running={f.key: (f.node, f.start, f.stop) for f in flights},
        exclude=covered,
        requests=wanted,
    )
    return place(tree, flights, workers)


def submitted(
    actions: list[Submit | AddPoint],
) -> list[tuple[str, list[tuple[int, int]], str | None, bool]]:
    return [
        (a.worker, [(s.start, s.stop) for s in a.chain], a.continues, a.behind)
        for a in actions
        if isinstance(a, Submit)
    ]


def test_idle_workers_take_the_longest_chains_first() -> None:
    plan, wanted = plan_of((A, 50), (B, 100), (C, 80))
    actions, waiting = decide(plan, wanted, Flights(), Workers(alive=["w1", "w2"]))
    assert submitted(actions) == [
        ("w1", [(0, 100)], None, False),  # the critical path goes first, to the first idle worker
        ("w2", [(0, 80)], None, False),
        ("w2", [(0, 50)], None, True),  # no idle worker left: behind the one with less left
    ]
    assert waiting == 1


def test_a_shared_prefix_and_its_branches_go_to_one_worker_as_one_chain() -> None:
    plan, wanted = plan_of((BRANCHY[0], 100), (BRANCHY[1], 100))
    actions, waiting = decide(plan, wanted, Flights(), Workers(alive=["w1", "w2"]))
    # The prefix 0..60 and one branch are the critical path; the other branch waits for the
    # prefix (a stage of another chain) and is placed once it reports.
    assert submitted(actions) == [("w1", [(0, 60), (60, 100)], None, False)]
    assert waiting == 0


def test_a_chain_continues_where_a_flight_ends_on_its_worker() -> None:
    plan, wanted = plan_of((BRANCHY[0], 100), (BRANCHY[1], 100))
    prefix = plan.locate(BRANCHY[0], 60)
    assert prefix is not None
    flights = Flights()
    flights.add_chain("w2", [flight("p", prefix, 0, 60, "w2")])
    actions, _ = decide(plan, wanted, flights, Workers(alive=["w1", "w2"]))
    subs = submitted(actions)
    # One branch continues in w2's memory; the other is ready only once the prefix reports
    # (its state is mid-way for the policy: it waits rather than load a checkpoint not written).
    assert subs[0] == ("w2", [(60, 100)], "p", False)
    assert len(subs) == 1


def test_nothing_continues_from_a_flight_with_more_work_queued_behind_it() -> None:
    plan, wanted = plan_of((BRANCHY[0], 100), (BRANCHY[1], 100), (C, 10))
    prefix = plan.locate(BRANCHY[0], 60)
    c_node = plan.locate(C, 10)
    assert prefix is not None and c_node is not None
    flights = Flights()
    flights.add_chain("w1", [flight("p", prefix, 0, 60, "w1")])
    flights.add_chain("w1", [flight("c", c_node, 0, 10, "w1", lookahead=True, began=None)])
    actions, waiting = decide(plan, wanted, flights, Workers(alive=["w1"]))
    # The branches wait for the prefix's checkpoint; C is in flight already.
    assert submitted(actions) == [] and waiting == 0


def test_a_branch_point_inside_a_flight_is_saved_once() -> None:
    plan, _ = plan_of((BRANCHY[0], 100))
    node = plan.locate(BRANCHY[0], 100)
    assert node is not None
    flights = Flights()
    flights.add_chain("w1", [flight("all", node, 0, 100, "w1")])  # trial 0's whole path
    wanted = [(plan.add(BRANCHY[1], 100).node, 100)]  # a new trial branches off at 60
    actions, _ = decide(plan, wanted, flights, Workers(alive=["w1", "w2"]))
    adds = [a for a in actions if isinstance(a, AddPoint)]
    assert adds == [AddPoint("all", 60, evaluate=False)]  # saved where the new branch starts
    flights.add_points("all", [Point(60, False, "ckpt-60")])
    actions, _ = decide(plan, wanted, flights, Workers(alive=["w1", "w2"]))
    assert [a for a in actions if isinstance(a, AddPoint)] == []  # asked once


def test_a_request_a_flight_passes_is_covered_by_a_point_not_a_stage() -> None:
    plan, wanted = plan_of((A, 100))
    node = plan.locate(A, 100)
    assert node is not None
    flights = Flights()
    flights.add_chain("w1", [flight("a", node, 0, 100, "w1")])
    plan.add(A, 40)
    actions, covered = cover([(node, 40)], flights)
    assert actions == [AddPoint("a", 40, evaluate=True)] and covered == {(node, 40)}
    flights.add_points("a", [Point(40, True, "ckpt-40")])
    assert cover([(node, 40)], flights) == ([], {(node, 40)})  # covered, nothing to ask
    assert cover([(node, 100)], flights) == ([AddPoint("a", 100, evaluate=True)], {(node, 100)})


def test_workers_that_retire_get_only_what_fits() -> None:
    plan, wanted = plan_of((A, 100))
    workers = Workers(
        alive=["short", "long"], deadlines={"short": (1000.0 + 50, 3600.0)}, clock=1000.0
    )
    actions, _ = decide(plan, wanted, Flights(), workers)
    assert submitted(actions) == [("long", [(0, 100)], None, False)]
    only_short = Workers(alive=["short"], deadlines={"short": (1050.0, 3600.0)}, clock=1000.0)
    actions, waiting = decide(plan, wanted, Flights(), only_short)
    assert submitted(actions) == [] and waiting == 1
    closing = Workers(alive=["long"], closing=frozenset({"long"}))
    actions, waiting = decide(plan, wanted, Flights(), closing)
    assert submitted(actions) == [] and waiting == 1


def test_queued_work_is_taken_back_for_an_idle_worker_only_with_enough_ahead_of_it() -> None:
    plan, _ = plan_of((A, 100), (B, 30))
    a, b = plan.locate(A, 100), plan.locate(B, 30)
    assert a is not None and b is not None
    flights = Flights()
    flights.add_chain("w1", [flight("a", a, 0, 100, "w1", began=0.0)])
    flights.add_chain("w1", [flight("b", b, 0, 30, "w1", lookahead=True, began=None)])
    both = Workers(alive=["w1", "w2"])
    # 100 s of work ahead of b at time 0; 70 s at time 30; 9 s at time 91.
    assert withdrawals(flights, both, now=0.0, withdraw_after=10.0) == Withdraw({"w1": ("b",)})
    assert withdrawals(flights, both, now=30.0, withdraw_after=10.0) == Withdraw({"w1": ("b",)})
    assert withdrawals(flights, both, now=91.0, withdraw_after=10.0) is None
    # No idle worker: nothing to take back for.
    assert withdrawals(flights, Workers(alive=["w1"]), now=0.0, withdraw_after=10.0) is None
    # The idle worker retires before it could finish b: b stays.
    retiring = Workers(alive=["w1", "w2"], deadlines={"w2": (20.0, 600.0)}, clock=0.0)
    assert withdrawals(flights, retiring, now=0.0, withdraw_after=10.0) is None
    # A chain that has started (the worker refused once) is never asked for.
    flights.refused("b", now=5.0)
    assert withdrawals(flights, both, now=0.0, withdraw_after=10.0) is None


def test_what_was_given_back_is_placed_again_on_the_idle_worker() -> None:
    plan, wanted = plan_of((A, 100), (B, 30))
    a = plan.locate(A, 100)
    b = plan.locate(B, 30)
    assert a is not None and b is not None
    flights = Flights()
    flights.add_chain("w1", [flight("a", a, 0, 100, "w1")])
    flights.add_chain("w1", [flight("b", b, 0, 30, "w1", lookahead=True, began=None)])
    taken = flights.take_back("w1", "b")
    assert [f.key for f in taken] == ["b"] and flights.queued_keys("w1") == ["a"]
    actions, waiting = decide(plan, [(b, 30)], flights, Workers(alive=["w1", "w2"]))
    assert submitted(actions) == [("w2", [(0, 30)], None, False)] and waiting == 0
    del wanted


def test_lookahead_goes_behind_a_single_unreported_chain_only() -> None:
    plan, wanted = plan_of((A, 100), (B, 30), (C, 20))
    a, b = plan.locate(A, 100), plan.locate(B, 30)
    assert a is not None and b is not None
    flights = Flights()
    flights.add_chain("w1", [flight("a", a, 0, 100, "w1")])
    flights.add_chain("w2", [flight("b", b, 0, 30, "w2")])
    flights.add_chain("w2", [flight("b2", b, 0, 30, "w2", lookahead=True, began=None)])
    actions, waiting = decide(
        plan,
        [(plan.locate(C, 20), 20)],
        flights,  # type: ignore[list-item]
        Workers(alive=["w1", "w2"]),
    )
    # w2 runs two chains: only w1 (one chain, 100 steps) may take more behind it.
    assert submitted(actions) == [("w1", [(0, 20)], None, True)] and waiting == 1
    del wanted
