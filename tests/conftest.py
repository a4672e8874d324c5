"""Fixtures shared by the whole test suite.

S3: ``s3_server`` runs one real S3 endpoint (moto's threaded server on loopback, a random free
port) for the session; ``s3_bucket`` gives each test a fresh, empty bucket on it. Pass
``s3_server.storage_options`` wherever fsspec/s3fs/zarr take ``storage_options``::

    def test_something(s3_server, s3_bucket):
        store = FsspecCheckpointStore(f"{s3_bucket}/ckpt", s3_server.storage_options)

moto's in-process ``mock_aws()`` does not work with s3fs (aiobotocore), hence the server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server.

    Attributes
    ----------
    endpoint_url
        ``http://127.0.0.1:<port>``.
    """

    endpoint_url: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this server (a fresh dict each time, safe to modify).

        No ``region_name`` in ``client_kwargs``: moto then refuses to create buckets.
        """
        return {"key": "testing", "secret": "testing", "endpoint_url": self.endpoint_url}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 for the whole session (stopped at the end).

    Also sets dummy ``AWS_*`` credentials in the environment for the session (where unset), so
    botocore never looks for real ones (``~/.aws``, instance metadata).
    """
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()  # returns once the socket is bound
        try:
            host, port = server.get_host_and_port()
            yield S3Server(endpoint_url=f"http://{host}:{port}")
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new empty bucket on ``s3_server``, as ``"s3://<bucket>"`` (no trailing slash).

    Buckets are not removed afterwards: moto keeps them in memory until the session ends.
    """
    import s3fs

    name = f"test-{uuid.uuid4().hex[:16]}"
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs.mkdir(name)
    return f"s3://{name}"
