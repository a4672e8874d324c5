"""The tuners on a real Dask cluster with the simulated trainer.

Each tuner's decisions on the cluster must equal its decisions against a fake study whose
metrics are the trials trained alone (:func:`tests.helpers.standalone`): the engine's sharing,
splitting and timing change nothing. Promotions resume from checkpoints (executed steps equal
the unique steps), and a second identical tune trains nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from distributed import Client

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer
from hippo_dask.tuners._common import StoppingTuner
from tests.helpers import executed, make_client, standalone
from tests.tuners.fake import FakeStudy, run


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    cluster, client = make_client(2)
    with cluster, client:
        yield client


def space(log: str, **extra: list[object]) -> hd.GridSpace:
    """16 trials whose schedules share prefixes: lr decays at 10, 20, 30 or never."""
    return hd.GridSpace(
        lr=[seq.MultiStep([0.1, 0.01], [m]) for m in (10, 20, 30)] + [seq.Constant(0.1)],
        batch_size=[seq.Constant(128), seq.MultiStep([128, 256], milestones=[15])],
        optimizer=["sgd", "adam"],
        log=[log],
        **extra,
    )


@functools.cache
def alone(trial: hd.Trial, steps: int) -> float:
    return standalone(trial, steps)


def by_name(tuner: StoppingTuner) -> list[tuple[str, int, str]]:
    return [(r.trial.id, r.steps, r.decision.value) for r in tuner.decisions]


def check(
    client: Client, tmp_path: Path, make: Callable[[hd.GridSpace], StoppingTuner], *, exact: bool
) -> tuple[hd.Result, StoppingTuner]:
    """Tune on the cluster; compare with the fake study; rerun for free.

    ``exact``: every step is trained once (executed == unique). That holds when every branch
    point is known before the stretch it lies in is trained: SHA and median stopping extend
    all their trials together. ASHA and Hyperband ask for trials at different times, and a
    later request can branch off in the middle of a stretch an earlier one trained without a
    checkpoint there; the engine then retrains from the checkpoint before.
    """
    log = str(tmp_path / "train.log")
    grid = space(log)
    study = hd.Study("tuners", SimulatedTrainer, storage=str(tmp_path), client=client)
    tuner = make(grid)
    result = study.tune(tuner)
    # The same decisions as against the trials' metrics trained alone.
    reference = make(grid)
    run(reference, FakeStudy(lambda t, s: {"score": alone(t, s), "steps": float(s)}))
    assert by_name(tuner) == by_name(reference)
    # Statuses: stopped for pruned trials; done for those at the end.
    frame = result.trials.set_index("trial_id")
    for trial_id in tuner.stopped():
        assert frame.loc[trial_id, "status"] == "stopped"
    assert set(frame.index[frame["status"] == "stopped"]) == tuner.stopped()
    # Sharing and resuming: nothing trained twice, less than trial by trial.
    stats = result.stats
    assert executed(log) == stats.executed_steps < stats.requested_steps
    if exact:
        assert stats.executed_steps == stats.unique_steps
    else:
        assert stats.executed_steps >= stats.unique_steps
    # Every metric is the trial's own, trained alone.
    for record in result.records:
        if record.metrics is not None:
            assert record.metrics["score"] == alone(record.trial, record.steps)
    # A second identical tune (new Study object, same storage) trains nothing.
    again = hd.Study("tuners", SimulatedTrainer, storage=str(tmp_path), client=client)
    tuner_again = make(grid)
    rerun = again.tune(tuner_again)
    assert rerun.stats.executed_steps == 0 and executed(log) == stats.executed_steps
    assert by_name(tuner_again) == by_name(tuner)
    # (rows come in the order results arrived, which is timing: compare by trial)
    assert rerun.trials.set_index("trial_id").sort_index().equals(frame.sort_index())
    return result, tuner


def test_sha(client: Client, tmp_path: Path) -> None:
    result, tuner = check(
        client,
        tmp_path,
        lambda g: hd.tuners.SHA(g, "score", min_steps=5, max_steps=40, reduction=2),
        exact=True,
    )
    assert tuner.rungs == [5, 10, 20, 40]
    counts = result.trials["steps"].value_counts().to_dict()
    assert counts == {5: 8, 10: 4, 20: 2, 40: 2}  # 16, 8, 4, 2 trials at the rungs
    top = result.trials[result.trials["steps"] == 40]
    assert set(top["status"]) == {"done"}
    assert result.best is not None and result.best.steps == 40
    assert result.best.metrics is not None
    assert result.best.metrics["score"] == top["score"].max()
    assert (result.trials["status"] == "stopped").sum() == 14


def test_asha(client: Client, tmp_path: Path) -> None:
    result, tuner = check(
        client,
        tmp_path,
        lambda g: hd.tuners.ASHA(
            g, "score", min_steps=5, max_steps=40, reduction=2, n_trials=12, max_concurrent=3
        ),
        exact=False,
    )
    done = result.trials[result.trials["status"] == "done"]
    assert len(done) >= 1 and set(done["steps"]) == {40}
    assert result.best is not None and result.best.steps == 40
    assert result.best.metrics is not None and result.best.metrics["score"] == done["score"].max()
    assert (result.trials["status"] == "stopped").sum() == 12 - len(done)


def test_hyperband(client: Client, tmp_path: Path) -> None:
    result, tuner = check(
        client,
        tmp_path,
        lambda g: hd.tuners.Hyperband(g, "score", max_steps=27, min_steps=3, reduction=3),
        exact=False,
    )
    assert [b[0][0] for b in tuner.brackets] == [9, 5, 3]
    assert result.best is not None and result.best.steps == 27


def test_median_stopping(client: Client, tmp_path: Path) -> None:
    result, tuner = check(
        client,
        tmp_path,
        lambda g: hd.tuners.MedianStopping(
            g, "score", steps=40, grace_steps=10, interval=10, min_trials=3
        ),
        exact=True,
    )
    assert 0 < len(tuner.stopped()) < 16
    assert result.best is not None and result.best.steps == 40


def test_failures_and_nan_on_the_cluster(client: Client, tmp_path: Path) -> None:
    # Half the trials fail past step 12, a quarter report NaN: ASHA goes on and ranks them worst.
    log = str(tmp_path / "train.log")
    grid = space(log, fail_at=[None, 12])
    trials = [t if i % 4 else hd.Trial(**t.config, nan=True) for i, t in enumerate(grid)]
    study = hd.Study("faulty", SimulatedTrainer, storage=str(tmp_path), client=client)
    tuner = hd.tuners.ASHA(
        trials, "score", min_steps=5, max_steps=20, reduction=2, n_trials=None, max_concurrent=4
    )
    result = study.tune(tuner)
    frame = result.trials.set_index("trial_id")
    for trial in trials:
        if trial.fixed["fail_at"] == 12 and (trial.id, 5, "promote") in by_name(tuner):
            assert frame.loc[trial.id, "status"] == "failed"
    assert result.best is not None and result.best.steps == 20
    assert result.best.trial.fixed["fail_at"] is None and "nan" not in result.best.trial.fixed
    assert "failed" in set(frame["status"]) and "stopped" in set(frame["status"])
