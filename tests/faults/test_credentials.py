"""Storage credentials reach fsspec only: never the journal, checkpoints, metrics or logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import s3fs

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.helpers import make_client

SECRET = "hippo-SECRET-4c1d9e-do-not-write"


def test_credentials_are_never_written(
    tmp_path: Path, s3_server: Any, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hippo_dask")
    options = s3_server.storage_options | {"secret": SECRET}  # moto accepts any secret
    space = hd.GridSpace(
        lr=[seq.StepLR(0.1, 0.1, [10]), seq.Constant(0.05)], log=[str(tmp_path / "log")]
    )
    cluster, client = make_client(1)
    with cluster, client:
        study = hd.Study(
            "secret",
            SimulatedTrainer,
            storage=f"{s3_bucket}/runs",
            client=client,
            storage_options=options,
        )
        result = study.tune(hd.tuners.Grid(space, metric="score", steps=20))
    fs = s3fs.S3FileSystem(**options)
    files = [f for f in fs.find(f"{s3_bucket}/runs")]
    assert any("/plan/" in f for f in files) and any("/ckpt/" in f for f in files)
    assert any("metrics.zarr" in f for f in files)
    for name in files:
        assert SECRET.encode() not in fs.cat_file(name), name
    assert SECRET not in caplog.text
    assert SECRET not in repr(result) and SECRET not in result.trials.to_csv()
    assert SECRET not in repr(study) and SECRET not in repr(study.plan)
