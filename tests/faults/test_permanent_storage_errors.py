"""Storage that refuses (access denied, no such bucket) fails the study at once with a message
that says what to check; only an outage (a server briefly down) is retried.

Both on a real moto S3 server: the permanent failures happen mid-study, while a stage is held by
the simulated trainer's gate, so the worker's checkpoint write and the driver's journal and
metrics writes all meet them. "At once" is measured against the configured storage timeout
(60 s) by the retry counters of every process, not by racing the wall clock: zero retries.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import moto.settings
import pytest
import s3fs
from distributed import Client
from moto.server import ThreadedMotoServer

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.storage import FsspecCheckpointStore
from hippo_dask.storage._retry import transient_failures, with_retries
from hippo_dask.testing.simulated import SimulatedTrainer, read_log
from tests.helpers import make_client, until

TIMEOUT = 60


def retries(client: Client) -> int:
    """Transient failures retried so far, by the workers and by this (the driver's) process."""
    return sum(client.run(transient_failures).values()) + transient_failures()


def deny_access(monkeypatch: pytest.MonkeyPatch, fs: s3fs.S3FileSystem, bucket: str) -> None:
    # moto checks signatures and IAM from now on: the access key "testing" is unknown to it,
    # so every request is refused with 403 (InvalidAccessKeyId), as a revoked key would be.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


def delete_bucket(monkeypatch: pytest.MonkeyPatch, fs: s3fs.S3FileSystem, bucket: str) -> None:
    fs.rm(bucket, recursive=True)  # the objects, then the bucket: NoSuchBucket from now on
    assert not fs.exists(bucket)


@pytest.mark.parametrize(
    "break_storage, why",
    [
        (deny_access, "access denied: check the credentials"),
        (delete_bucket, "no such bucket, folder or file: check the storage URL"),
    ],
)
def test_refused_storage_fails_the_study_at_once(
    tmp_path: Path,
    s3_server: Any,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    break_storage: Callable[[pytest.MonkeyPatch, s3fs.S3FileSystem, str], None],
    why: str,
) -> None:
    log, gate = str(tmp_path / "train.log"), str(tmp_path / "gate")
    options = s3_server.storage_options
    fs = s3fs.S3FileSystem(**options)
    steps = seq.MultiStep([32, 64], [10])  # setup() runs at step 10, where the gate waits
    held = hd.Trial(lr=seq.Constant(0.1), batch_size=steps, log=log, gate=[10, gate])
    other = hd.Trial(lr=seq.Constant(0.2), batch_size=steps, log=log, gate=[10, gate])
    cluster, client = make_client(2)
    with cluster, client:
        study = hd.Study(
            "refused",
            SimulatedTrainer,
            storage=f"{s3_bucket}/runs",
            client=client,
            storage_options=options,
            storage_timeout=TIMEOUT,
        )

        async def scenario() -> None:
            jobs = [asyncio.ensure_future(study.train(t, 20)) for t in (held, other)]
            await until(
                lambda: sum(e.get("waiting") == 10 for e in read_log(log)) == 2,
                "both stages at the gate",
            )
            # The driver wrote what it writes before any stage reports (journal, "submitted"
            # records): the first write to meet the refusal is a worker's checkpoint.
            await until(
                lambda: len(study.metrics_store.read_stages(status=None)) == 2,
                "the driver's stage records",
            )
            before = retries(client)
            break_storage(monkeypatch, fs, s3_bucket.removeprefix("s3://"))
            Path(gate).touch()  # the stages go on, and cannot save their checkpoints
            try:
                await asyncio.gather(*jobs)
            finally:
                await study._close_driver()
                assert retries(client) == before  # nothing was retried, in any process

        with pytest.raises(hd.StorageError, match=why) as failed:
            asyncio.run(scenario())
    message = str(failed.value)
    assert "not an outage, so it was not retried" in message
    # Both stages trained to their end and met the refusal saving their checkpoint there;
    # the workers did not retry either (counted above).
    ends = {e["start"] + e["steps"] for e in read_log(log) if "steps" in e}
    assert max(ends) == 20
    assert "unreachable for more than" not in message


def test_a_brief_outage_is_retried_until_the_server_is_back(tmp_path: Path) -> None:
    """The other side of the line: a server that is down (connection refused) is waited for."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": f"http://{host}:{port}",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    bucket = f"brief-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    store = FsspecCheckpointStore(f"s3://{bucket}/ckpt", options)
    server.stop()
    calls: list[int] = []

    def save() -> str:
        calls.append(1)
        if len(calls) == 3:  # down for two tries, then back on the same port
            restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            restarted.start()
            servers.append(restarted)
        return store.save("state", {"step": 3})

    servers: list[ThreadedMotoServer] = []
    before = transient_failures()
    try:
        uri = with_retries(save, what="saving a checkpoint", timeout=TIMEOUT)
        assert store.load(uri)["step"] == 3
    finally:
        for restarted in servers:
            restarted.stop()
    assert len(calls) == 3 and transient_failures() - before == 2
