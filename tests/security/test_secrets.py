"""Secrets stay secret: a password in a storage URL is masked in every message, and S3
credentials reach each worker once instead of riding in every task the scheduler holds."""

from __future__ import annotations

import logging
import socket
import warnings
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from distributed import SchedulerPlugin

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.cli import main
from hippo_dask.dashboard import StudyReader
from hippo_dask.dashboard._app import header_html
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import collect_garbage
from hippo_dask.storage._retry import with_retries
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import make_client, standalone

SECRET = "hippo-TOP-SECRET-6f0e2b91"
PASSWORD = "pw-3d9c1a7e"


class RunSpecs(SchedulerPlugin):
    """Keeps, for every stage task as it reaches the scheduler, what the scheduler holds for it:
    its run_spec (function and arguments) pickled, and the repr its dashboard would show."""

    name = "hippo-test-run-specs"

    def __init__(self) -> None:
        self.seen: dict[str, tuple[bytes, str]] = {}

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        for key in tasks:
            state = scheduler.tasks.get(key)
            if state is not None and str(key).startswith("hippo-stage-"):
                self.seen[str(key)] = (cloudpickle.dumps(state.run_spec), repr(state.run_spec))


def _tokens() -> list[str]:
    from hippo_dask.execution import _credentials

    return sorted(_credentials._STORES)


def test_s3_secrets_are_in_no_task(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    options = s3_server.storage_options | {"secret": SECRET}  # moto accepts any secret
    log = str(tmp_path / "log")
    space = hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [10]), seq.Constant(0.05)],
        batch_size=[seq.Constant(32), seq.MultiStep([32, 64], [5])],
        log=[log],
    )
    cluster, client = make_client(2)
    with cluster, client:
        client.register_plugin(RunSpecs())
        study = hd.Study(
            "secret",
            SimulatedTrainer,
            storage=f"{s3_bucket}/runs",
            client=client,
            storage_options=options,
            eval_every=5,
        )
        result = study.tune(hd.tuners.Grid(space, metric="score", steps=20))
        seen = cluster.scheduler.plugins[RunSpecs.name].seen
        assert len(seen) >= result.stats.stages > 0
        for key, (blob, text) in seen.items():
            assert SECRET.encode() not in blob, key
            assert SECRET not in text, key
            assert b"StoreRef" in blob, key  # the stage's storage travels as a reference
        # A worker that joins later gets the storage too (Dask hands it the plugin).
        cluster.scale(3)
        client.wait_for_workers(3)
        tokens = client.run(_tokens)
        more = study.tune(
            hd.tuners.Grid(
                hd.GridSpace(lr=[seq.Constant(0.2), seq.Constant(0.3)], log=[log]),
                metric="score",
                steps=20,
            )
        )
        assert len(seen) >= result.stats.stages + more.stats.stages
        assert not any(SECRET.encode() in blob for blob, _ in seen.values())
    for record in [*result.records, *more.records]:
        assert record.status == "done", record.error
        assert record.metrics is not None
        assert record.metrics["score"] == standalone(record.trial, 20)
    assert len(tokens) == 3 and len({tuple(t) for t in tokens.values()}) == 1
    assert len(next(iter(tokens.values()))) == 1  # one store, installed once per worker


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_passwords_in_storage_urls_are_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hippo_dask")
    # Nothing listens there: the study cannot open it, and says so without the password.
    url = f"ftp://alice:{PASSWORD}@127.0.0.1:{_free_port()}/runs"
    with pytest.raises(hd.StorageError) as failed:
        hd.Study("masked", SimulatedTrainer, storage=url)
    assert PASSWORD not in str(failed.value) and "alice:***@127.0.0.1" in str(failed.value)

    # A store that opens: reprs, warnings, retry logs and errors all mask it.
    root = f"memory://bob:{PASSWORD}@box{tmp_path}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = hd.Study("masked", SimulatedTrainer, storage=root)
        shown = [repr(study), repr(study.checkpoints), repr(study.metrics_store)]
        with pytest.raises(hd.StorageError) as down:
            with_retries(
                _refused(f"{root}/masked/ckpt/x.ckpt"),
                timeout=0.0,
                what=f"saving checkpoint {root}/masked/ckpt/x.ckpt",
            )
        shown.append(str(down.value))
        reader = StudyReader(study.root)
        shown += [repr(reader), header_html(reader.refresh())]
    shown += [str(w.message) for w in caught] + [caplog.text]
    assert all("bob:***@box" in text for text in shown[:4]), shown
    for text in shown:
        assert PASSWORD not in text, text


def test_the_plan_gc_and_compact_mask_passwords(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="hippo_dask")
    root = f"memory://carol:{PASSWORD}@box{tmp_path}"
    study = hd.Study("masked", SimulatedTrainer, storage=root)
    study.tune(hd.tuners.Grid(hd.GridSpace(lr=[seq.Constant(0.1)]), metric="score", steps=4))
    shown = [repr(SearchPlan.open(study.root))]
    # The embedded cluster's silence_logs lowered the root handlers (caplog's too) to WARNING.
    caplog.set_level(logging.DEBUG, logger="hippo_dask")
    collect_garbage(study.root, keep="all", orphan_age=0.0)
    with pytest.raises(hd.StudyNotFoundError) as nothing:
        SearchPlan.open(f"{root}/none", create=False)
    shown.append(str(nothing.value))
    assert main(["compact", f"{root}/none"]) == 2
    shown += [capsys.readouterr().err, caplog.text]
    study.close()
    assert "carol:***@box" in shown[0] and "carol:***@box" in shown[1], shown
    assert "gc memory://carol:***@box" in caplog.text
    for text in shown:
        assert PASSWORD not in text, text


def _refused(where: str) -> Any:
    def action() -> None:
        raise ConnectionRefusedError(f"cannot connect to {where}")

    return action
