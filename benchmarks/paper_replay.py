"""Paper replay: the Hippo paper's single-study set-ups, simulated on 40 GPU workers.

Shin et al., "Hippo: Taming Hyper-parameter Optimization of Deep Learning with Stage Trees",
section 6.1: ResNet56 on CIFAR-10 with SHA and with ASHA (reduction 4, 15 to 120 epochs, 448
trials, merge rate 2.447) and MobileNetV2 with a grid search (120 epochs, 240 trials, merge
rate 3.144), on 40 GPUs. Table 5 gives, against Ray Tune, GPU-hours and end-to-end time of
402.66 / 83.7 h and 13.92 / 5.76 h (SHA: 4.81x, 2.42x), 544.36 / 139.03 h and 17.6 / 7.4 h
(ASHA: 3.92x, 2.38x), 917.11 / 291.48 h and 28.815 / 10.43 h (grid: 3.15x, 2.76x).

Here the real tuners (``hippo_dask.tuners.SHA``, ``ASHA``, ``Grid``) drive the real search plan
and stage trees through :class:`benchmarks._virtual.VirtualStudy`, a discrete-event simulation
of 40 workers scheduled the way the engine's driver schedules them (see that module). A step is
an epoch. The trainer is synthetic and deterministic:

- time: an epoch at batch size 128 takes ``SECONDS[model]`` seconds, at 256 ``--batch256``
  (0.8) of that (half the iterations, each a little longer); every stage that does not
  continue in a worker's memory pays ``--start`` seconds (trainer, data loaders, checkpoint
  load), every checkpoint ``--save``, every evaluation ``--evaluate``. The absolute epoch
  times only put the trial-by-trial GPU-hours near Ray Tune's in Table 5; the ratios depend on
  the 256/128 ratio and the fixed costs.
- metric: ``val_acc`` from a small recurrence over the per-epoch hyper-parameter values
  (:class:`Curve`): progress grows with the effective learning rate, a noise floor follows
  lr / batch size (so decays and batch-size increases pay off), too high a rate early does
  lasting damage (warm-ups help), optimizer, weight decay and cutout set the ceiling and the
  speed. It depends only on the values of the steps trained, as a real state does, so shared
  prefixes have one answer, and it ranks schedules differently at 15, 60 and 120 epochs, so
  SHA and ASHA make real choices.

The spaces use Table 2's and Table 3's families with parameters varied (the tables only show
examples) to the paper's trial counts, 448 and 240; their merge rates, 2.418 and 3.110, are
a little below the paper's 2.447 and 3.144 (no variant was chosen to be identical to another
within 120 epochs).

Each set-up runs twice on the same simulator: with sharing, and trial-by-trial
(``sharing=False``: every trial its own root, trained from scratch; a promoted trial resumes
from its own checkpoint, as Ray Tune resumes a paused trial; same scheduler, same costs, and,
checked, the same requests and decisions). As in the paper, the best trial is then trained
for ``--final-epochs`` more epochs (100), counted in both. The figures are reported for the
tuner alone and with that final training (the paper's protocol, which the verdicts use).

ASHA runs twice: with ``max_concurrent = 40`` (one request in flight per worker, the tuner's
advice until 2026-12) in both modes, and with the tuner's default, no cap (every trial may be
in flight), when sharing; the baseline keeps 40, its fastest setting (no cap is about 2 %
slower there). The decisions are the same in all four runs (checked).

    .venv/bin/python benchmarks/paper_replay.py                  # every set-up, about 10 s
    .venv/bin/python benchmarks/paper_replay.py --only grid --start 0 --save 0 --evaluate 0
"""

from __future__ import annotations

import argparse
import heapq
import math
import platform
import struct
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hippo_dask as hd  # noqa: E402
from benchmarks._virtual import WITHDRAW_AFTER, Costs, Snapshot, VirtualStudy, run_virtual  # noqa: E402
from hippo_dask import seq  # noqa: E402
from hippo_dask.plan import PlanStats, SearchPlan, Stage

WORKERS = 40
METRIC = "val_acc"
#: Seconds per epoch at batch size 128 (puts the trial-by-trial GPU-hours near Ray Tune's).
SECONDS = {"resnet56": 105.0, "mobilenetv2": 115.0}
#: An epoch at batch size 256 takes this fraction of one at 128 (half the iterations, each
#: somewhat longer).
BATCH256 = 0.8


# -- search spaces (Tables 2 and 3) -------------------------------------------------------------


def resnet56_lr() -> list[seq.Sequence]:
    """28 learning-rate schedules from Table 2's five families (epochs)."""
    milestones = ([90, 135], [100, 150], [60, 90], [80, 120], [110, 150])
    gammas = (0.1, 0.2)
    out: list[seq.Sequence] = []
    out += [seq.StepLR(0.1, g, m) for m in milestones for g in gammas]
    out += [seq.Warmup(5, 0.1, then=seq.StepLR(0.1, g, m)) for m in milestones for g in gammas]
    out += [seq.Warmup(5, 0.1, then=seq.Exponential(0.1, g)) for g in (0.95, 0.97, 0.98)]
    out += [seq.Warmup(10, 0.1, then=seq.CosineWarmRestarts(0.1, t)) for t in (20, 30, 40)]
    out += [seq.Cyclic(0.001, 0.1, up) for up in (10, 20)]
    return out


def resnet56_space() -> list[hd.Trial]:
    """448 trials: 28 lr x 2 batch-size x weight decay 1e-4 / 1e-3 x (Adam, SGD, SGD with
    momentum 0.9 or 0.7/0.8/0.9 at 40/80). Adam's momentum is its beta1 (0.9), vanilla SGD's 0."""
    lr = resnet56_lr()
    batch = [seq.Constant(128), seq.MultiStep([128, 256], [70])]
    momenta = {
        "adam": [seq.Constant(0.9)],
        "sgd": [seq.Constant(0.0)],
        "sgd_momentum": [seq.Constant(0.9), seq.MultiStep([0.7, 0.8, 0.9], [40, 80])],
    }
    trials: list[hd.Trial] = []
    for optimizer, options in momenta.items():
        trials += hd.GridSpace(
            lr=lr,
            batch_size=batch,
            momentum=options,
            weight_decay=[1e-4, 1e-3],
            optimizer=[optimizer],
        )
    return trials


def mobilenetv2_lr() -> list[seq.Sequence]:
    """60 learning-rate schedules from Table 3's five families (epochs)."""
    milestones = ([100, 150], [90, 135], [80, 120], [50, 100], [40, 80])
    gammas = (0.1, 0.2, 0.3)
    out: list[seq.Sequence] = []
    out += [seq.StepLR(0.1, g, m) for m in milestones for g in gammas]
    out += [seq.Warmup(10, 0.1, then=seq.StepLR(0.1, g, m)) for m in milestones for g in gammas]
    out += [
        seq.Warmup(10, 0.1, then=seq.Exponential(0.1, g))
        for g in (0.95, 0.955, 0.96, 0.965, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995)
    ]
    out += [
        seq.Warmup(10, 0.1, then=seq.CosineWarmRestarts(0.1, t, m))
        for t in (10, 20, 30, 40, 50)
        for m in (1, 2)
    ]
    out += [seq.Cyclic(b, 0.1, up) for b in (0.001, 0.01) for up in (10, 15, 20, 25, 30)]
    return out


def mobilenetv2_space() -> list[hd.Trial]:
    """240 trials: 60 lr x batch size 128 or 128->256 at 100 x cutout 16 or 16/18/20 at 80/100,
    SGD (momentum 0.9, weight decay 4e-5)."""
    return list(
        hd.GridSpace(
            lr=mobilenetv2_lr(),
            batch_size=[seq.Constant(128), seq.MultiStep([128, 256], [100])],
            cutout=[seq.Constant(16), seq.MultiStep([16, 18, 20], [80, 100])],
            optimizer=["sgd_momentum"],
            weight_decay=[4e-5],
        )
    )


# -- the synthetic trainer -------------------------------------------------------------------------


def step_seconds(model: str, batch256: float = BATCH256) -> Callable[[hd.Trial, int, int], float]:
    """Seconds to train epochs ``start .. stop - 1`` of a trial of ``model``."""
    base = SECONDS[model]

    def seconds(trial: hd.Trial, start: int, stop: int) -> float:
        if stop <= start:
            return 0.0
        batch = trial.sequences["batch_size"].values(start, stop)
        return float(np.where(batch >= 256, base * batch256, base).sum())

    return seconds


class Curve:
    """A deterministic learning curve: ``val_acc`` after ``step`` epochs of a trial.

    Per epoch ``t`` with learning rate ``lr``, batch size ``b``, momentum ``m``:
    effective rate ``e = lr / (1 - m)`` (Adam: ``15 lr``); noise level ``n`` follows
    ``e * 128 / b`` (an exponential average); progress
    ``f += (1 - f) 0.12 min(e, 1.5)^0.7 (128 / b)^0.3``; damage
    ``d += 0.003 max(0, e - (0.25 + 4 f))`` (too hot before the network has learnt);
    ``val_acc = cap f - 0.06 n - d + wiggle``, where the wiggle is a small pseudo-random walk
    seeded by the epoch's values (never by later ones). The ceiling ``cap`` depends on the
    optimizer; weight decay 1e-3 learns 10 % faster and ends 0.8 points lower; a larger cutout
    learns slower, ends higher and adds noise.
    """

    CAPS = {"adam": 0.915, "sgd": 0.930, "sgd_momentum": 0.945}

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, trial: hd.Trial, step: int) -> dict[str, float]:
        curve = self._cache.get(trial.id)
        if curve is None or len(curve) <= step:
            curve = self._cache[trial.id] = self.curve(trial, max(step, self.horizon))
        return {METRIC: float(curve[step])}

    def curve(self, trial: hd.Trial, steps: int) -> np.ndarray:
        fixed = trial.fixed
        values = {
            name: s.values(0, steps).astype(np.float64) for name, s in trial.sequences.items()
        }
        lr, batch = values["lr"], values["batch_size"]
        momentum = values.get("momentum", np.full(steps, 0.9))
        cutout = values.get("cutout", np.full(steps, 16.0))
        optimizer = str(fixed["optimizer"])
        decay = float(fixed["weight_decay"])
        cap = self.CAPS[optimizer] + (0.004 if "cutout" in values else 0.0)
        speed = 0.12
        if decay >= 1e-3:  # strong weight decay: learns faster, ends lower
            cap -= 0.008
            speed *= 1.1
        key = zlib.crc32(repr(sorted(fixed.items())).encode())
        f = n = d = w = 0.0
        out = np.empty(steps + 1)
        out[0] = 0.1
        for t in range(steps):
            e = lr[t] * 15.0 if optimizer == "adam" else lr[t] / (1.0 - momentum[t])
            aug = cutout[t] - 16.0
            n += 0.35 * (e * 128.0 / batch[t] * (1.0 + 0.01 * aug) - n)
            f += (
                (1.0 - f)
                * speed
                * min(e, 1.5) ** 0.7
                * (128.0 / batch[t]) ** 0.3
                * (1.0 - 0.02 * aug)
            )
            d += 0.003 * max(0.0, e - (0.25 + 4.0 * f))
            u = zlib.crc32(struct.pack("<iddd", t, lr[t], batch[t], momentum[t]), key)
            w = 0.6 * w + 0.4 * (u / 2**31 - 1.0)
            out[t + 1] = (cap + 0.0015 * aug) * f - 0.06 * n - d + 0.003 * (0.3 + n) * w
        return out


# -- set-ups ----------------------------------------------------------------------------------


def _sha(trials: list[hd.Trial], workers: int, sharing: bool) -> Any:
    return hd.tuners.SHA(trials, METRIC, min_steps=15, max_steps=120, reduction=4)


def _asha(trials: list[hd.Trial], workers: int, sharing: bool) -> Any:
    return hd.tuners.ASHA(
        trials,
        METRIC,
        min_steps=15,
        max_steps=120,
        reduction=4,
        n_trials=len(trials),
        max_concurrent=workers,
    )


def _asha_default(trials: list[hd.Trial], workers: int, sharing: bool) -> Any:
    # With sharing, the tuner's default: no cap. The baseline keeps one request per worker,
    # its fastest setting. same_study() checks that both make the same decisions.
    return hd.tuners.ASHA(
        trials,
        METRIC,
        min_steps=15,
        max_steps=120,
        reduction=4,
        n_trials=len(trials),
        max_concurrent=None if sharing else workers,
    )


def _grid(trials: list[hd.Trial], workers: int, sharing: bool) -> Any:
    return hd.tuners.Grid(trials, METRIC, steps=120)


@dataclass(frozen=True)
class Setup:
    key: str
    name: str
    model: str
    trials: Callable[[], list[hd.Trial]]
    tuner: Callable[[list[hd.Trial], int, bool], Any]  # (trials, workers, sharing) -> tuner
    max_steps: int
    paper_trials: int
    paper_p: float
    paper_gpu: float  # Table 5, Ray Tune / Hippo
    paper_e2e: float


SETUPS = [
    Setup(
        "sha",
        "ResNet56 SHA",
        "resnet56",
        resnet56_space,
        _sha,
        120,
        448,
        2.447,
        402.66 / 83.7,
        13.92 / 5.76,
    ),
    Setup(
        "asha",
        "ResNet56 ASHA, 40 in flight",
        "resnet56",
        resnet56_space,
        _asha,
        120,
        448,
        2.447,
        544.36 / 139.03,
        17.6 / 7.4,
    ),
    Setup(
        "asha-default",
        "ResNet56 ASHA, no cap (default) with sharing",
        "resnet56",
        resnet56_space,
        _asha_default,
        120,
        448,
        2.447,
        544.36 / 139.03,
        17.6 / 7.4,
    ),
    Setup(
        "grid",
        "MobileNetV2 grid",
        "mobilenetv2",
        mobilenetv2_space,
        _grid,
        120,
        240,
        3.144,
        917.11 / 291.48,
        28.815 / 10.43,
    ),
]


def space_stats(trials: Sequence[hd.Trial], steps: int) -> PlanStats:
    """The paper's merge rate p: every trial at ``steps``, total over unique steps."""
    plan = SearchPlan()
    for trial in trials:
        plan.add(trial, steps)
    return plan.stats()


def list_schedule(
    trials: Sequence[hd.Trial],
    steps: int,
    seconds: Callable[[hd.Trial, int, int], float],
    workers: int,
) -> float:
    """Seconds a zero-overhead list schedule takes for the whole stage tree of ``trials`` at
    ``steps``: any stage on any free worker once its parent stage is done, longest remaining
    time first (what the tree's shape allows, without chains, pinning or fixed costs)."""
    plan = SearchPlan()
    for trial in trials:
        plan.add(trial, steps)
    tree = plan.stage_tree()
    cost = {id(s): seconds(s.node.owner, s.start, s.stop) for s in tree.stages}
    tail: dict[int, float] = {}
    for stage in reversed(tree.stages):
        tail[id(stage)] = cost[id(stage)] + max((tail[id(c)] for c in stage.children), default=0.0)
    order = {id(s): i for i, s in enumerate(tree.stages)}
    ready = [(-tail[id(s)], order[id(s)], s) for s in tree.roots]
    heapq.heapify(ready)
    running: list[tuple[float, int, Stage]] = []
    now, free = 0.0, workers
    while ready or running:
        while free and ready:
            _, i, stage = heapq.heappop(ready)
            heapq.heappush(running, (now + cost[id(stage)], i, stage))
            free -= 1
        now, _, stage = heapq.heappop(running)
        free += 1
        for child in stage.children:
            heapq.heappush(ready, (-tail[id(child)], order[id(child)], child))
    return now


@dataclass
class Run:
    """One set-up, with or without sharing."""

    sharing: bool
    tuned: Snapshot  # when the tuner returned
    final: Snapshot  # after the best trial's extra epochs
    best: hd.Trial
    best_acc: float
    decisions: list[tuple[str, int, str]]
    requests: list[tuple[str, int]]
    longest: float  # seconds of pure training of the longest trial path the tuner finished


def run_setup(
    setup: Setup,
    *,
    sharing: bool,
    workers: int = WORKERS,
    costs: Costs = Costs(),  # noqa: B008
    final_epochs: int = 100,
    trials: list[hd.Trial] | None = None,
    batch256: float = BATCH256,
    withdraw_after: float | None = WITHDRAW_AFTER,
) -> Run:
    """Run ``setup``'s tuner on a fresh :class:`VirtualStudy`, then train its best trial on."""
    trials = setup.trials() if trials is None else trials
    curve = Curve(setup.max_steps + final_epochs)
    seconds = step_seconds(setup.model, batch256)
    study = VirtualStudy(
        workers=workers,
        metrics=curve,
        seconds=seconds,
        costs=costs,
        sharing=sharing,
        withdraw_after=withdraw_after,
    )
    tuner = setup.tuner(trials, workers, sharing)

    async def main() -> tuple[Snapshot, Snapshot, int, float]:
        await tuner.run(study)
        tuned = study.snapshot()
        scores = [tuner.score(study.metrics(t, setup.max_steps)) for t in trials]
        best = int(np.argmax(scores))  # ties: the first listed
        acc = scores[best]
        if final_epochs:
            acc = (await study.train(trials[best], setup.max_steps + final_epochs))[METRIC]
        return tuned, study.snapshot(), best, acc

    tuned, final, best, acc = run_virtual(main())
    finished = [t for t in trials if study.metrics(t, setup.max_steps) is not None]
    longest = max(seconds(t, 0, setup.max_steps) for t in finished)
    decisions = [(r.trial.id, r.steps, r.decision.value) for r in getattr(tuner, "decisions", [])]
    return Run(sharing, tuned, final, trials[best], acc, decisions, study.requests, longest)


def same_study(a: Run, b: Run) -> bool:
    """Whether two runs asked for the same trials and steps and decided the same (any order)."""
    return sorted(a.requests) == sorted(b.requests) and sorted(a.decisions) == sorted(b.decisions)


# -- report -----------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def report(setup: Setup, shared: Run, alone: Run, p_space: PlanStats) -> list[str]:
    """Two table rows: the tuner alone, and with the best trial's final epochs (verdicts)."""
    rows = []
    for label, s, u in (
        ("tuner", shared.tuned, alone.tuned),
        ("+ final", shared.final, alone.final),
    ):
        gpu = _ratio(u.worker_seconds, s.worker_seconds)
        e2e = _ratio(u.time, s.time)
        explored = _ratio(s.requested_steps, s.unique_steps)
        verdict = "-"
        if label == "+ final":
            verdict = (
                f"{'met' if gpu > setup.paper_gpu else '**NOT met**'} / "
                f"{'met' if e2e > setup.paper_e2e else '**NOT met**'}"
            )
        rows.append(
            f"| {setup.name} | {label} | {p_space.trials} ({setup.paper_trials}) | "
            f"{p_space.merge_rate:.3f} ({setup.paper_p:.3f}) | {explored:.3f} | "
            f"{s.executed_steps} / {s.unique_steps} | {s.stages} / {u.stages} | "
            f"{s.worker_seconds / 3600:.1f} | {u.worker_seconds / 3600:.1f} | **{gpu:.2f}x** | "
            f"{setup.paper_gpu:.2f}x | {s.time / 3600:.2f} | {u.time / 3600:.2f} | **{e2e:.2f}x** | "
            f"{setup.paper_e2e:.2f}x | {verdict} |"
        )
    return rows


def bound_note(setup: Setup, shared: Run, alone: Run, workers: int, ideal: float | None) -> str:
    """How short the shared run could be at best, and how short the paper's e2e ratio needs it."""
    tuned = shared.tuned
    floor = max(tuned.worker_seconds / workers, shared.longest)
    extra = shared.final.time - tuned.time
    needed = alone.final.time / setup.paper_e2e - extra
    return (
        f"- {setup.name}: best trial {shared.best.id[:8]} val_acc {shared.best_acc:.4f} (alone: "
        f"{alone.best.id[:8]} {alone.best_acc:.4f}); same requests and decisions with and without "
        f"sharing: {'yes' if same_study(shared, alone) else 'NO'}; {len(shared.requests)} requests; "
        f"missed points {shared.final.missed_points} / {alone.final.missed_points}; tuner part "
        f"on average (shared / alone): {tuned.mean_waiting:.1f} / {alone.tuned.mean_waiting:.1f} "
        f"requests waiting, {tuned.mean_chains:.1f} / {alone.tuned.mean_chains:.1f} chains "
        f"submitted, {tuned.mean_busy:.1f} / {alone.tuned.mean_busy:.1f} workers busy; worker "
        f"utilisation {tuned.worker_seconds / tuned.time / workers:.0%} / "
        f"{alone.tuned.worker_seconds / alone.tuned.time / workers:.0%}. Tuner part shared: "
        f"{tuned.time / 3600:.2f} h, lower bound max(worker-h / W, longest trial path) = "
        f"{floor / 3600:.2f} h; the final epochs add {extra / 3600:.2f} h in both; the paper's "
        f"e2e ratio with them needs the tuner part <= {needed / 3600:.2f} h"
        + (" (below the lower bound: out of reach)" if needed < floor else "")
        + (
            ""
            if ideal is None
            else f"; a zero-overhead stage-level list schedule of the whole "
            f"stage tree takes {ideal / 3600:.2f} h"
        )
    )


HEADER = (
    "| set-up | counted | trials (paper) | p space (paper) | p explored | executed / unique steps "
    "| stages shared / alone | worker-h shared | worker-h alone | worker-h ratio | paper "
    "| end-to-end h shared | end-to-end h alone | end-to-end ratio | paper | goal: worker-h / e2e |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--start", type=float, default=15.0, help="seconds per stage start")
    parser.add_argument("--save", type=float, default=1.0, help="seconds per checkpoint")
    parser.add_argument("--evaluate", type=float, default=5.0, help="seconds per evaluation")
    parser.add_argument(
        "--batch256",
        type=float,
        default=BATCH256,
        help="time of a batch-256 epoch / a batch-128 epoch",
    )
    parser.add_argument("--final-epochs", type=int, default=100)
    parser.add_argument("--only", choices=[s.key for s in SETUPS], action="append")
    parser.add_argument(
        "--no-withdraw",
        action="store_true",
        help="queued chains stay behind busy workers (the driver before 2026-12-01)",
    )
    args = parser.parse_args(argv)
    costs = Costs(start=args.start, save=args.save, evaluate=args.evaluate)
    chosen = [s for s in SETUPS if not args.only or s.key in args.only]
    began = time.perf_counter()
    lines = [HEADER]
    notes = []
    shared_runs: dict[str, Run] = {}
    for setup in chosen:
        trials = setup.trials()
        p_space = space_stats(trials, setup.max_steps)
        shared, alone = (
            run_setup(
                setup,
                sharing=sharing,
                workers=args.workers,
                costs=costs,
                final_epochs=args.final_epochs,
                trials=trials,
                batch256=args.batch256,
                withdraw_after=None if args.no_withdraw else WITHDRAW_AFTER,
            )
            for sharing in (True, False)
        )
        lines += report(setup, shared, alone, p_space)
        ideal = None
        if setup.key == "grid":
            ideal = list_schedule(
                trials, setup.max_steps, step_seconds(setup.model, args.batch256), args.workers
            )
        notes.append(bound_note(setup, shared, alone, args.workers, ideal))
        shared_runs[setup.key] = shared
    if "asha" in shared_runs and "asha-default" in shared_runs:
        same = same_study(shared_runs["asha"], shared_runs["asha-default"])
        notes.append(
            f"- ASHA with 40 in flight and with no cap (shared): same requests and "
            f"decisions: {'yes' if same else 'NO'}"
        )
    print("\n".join(lines))
    print()
    print("\n".join(notes))
    print(
        f"\nW = {args.workers} workers; costs: start {costs.start:g} s, save {costs.save:g} s, "
        f"evaluate {costs.evaluate:g} s; epoch at batch 128: "
        + ", ".join(f"{m} {s:g} s" for m, s in SECONDS.items())
        + f", at 256: x{args.batch256:g}; final epochs {args.final_epochs}; simulated in "
        f"{time.perf_counter() - began:.1f} s (Python {platform.python_version()})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
