"""One warm LocalCluster for the dashboard tests that run real studies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client

from tests.helpers import make_client


@pytest.fixture(scope="package")
def client() -> Iterator[Client]:
    """Two GPU-slot workers, warmed up: a fresh worker's first checkpoint imports torch, which
    takes seconds and would show as one long first stage in every lane."""
    cluster, client = make_client(2)
    with cluster, client:
        client.run(__import__, "hippo_dask.torch")
        client.run(__import__, "hippo_dask.testing.simulated")
        yield client
