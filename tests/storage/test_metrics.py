"""The zarr metrics store: round trips, growing metric sets, several writers, readers elsewhere."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest
import zarr

from hippo_dask.errors import StorageError
from hippo_dask.storage._metrics import (
    BASE_COLUMNS,
    STAGE_COLUMNS,
    MetricRow,
    MetricsStore,
    StageRecord,
    new_writer_id,
)

REPO = Path(__file__).resolve().parents[2]


def rows(trial: str, steps: range, t0: float = 1000.0, **extra: float) -> list[MetricRow]:
    return [
        MetricRow(trial, s, {"loss": 1.0 / (s + 1), **extra}, t0 + s, f"tcp://10.0.0.1:{s % 3}")
        for s in steps
    ]


def keys(frame: pd.DataFrame) -> list[tuple[str, int]]:
    return sorted(zip(frame["trial"], frame["step"].astype(int), strict=True))


# ----------------------------------------------------------------------------- round trips


def test_round_trip_keeps_nan_and_infinities(tmp_path: Path) -> None:
    store = MetricsStore(str(tmp_path / "metrics.zarr"))
    assert store.read().empty and list(store.read().columns) == list(BASE_COLUMNS)
    batch = [
        MetricRow("t-a", 3, {"acc": 0.5, "loss": float("nan")}, 20.0, "w1"),
        MetricRow("t-b", 1, {"acc": float("inf"), "loss": -float("inf")}, 10.0, "w2"),
        MetricRow("t-a", 2, {"acc": 0.25, "loss": 1.5}, 20.0, "w1", kind="eval"),
        MetricRow("t-ü/ünïcode ☃", 0, {"acc": -0.0}, 5.5, "", kind="train"),
    ]
    store.append(batch)
    frame = MetricsStore(str(tmp_path / "metrics.zarr")).read()
    assert list(frame.columns) == [*BASE_COLUMNS, "acc", "loss"]
    # sorted by wall time, then step
    assert list(zip(frame.wall_time, frame.step, strict=True)) == [
        (5.5, 0),
        (10.0, 1),
        (20.0, 2),
        (20.0, 3),
    ]
    assert list(frame.trial) == ["t-ü/ünïcode ☃", "t-b", "t-a", "t-a"]
    assert list(frame.worker) == ["", "w2", "w1", "w1"]
    assert list(frame.kind) == ["train", "metrics", "eval", "metrics"]
    assert set(frame.writer) == {store.writer}
    assert frame["step"].dtype == np.int64 and frame["acc"].dtype == np.float64
    assert frame.acc.tolist()[1:] == [math.inf, 0.25, 0.5]
    assert math.copysign(1.0, frame.acc[0]) == -1.0  # -0.0 is kept bit for bit
    assert math.isnan(frame.loss[0]) and frame.loss[1] == -math.inf
    assert frame.loss[2] == 1.5 and math.isnan(frame.loss[3])
    assert frame.index.tolist() == [0, 1, 2, 3]


def test_metric_names_may_appear_later(tmp_path: Path) -> None:
    url = str(tmp_path / "metrics.zarr")
    store, reader = MetricsStore(url), MetricsStore(url)
    store.append(rows("t", range(0, 3)))
    assert list(reader.read().columns) == [*BASE_COLUMNS, "loss"]
    store.append(rows("t", range(3, 5), val_acc=0.9))
    # 20 more names: the values array grows past one chunk of 16 columns
    store.append([MetricRow("t", 5, {f"m{i:02d}": i for i in range(20)}, 2000.0, "w")])
    for frame in (reader.read(), MetricsStore(url).read()):  # incremental and from scratch
        assert list(frame.columns) == [
            *BASE_COLUMNS,
            "loss",
            "val_acc",
            *(f"m{i:02d}" for i in range(20)),
        ]
        assert frame.step.tolist() == list(range(6))
        assert frame.val_acc.isna().tolist() == [True] * 3 + [False] * 2 + [True]
        assert frame.m19.isna().sum() == 5 and frame.m19.iloc[-1] == 19.0
        assert frame.loss.iloc[:5].tolist() == [1.0 / (s + 1) for s in range(5)]


def test_batches_of_any_size_across_chunk_boundaries(tmp_path: Path) -> None:
    url = str(tmp_path / "metrics.zarr")
    store, reader = MetricsStore(url), MetricsStore(url)
    start = 0
    for size in (1, 254, 1, 1, 300, 256, 7):
        store.append(rows("t", range(start, start + size)))
        start += size
        frame = reader.read()
        assert frame.step.tolist() == list(range(start))
        assert frame.worker.tolist() == [f"tcp://10.0.0.1:{s % 3}" for s in range(start)]
    assert np.allclose(reader.read().loss, [1.0 / (s + 1) for s in range(start)])


def test_a_writer_can_be_resumed_by_its_id(tmp_path: Path) -> None:
    url = str(tmp_path / "metrics.zarr")
    first = MetricsStore(url)
    first.append(rows("t", range(0, 300), extra=1.0))
    again = MetricsStore(url, writer=first.writer)
    again.append(rows("t", range(300, 310), other=2.0))
    frame = MetricsStore(url).read()
    assert frame.step.tolist() == list(range(310))
    assert list(frame.columns)[-3:] == ["loss", "extra", "other"]
    assert frame.extra.notna().sum() == 300 and frame.other.notna().sum() == 10
    assert frame.writer.unique().tolist() == [first.writer]


def test_stage_records_round_trip(tmp_path: Path) -> None:
    url = str(tmp_path / "metrics.zarr")
    store = MetricsStore(url)
    assert store.read_stages().empty and list(store.read_stages().columns) == list(STAGE_COLUMNS)
    store.append_stages(
        [
            StageRecord("node-2", 30, 60, started=12.0, finished=20.5, worker="w1"),
            StageRecord("node-1", 0, 30, started=1.0, finished=11.0, worker="w1"),
        ]
    )
    store.append_stages(
        [StageRecord("node-3", 30, 45, 12.0, 13.0, "w2", status="failed", error="ValueError")]
    )
    store.append(rows("t", range(2)))  # the tables are independent
    frame = MetricsStore(url).read_stages(status=None)
    assert list(frame.columns) == list(STAGE_COLUMNS)
    assert frame.node.tolist() == ["node-1", "node-2", "node-3"]  # by start time, then node
    assert frame.start_step.tolist() == [0, 30, 30] and frame.step.tolist() == [30, 60, 45]
    assert frame.started.tolist() == [1.0, 12.0, 12.0]
    assert frame.finished.tolist() == [11.0, 20.5, 13.0]
    assert frame.worker.tolist() == ["w1", "w1", "w2"]
    assert frame.status.tolist() == ["done", "done", "failed"]
    assert frame.error.tolist() == ["", "", "ValueError"]
    assert set(frame.writer) == {store.writer}
    # by default, the finished stages only: what every row meant before other statuses existed
    assert MetricsStore(url).read_stages().node.tolist() == ["node-1", "node-2"]
    assert MetricsStore(url).read_stages("failed").node.tolist() == ["node-3"]
    assert StageRecord.kind == "stage"
    assert len(MetricsStore(url).read()) == 2


def test_stage_records_in_flight_and_unknown_times(tmp_path: Path) -> None:
    url = str(tmp_path / "metrics.zarr")
    store = MetricsStore(url)
    store.append_stages(
        [
            StageRecord("n", 0, 30, started=5.0, finished=math.nan, worker="w", status="submitted"),
            StageRecord("m", 0, 30, started=6.0, finished=math.nan, worker="w", status="submitted"),
            StageRecord("m", 0, 30, started=math.nan, finished=9.0, worker="w", status="lost"),
        ]
    )
    frame = MetricsStore(url).read_stages(status=None)
    assert frame.node.tolist() == ["n", "m", "m"]  # by start, unknown starts last
    assert frame.status.tolist() == ["submitted", "submitted", "lost"]
    assert frame.finished.isna().tolist() == [True, True, False]
    assert frame.started.isna().tolist() == [False, False, True]
    assert MetricsStore(url).read_stages().empty
    assert MetricsStore(url).read_stages(["lost", "done"]).node.tolist() == ["m"]
    with pytest.raises(ValueError, match="finished must be NaN in a 'submitted' record"):
        StageRecord("n", 0, 1, 0.0, 1.0, "w", status="submitted")
    with pytest.raises(ValueError, match="finished must be finite in a 'done' record"):
        StageRecord("n", 0, 1, 0.0, math.nan, "w")
    with pytest.raises(ValueError, match="started must be finite in a 'done' record"):
        StageRecord("n", 0, 1, math.nan, 1.0, "w")
    with pytest.raises(ValueError, match="finite"):
        StageRecord("n", 0, 1, math.inf, 1.0, "w", status="failed")
    with pytest.raises(TypeError):
        StageRecord("n", 0, 1, 0.0, 1.0, "w", status="failed", error=None)  # type: ignore[arg-type]


def test_stage_tables_written_before_the_error_column(tmp_path: Path) -> None:
    """Tables from before the ``error`` array read as ``""`` there, and resume with it."""
    url = str(tmp_path / "metrics.zarr")
    old = MetricsStore(url)
    old.append_stages(
        [StageRecord("a", 0, 10, 1.0, 2.0, "w"), StageRecord("b", 0, 5, 3.0, 4.0, "w")]
    )
    shutil.rmtree(tmp_path / "metrics.zarr" / old.writer / "stages" / "error")  # the old layout
    reader = MetricsStore(url)
    frame = reader.read_stages()
    assert frame.node.tolist() == ["a", "b"] and frame.error.tolist() == ["", ""]
    again = MetricsStore(url, writer=old.writer)  # a writer continuing that table
    again.append_stages([StageRecord("c", 0, 5, 5.0, 6.0, "w", status="failed", error="OSError")])
    for store in (reader, MetricsStore(url)):
        frame = store.read_stages(status=None)
        assert frame.node.tolist() == ["a", "b", "c"]
        assert frame.error.tolist() == ["", "", "OSError"]


# ----------------------------------------------------------------------------- concurrency


def test_two_writers_interleaved_are_read_exactly_once(tmp_path: Path) -> None:
    url = str(tmp_path / "metrics.zarr")
    one, two = MetricsStore(url), MetricsStore(url)
    assert one.writer != two.writer
    reader = MetricsStore(url)
    expected: list[tuple[str, int]] = []
    for i in range(6):
        one.append(rows("a", range(i * 50, i * 50 + 50), acc=0.1))
        two.append(rows("b", range(i * 3, i * 3 + 3), top5=0.2))
        expected += [("a", s) for s in range(i * 50, i * 50 + 50)]
        expected += [("b", s) for s in range(i * 3, i * 3 + 3)]
        if i % 2:
            assert keys(reader.read()) == sorted(expected)
    for frame in (reader.read(), MetricsStore(url).read()):
        assert keys(frame) == sorted(expected)  # all rows, none twice
        by_writer = frame.groupby("writer").trial.unique().to_dict()
        assert {w: list(t) for w, t in by_writer.items()} == {one.writer: ["a"], two.writer: ["b"]}
        assert frame.loc[frame.trial == "a", "top5"].isna().all()
        assert frame.loc[frame.trial == "b", "acc"].isna().all()
    assert reader.writers() == sorted([one.writer, two.writer])


def test_reader_takes_committed_rows_and_common_prefix_only(tmp_path: Path) -> None:
    url = tmp_path / "metrics.zarr"
    store = MetricsStore(str(url))
    store.append(rows("t", range(5)))
    # a writer caught mid-append: arrays resized and written past the commit
    step = zarr.open_array(url / store.writer / "metrics" / "step", mode="r+")
    step[5:10] = np.arange(5, 10)
    # a writer whose arrays disagree on their length (resized one after the other)
    group = zarr.open_group(url / "zz-handmade" / "metrics", mode="w", attributes={"rows": 4})
    lengths = {"trial": 4, "kind": 4, "worker": 4, "step": 3, "wall_time": 4}
    for name, n in lengths.items():
        text = name in ("trial", "kind", "worker")
        array = group.create_array(
            name, shape=(n,), chunks=(256,), dtype="str" if text else "float64"
        )
        array[:] = np.array(["x"] * n, dtype=object) if text else np.arange(n, dtype=float)
    group.create_array("values", shape=(4, 0), chunks=(256, 16), dtype="float64")
    # a writer being created: a folder without zarr.json yet, and a group without tables
    (url / "zy-creating" / "metrics").mkdir(parents=True)
    zarr.open_group(url / "zx-empty", mode="w")
    frame = MetricsStore(str(url)).read()
    assert frame.loc[frame.writer == store.writer, "step"].tolist() == list(range(5))
    assert frame.loc[frame.writer == "zz-handmade", "step"].tolist() == [0, 1, 2]
    assert len(frame) == 8 and frame.step.dtype == np.int64


_CHILD = """
import json, sys
from hippo_dask.storage._metrics import MetricsStore
store = MetricsStore(sys.argv[1], json.loads(sys.argv[2]))
for line in sys.stdin:
    if line.strip() != "read":
        break
    frame = store.read()
    print(json.dumps({
        "rows": [[t, int(s), w] for t, s, w in zip(frame.trial, frame.step, frame.writer)],
        "columns": list(frame.columns),
        "acc": [None if a != a else a for a in frame.get("acc", [])],
    }), flush=True)
"""


class Child:
    """A reader in another process, reading when told to (stdin) and answering on stdout."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"reader process died:\n{err}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        _, err = self.proc.communicate("quit\n", timeout=30)
        assert self.proc.returncode == 0, err


@pytest.fixture(params=["local", "s3"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if request.param == "local":
        return str(tmp_path / "metrics.zarr"), {}
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/study/metrics.zarr", server.storage_options


def test_a_reader_in_another_process_sees_exactly_the_rows_appended(
    shared_url: tuple[str, dict[str, Any]],
) -> None:
    url, options = shared_url
    child = Child(url, options)
    try:
        first = child.read()  # nothing written yet: not even the root group
        assert first["rows"] == [] and first["columns"] == list(BASE_COLUMNS)
        one = MetricsStore(url, options)
        expected: list[list[Any]] = []
        for i, size in enumerate((1, 3, 260, 2)):
            start = len(expected)
            batch = [
                MetricRow("a", s, {"acc": [0.5, math.nan, math.inf][s % 3]}, 100.0 + s, "w")
                for s in range(start, start + size)
            ]
            one.append(batch)
            expected += [["a", s, one.writer] for s in range(start, start + size)]
            seen = child.read()
            assert seen["rows"] == expected, f"after batch {i}"
        assert seen["acc"][:3] == [0.5, None, math.inf]
        # a writer that appears after the child listed the store once
        two = MetricsStore(url, options)
        two.append([MetricRow("b", 0, {"top5": 1.0}, 0.0, "w2")])
        seen = child.read()
        assert seen["rows"] == [["b", 0, two.writer], *expected]
        assert seen["columns"] == [*BASE_COLUMNS, "acc", "top5"]
    finally:
        child.close()


_WRITER = """
import json, sys
from hippo_dask.storage._metrics import MetricRow, MetricsStore
store = MetricsStore(sys.argv[1], json.loads(sys.argv[2]))
print(store.writer, flush=True)
sys.stdin.readline()
for b in range(int(sys.argv[3])):
    store.append([
        MetricRow("t", 7 * b + i, {"acc": b, f"m{b % 20}": 1.0}, 7.0 * b + i, "w")
        for i in range(7)
    ])
"""


def test_reads_while_another_process_appends_see_whole_batches(
    shared_url: tuple[str, dict[str, Any]],
) -> None:
    url, options = shared_url
    batches = 40  # 280 rows: crosses a chunk boundary; 21 metric names: more than 16
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, json.dumps(options), str(batches)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert writer.stdin is not None and writer.stdout is not None
    writer_id = writer.stdout.readline().strip()  # imported and ready
    reader = MetricsStore(url, options)
    writer.stdin.write("go\n")
    writer.stdin.flush()
    partial = 0
    while True:
        done = writer.poll() is not None  # decided before reading: a read after it sees all
        frame = reader.read()
        n = len(frame)
        assert n % 7 == 0, f"a batch was read in part: {n} rows"
        assert frame.step.tolist() == list(range(n))
        if n:
            assert (frame.acc == frame.step // 7).all() and (frame.worker == "w").all()
            assert (frame.writer == writer_id).all()
            metrics = [c for c in frame.columns if c.startswith("m")]
            assert frame[metrics].notna().sum(axis=1).eq(1).all()  # no fill value leaked in
        partial += 0 < n < 7 * batches
        if done:
            break
    _, err = writer.communicate(timeout=30)
    assert writer.returncode == 0, err
    assert n == 7 * batches
    assert partial > 0  # the reads did overlap the appends


# ----------------------------------------------------------------------------- other stores


def test_s3_append_and_read(s3_server: Any, s3_bucket: str) -> None:
    url = f"{s3_bucket}/runs/metrics.zarr"
    store = MetricsStore(url, s3_server.storage_options)
    assert store.read().empty  # the bucket holds nothing yet
    store.append(rows("t", range(0, 10)))
    store.append(rows("t", range(10, 300), val_acc=0.5))
    store.append_stages([StageRecord("n", 0, 300, 1.0, 2.0, "w")])
    reader = MetricsStore(url, s3_server.storage_options)
    frame = reader.read()
    assert frame.step.tolist() == list(range(300))
    assert frame.val_acc.notna().sum() == 290
    assert reader.read_stages().node.tolist() == ["n"]
    store.append(rows("u", range(3)))
    assert len(reader.read()) == 303


def test_memory_protocol() -> None:
    url = f"memory://metrics-{uuid.uuid4().hex}/metrics.zarr"
    one, two = MetricsStore(url), MetricsStore(url)
    one.append(rows("t", range(4)))
    two.append_stages([StageRecord("n", 0, 4, 0.0, 1.0, "w")])
    assert keys(two.read()) == [("t", s) for s in range(4)]
    assert one.read_stages().writer.tolist() == [two.writer]


def test_file_url_is_the_local_store(tmp_path: Path) -> None:
    store = MetricsStore(f"file://{tmp_path}/metrics.zarr")
    store.append(rows("t", range(2)))
    assert (tmp_path / "metrics.zarr" / store.writer / "metrics" / "zarr.json").exists()
    assert len(MetricsStore(str(tmp_path / "metrics.zarr")).read()) == 2


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def dead_endpoint(s3_server: Any) -> Iterator[str]:
    """An http endpoint nobody listens on (s3_server only sets dummy AWS credentials)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def test_unreachable_storage_raises_storage_error_without_credentials(
    dead_endpoint: str,
) -> None:
    options = {
        "key": "AKIA-not-shown",
        "secret": "very-secret-value",
        "endpoint_url": dead_endpoint,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    store = MetricsStore("s3://bucket/metrics.zarr", options)
    for call in (
        lambda: store.append(rows("t", range(1))),
        store.read,
        lambda: store.append_stages([StageRecord("n", 0, 1, 0.0, 1.0, "w")]),
    ):
        with pytest.raises(StorageError) as info:
            call()
        message = str(info.value)
        assert "s3://bucket/metrics.zarr" in message and "Connect" in message
        assert "very-secret-value" not in message and "AKIA-not-shown" not in message
        assert isinstance(info.value, OSError) and info.value.__cause__ is not None


def test_credentials_in_the_url_are_not_shown() -> None:
    store = MetricsStore("memory://user:hunter2@host/metrics.zarr")
    assert "hunter2" not in repr(store)


def test_rows_and_records_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        MetricRow("t", 0, {"step": 1.0}, 0.0, "w")
    with pytest.raises(ValueError, match=">= 0"):
        MetricRow("t", -1, {}, 0.0, "w")
    with pytest.raises(TypeError):
        MetricRow("t", True, {}, 0.0, "w")
    with pytest.raises(TypeError):
        MetricRow("t", 0, {"acc": "high"}, 0.0, "w")  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="empty"):
        MetricRow("", 0, {}, 0.0, "w")
    with pytest.raises(ValueError, match="finite"):
        MetricRow("t", 0, {}, math.nan, "w")
    with pytest.raises(ValueError, match="before"):
        StageRecord("n", 10, 5, 0.0, 1.0, "w")
    numpy_values: Any = {"acc": np.float32(0.5)}
    row = MetricRow("t", np.int64(3), numpy_values, 1, "w")  # type: ignore[arg-type]
    assert type(row.step) is int and row.values == {"acc": 0.5} and row.wall_time == 1.0
    with pytest.raises(TypeError):
        row.values["acc"] = 1.0  # type: ignore[index]
    store = MetricsStore(str(tmp_path / "metrics.zarr"))
    with pytest.raises(TypeError):
        store.append([{"trial": "t"}])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.append_stages([row])  # type: ignore[list-item]
    store.append([])  # nothing to do, nothing written
    assert not (tmp_path / "metrics.zarr").exists()
    for bad in ("", "a/b", "../up", ".hidden", "x" * 201):
        with pytest.raises(ValueError, match="writer id"):
            MetricsStore(str(tmp_path / "metrics.zarr"), writer=bad)
    assert new_writer_id() < new_writer_id()
