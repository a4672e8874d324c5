"""gc and Study on a path or bucket that holds no study: a clear error, and nothing created.

s3fs's ``mkdir``/``makedirs`` create buckets, so a typo in a bucket name used to leave a new
bucket behind (and gc of a wrong path a new, empty study folder). gc now exits non-zero naming
what is missing and touches nothing; a Study on a missing bucket fails naming the bucket; a Study
on a fresh local path still creates its study.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import s3fs

import hippo_dask as hd
from hippo_dask import seq
from hippo_dask.cli import main
from hippo_dask.plan import SearchPlan
from hippo_dask.storage import collect_garbage
from hippo_dask.testing.simulated import SimulatedTrainer
from tests.conftest import S3Server


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_gc_of_a_local_folder_without_a_study_fails_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not a study")
    before = listing(tmp_path)
    assert main(["gc", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"hippo-dask gc: {tmp_path} holds no study" in err and "plan" in err
    assert listing(tmp_path) == before  # no plan/, no ckpt/
    missing = tmp_path / "typo" / "study"
    assert main(["gc", str(tmp_path / "typo"), "--name", "study"]) == 2
    assert "holds no study" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "typo").exists()
    with pytest.raises(hd.StudyNotFoundError, match="holds no study"):
        collect_garbage(str(missing))
    assert listing(tmp_path) == before


def test_gc_of_a_bucket_without_a_study_fails_and_creates_nothing(
    s3_server: S3Server, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    endpoint = ["--endpoint-url", s3_server.endpoint_url]
    assert main(["gc", f"{s3_bucket}/runs/study", *endpoint]) == 2
    assert f"{s3_bucket}/runs/study holds no study" in capsys.readouterr().err
    fs.invalidate_cache()
    assert fs.find(s3_bucket) == []  # not one key written


def test_gc_of_a_missing_bucket_names_it_and_never_creates_it(
    s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    bucket = f"no-such-{uuid.uuid4().hex[:12]}"
    assert main(["gc", f"s3://{bucket}/runs/study", "--endpoint-url", s3_server.endpoint_url]) == 2
    assert (
        f"bucket '{bucket}' of s3://{bucket}/runs/study does not exist" in capsys.readouterr().err
    )
    with pytest.raises(hd.StorageError, match=f"bucket '{bucket}'.*never creates buckets"):
        collect_garbage(f"s3://{bucket}/runs/study", s3_server.storage_options)
    fs.invalidate_cache()
    assert not fs.exists(bucket)
    assert bucket not in [b.rstrip("/") for b in fs.ls("", refresh=True)]


def test_a_study_on_a_missing_bucket_names_it_and_creates_nothing(s3_server: S3Server) -> None:
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    bucket = f"no-such-{uuid.uuid4().hex[:12]}"
    with pytest.raises(
        hd.StorageError,
        match=rf"bucket '{bucket}' of s3://{bucket}/runs/digits "
        rf"does not exist.*aws s3 mb s3://{bucket}",
    ):
        hd.Study(
            "digits",
            SimulatedTrainer,
            storage=f"s3://{bucket}/runs",
            storage_options=s3_server.storage_options,
        )
    fs.invalidate_cache()
    assert not fs.exists(bucket)


def test_a_study_on_an_existing_bucket_and_a_fresh_local_path_starts(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    trial = hd.Trial(lr=seq.Constant(0.1))
    remote = hd.Study(
        "fresh",
        SimulatedTrainer,
        storage=f"{s3_bucket}/runs",
        storage_options=s3_server.storage_options,
    )
    with remote.plan as plan:
        plan.add(trial, 10)
    assert SearchPlan.open(remote.root, s3_server.storage_options).stats().trials == 1
    local = hd.Study("fresh", SimulatedTrainer, storage=str(tmp_path / "new" / "runs"))
    assert (tmp_path / "new" / "runs" / "fresh" / "plan").is_dir()  # created as before
    local.close()
    # gc of the fresh (empty) local study works: it is a study.
    assert collect_garbage(local.root, dry_run=True).deleted == []
