"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client

from tests.helpers import make_client


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two single-slot workers for the module; a module that needs another cluster defines its
    own ``client``."""
    cluster, client = make_client(2)
    with cluster, client:
        yield client
