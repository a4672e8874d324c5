"""``hd.cluster.slurm(security=True)``: a study over TLS on the real SLURM, and nobody else gets in.

The scheduler of a SLURM cluster must listen on the network (the jobs connect to it). With
``security=True`` it, its workers and the study's client speak mutual TLS with a certificate
made for the cluster; a client without that certificate is refused by the scheduler itself.
The workers' key and certificate reach the jobs as files (0600, in a 0700 folder) that are
removed when the cluster closes.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from distributed.security import Security

import hippo_dask as hd
from hippo_dask import seq
from tests.cluster.test_slurm import JOB, run_study, slurm  # noqa: F401  (slurm: autouse fixture)
from tests.helpers import standalone

pytestmark = pytest.mark.slurm

STEPS = 200


def connected_clients(client: Any) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))


def test_a_study_runs_over_tls_and_a_client_without_the_credentials_is_refused(
    tmp_path: Path,
    slurm: Path,  # noqa: F811
) -> None:
    tls_root = tmp_path / "shared"
    with hd.cluster.slurm(
        jobs=1, security=True, shared_temp_directory=str(tls_root), log_directory=str(slurm), **JOB
    ) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        security = client.cluster.security
        files = {
            name: getattr(security, name)
            for name in ("tls_ca_file", "tls_worker_key", "tls_worker_cert")
        }
        folder = Path(files["tls_worker_key"]).parent
        assert folder.parent == tls_root and stat.S_IMODE(folder.stat().st_mode) == 0o700
        for path in files.values():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        script = client.cluster.job_script()
        assert f"--tls-key {files['tls_worker_key']}" in script and "--protocol tls://" in script
        assert "PRIVATE KEY" not in script  # the key travels as a file, never in the script

        client.wait_for_workers(1, timeout=120)
        assert all(a.startswith("tls://") for a in client.scheduler_info(n_workers=-1)["workers"])
        log = str(tmp_path / "train.log")
        trials = list(
            hd.GridSpace(
                lr=[seq.StepLR(0.1, 0.1, [60]), seq.Constant(0.05)],
                log=[log],
                seconds_per_step=[0.002],
            )
        )
        _, scores = run_study(client, tmp_path / "runs", trials)
        assert scores == [standalone(t, STEPS) for t in trials]

        before = connected_clients(client)
        # No credentials at all: distributed will not even try TLS without a certificate.
        with pytest.raises(TypeError, match="TLS expects a `ssl_context`"):
            Client(address, timeout="10s")
        # Someone else's certificate: the scheduler does not know its CA.
        with pytest.raises(OSError):
            Client(address, security=Security.temporary(), timeout="10s")
        # Plain TCP to the TLS port.
        with pytest.raises(OSError):
            Client(address.replace("tls://", "tcp://"), timeout="10s")
        # The cluster's CA (so the scheduler's certificate checks out) but no client
        # certificate: the scheduler itself ends the handshake.
        context = ssl.create_default_context(cafile=files["tls_ca_file"])
        context.check_hostname = False
        host, port = address.removeprefix("tls://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as raw:
            try:
                with context.wrap_socket(raw) as tls:
                    answer = tls.recv(1)
            except (ssl.SSLError, ConnectionError) as exc:
                answer = f"refused: {exc}".encode()
        assert answer == b"" or answer.startswith(b"refused"), answer
        assert connected_clients(client) == before  # none of them got in
    assert not folder.exists()  # the workers' key and certificate are gone with the cluster


def test_security_must_be_true_or_a_security_object() -> None:
    with pytest.raises(
        hd.HippoError,
        match="`security` must be True, None or a distributed.security.Security, got 'yes'",
    ):
        hd.cluster.slurm(jobs=0, security="yes", **JOB)  # type: ignore[arg-type]
