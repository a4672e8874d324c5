"""The paper-replay simulator (benchmarks/_virtual.py): exact on a hand-computed case, never
below its lower bounds, trains each unique step once, and decides the same with and without
sharing."""

from __future__ import annotations

import asyncio

import pytest

import hippo_dask as hd
from benchmarks import paper_replay as pr
from benchmarks._virtual import Costs, SimulationStalled, VirtualStudy, run_virtual
from hippo_dask import seq


def unit_seconds(trial: hd.Trial, start: int, stop: int) -> float:
    return float(stop - start)


def by_step(trial: hd.Trial, step: int) -> dict[str, float]:
    return {"score": float(step)}


def grid(study: VirtualStudy, trials: list[hd.Trial], steps: int) -> None:
    run_virtual(hd.tuners.Grid(trials, "score", steps=steps).run(study))  # type: ignore[arg-type]


def two_trials() -> list[hd.Trial]:
    # Same values for steps 0..4, then A decays: they share 5 of 10 steps.
    return [hd.Trial(lr=seq.StepLR(0.1, 0.1, [5])), hd.Trial(lr=seq.Constant(0.1))]


COSTS = Costs(start=1.0, save=0.5, evaluate=0.25)


def test_hand_computed_shared_case() -> None:
    study = VirtualStudy(
        workers=2, metrics=by_step, seconds=unit_seconds, costs=COSTS, checkpoint_interval=None
    )
    grid(study, two_trials(), 10)
    snap = study.snapshot()
    # Worker 0: start 1 + steps 0..4 (5) + save 0.5 = 6.5, then in memory A's 5..9: 5 + save
    # 0.5 + evaluate 0.25 = 12.25. Worker 1 waits for the checkpoint at 5 (t = 6.5), then
    # B's 5..9 from it: 1 + 5 + 0.5 + 0.25 -> 13.25.
    assert snap.time == pytest.approx(13.25)
    assert snap.worker_seconds == pytest.approx(6.5 + 5.75 + 6.75)
    assert (snap.executed_steps, snap.unique_steps, snap.requested_steps) == (15, 15, 20)
    assert snap.stages == 3 and snap.running == 0


def test_hand_computed_unshared_case() -> None:
    study = VirtualStudy(
        workers=2,
        metrics=by_step,
        seconds=unit_seconds,
        costs=COSTS,
        sharing=False,
        checkpoint_interval=None,
    )
    grid(study, two_trials(), 10)
    snap = study.snapshot()
    assert snap.time == pytest.approx(11.75)  # both from scratch at once: 1 + 10 + 0.5 + 0.25
    assert snap.worker_seconds == pytest.approx(23.5)
    assert (snap.executed_steps, snap.unique_steps, snap.stages) == (20, 20, 2)


def test_one_worker_runs_everything_in_turn() -> None:
    study = VirtualStudy(
        workers=1, metrics=by_step, seconds=unit_seconds, costs=COSTS, checkpoint_interval=None
    )
    grid(study, two_trials(), 10)
    # 6.5 + 5.75, then B's stage from the checkpoint: 6.75 (queued behind, no idle worker).
    assert study.snapshot().time == pytest.approx(19.0)


def small_space() -> list[hd.Trial]:
    return list(
        hd.GridSpace(
            lr=[
                seq.StepLR(0.1, 0.1, [20, 30]),
                seq.StepLR(0.1, 0.2, [25]),
                seq.Warmup(3, 0.1, then=seq.Exponential(0.1, 0.9)),
                seq.Cyclic(0.001, 0.1, 5),
            ],
            batch_size=[seq.Constant(128), seq.MultiStep([128, 256], [12])],
            momentum=[seq.Constant(0.9), seq.MultiStep([0.7, 0.9], [10])],
            optimizer=["sgd_momentum", "adam"],
            weight_decay=[1e-4],
        )
    )


def run(tuner: hd.Tuner, sharing: bool, workers: int = 3) -> VirtualStudy:
    study = VirtualStudy(
        workers=workers,
        metrics=pr.Curve(40),
        seconds=pr.step_seconds("resnet56"),
        costs=Costs(start=15, save=1, evaluate=5),
        sharing=sharing,
    )
    run_virtual(tuner.run(study))  # type: ignore[arg-type]
    return study


def lower_bound(study: VirtualStudy, trials: list[hd.Trial], steps: int) -> float:
    longest = max(
        pr.step_seconds("resnet56")(t, 0, steps)
        for t in trials
        if study.metrics(t, steps) is not None
    )
    return max(longest, study.snapshot().worker_seconds / len(study.workers))


@pytest.mark.parametrize("sharing", [True, False])
def test_grid_trains_each_unique_step_once_and_respects_bounds(sharing: bool) -> None:
    trials = small_space()
    study = run(hd.tuners.Grid(trials, pr.METRIC, steps=40), sharing)
    snap = study.snapshot()
    assert snap.executed_steps == snap.unique_steps
    assert snap.unique_steps < snap.requested_steps if sharing else snap.unique_steps == 32 * 40
    assert snap.time >= lower_bound(study, trials, 40) - 1e-6
    assert all(study.metrics(t, 40) is not None for t in trials)


@pytest.mark.parametrize(
    "make",
    [
        lambda ts: hd.tuners.SHA(ts, pr.METRIC, min_steps=5, max_steps=40, reduction=2),
        lambda ts: hd.tuners.ASHA(
            ts,
            pr.METRIC,
            min_steps=5,
            max_steps=40,
            reduction=2,
            n_trials=len(ts),
            max_concurrent=3,
        ),
    ],
    ids=["sha", "asha"],
)
def test_decisions_do_not_depend_on_sharing(make) -> None:  # type: ignore[no-untyped-def]
    trials = small_space()
    runs = []
    for sharing in (True, False):
        tuner = make(trials)
        study = run(tuner, sharing)
        runs.append(
            (
                [(r.trial.id, r.steps, r.decision.value) for r in tuner.decisions],
                study.requests,
                study.snapshot(),
            )
        )
    (d1, r1, shared), (d2, r2, alone) = runs
    assert d1 == d2 and r1 == r2
    assert {d for _, _, d in d1} == {"promote", "stop"}  # real choices were made
    assert shared.worker_seconds < alone.worker_seconds
    assert shared.requested_steps == alone.requested_steps
    assert shared.executed_steps >= shared.unique_steps
    assert alone.executed_steps == alone.unique_steps == alone.requested_steps


def test_curve_depends_only_on_the_shared_prefix() -> None:
    curve = pr.Curve(60)
    a = hd.Trial(
        lr=seq.StepLR(0.1, 0.1, [30]),
        batch_size=seq.Constant(128),
        momentum=seq.Constant(0.9),
        optimizer="sgd_momentum",
        weight_decay=1e-4,
    )
    b = hd.Trial(
        lr=seq.Constant(0.1),
        batch_size=seq.Constant(128),
        momentum=seq.Constant(0.9),
        optimizer="sgd_momentum",
        weight_decay=1e-4,
    )
    assert [curve(a, s) for s in range(31)] == [curve(b, s) for s in range(31)]
    assert curve(a, 60)[pr.METRIC] > curve(b, 60)[pr.METRIC] + 0.02  # the decay pays off


def test_paper_spaces_match_the_papers_size_and_merge_rate() -> None:
    for build, trials, p in ((pr.resnet56_space, 448, 2.447), (pr.mobilenetv2_space, 240, 3.144)):
        space = build()
        stats = pr.space_stats(space, 120)
        assert stats.trials == len(space) == trials
        assert stats.merge_rate == pytest.approx(p, rel=0.02)


def test_a_stall_fails_the_waiters_instead_of_hanging() -> None:
    study = VirtualStudy(workers=1, metrics=by_step, seconds=unit_seconds)
    study._place = lambda tree: None  # type: ignore[method-assign]  # a scheduler that starts nothing
    with pytest.raises(SimulationStalled):
        run_virtual(study.train(two_trials()[0], 10))


def test_a_point_asked_for_after_the_worker_passed_it_is_missed_and_retrained() -> None:
    # As on a real worker: a stage cannot save a step it already trained past, so the request
    # waits for that stage's report and is then planned again from the latest checkpoint.
    a, b = hd.Trial(lr=seq.Constant(0.1), x=0), hd.Trial(lr=seq.Constant(0.1), x=1)
    study = VirtualStudy(workers=2, metrics=by_step, seconds=unit_seconds, checkpoint_interval=None)

    async def tuner() -> float:
        first = asyncio.ensure_future(study.train(a, 10))
        await study.train(b, 7)  # t = 7: a's stage is past step 5
        early = await study.train(a, 5)
        await first
        return early["score"]

    assert run_virtual(tuner()) == 5.0
    snap = study.snapshot()
    assert snap.missed_points == 1
    assert snap.time == pytest.approx(15.0)  # a's 0..9 ends at 10, then 0..4 again from scratch
    assert (snap.executed_steps, snap.unique_steps) == (22, 17)


def test_asha_without_a_cap_keeps_shared_work_going() -> None:
    # A cap of one request per worker counts requests, not work: with sharing, those share a
    # few chains and finished ones wait for the order; no cap decides the same, sooner.
    trials = small_space()
    runs = []
    for cap in (3, None):
        tuner = hd.tuners.ASHA(
            trials,
            pr.METRIC,
            min_steps=5,
            max_steps=40,
            reduction=2,
            n_trials=len(trials),
            max_concurrent=cap,
        )
        study = run(tuner, sharing=True, workers=3)
        runs.append(
            (
                sorted((r.trial.id, r.steps, r.decision.value) for r in tuner.decisions),
                sorted(study.requests),
                study.snapshot(),
            )
        )
    (d1, r1, capped), (d2, r2, free) = runs
    assert d1 == d2 and r1 == r2
    assert free.executed_steps == free.unique_steps == capped.unique_steps
    assert free.time < 0.75 * capped.time
    assert free.mean_busy > capped.mean_busy


def test_a_new_root_saves_interval_checkpoints_at_its_peers_step_time() -> None:
    # B is a new root (another starting lr) that nothing has measured; A, with the same fixed
    # values, was measured at 10 s per step. B's stage saves every 40 s / 10 s = 4 steps, so C,
    # which leaves B at step 12 after B's stage is done, resumes there. With a flat 1.0 s per
    # step B would save only at its end and C would train steps 0..11 again.
    a, b = hd.Trial(lr=seq.Constant(0.1)), hd.Trial(lr=seq.Constant(0.2))
    c = hd.Trial(lr=seq.MultiStep([0.2, 0.02], [12]))

    def ten_seconds(trial: hd.Trial, start: int, stop: int) -> float:
        return 10.0 * (stop - start)

    study = VirtualStudy(workers=1, metrics=by_step, seconds=ten_seconds, checkpoint_interval=40)

    async def tuner() -> None:
        for trial in (a, b, c):
            await study.train(trial, 20)

    run_virtual(tuner())
    root_b = study.plan.locate(b, 12)
    assert root_b is not None and root_b.parent is None
    assert sorted(root_b.checkpoints) == [4, 8, 12, 16, 20]
    snap = study.snapshot()
    assert (snap.executed_steps, snap.unique_steps) == (48, 48)


@pytest.mark.parametrize(("withdraw_after", "expected"), [(5.0, 110.0), (None, 120.0)])
def test_an_idle_worker_takes_over_a_chain_queued_behind_a_busy_one(
    withdraw_after: float | None, expected: float
) -> None:
    # At t = 50 worker 0 is half-way through a's 100 steps and worker 1 starts b's 60: c goes
    # behind b (60 steps left against 100 by the steps count, though a ends first). At t = 100
    # worker 0 is idle with 10 s of b still ahead of c, so c is taken back and runs there:
    # done at 110 instead of 120 after b, and nothing is trained twice.
    a, b, c, d = (hd.Trial(lr=seq.Constant(0.1), x=i) for i in range(4))
    study = VirtualStudy(
        workers=2,
        metrics=by_step,
        seconds=unit_seconds,
        checkpoint_interval=None,
        withdraw_after=withdraw_after,
    )

    async def tuner() -> float:
        first = asyncio.ensure_future(study.train(a, 100))
        await study.train(d, 50)
        second = asyncio.ensure_future(study.train(b, 60))
        await study.train(c, 10)
        done = study.now
        await first
        await second
        return done

    assert run_virtual(tuner()) == pytest.approx(expected)
    snap = study.snapshot()
    assert snap.time == pytest.approx(expected)  # c was the last to finish either way
    assert (snap.executed_steps, snap.unique_steps, snap.stages) == (220, 220, 4)
