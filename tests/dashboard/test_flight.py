"""Pairing stage records into attempts: running, queued, stale, and the bars' extents."""

from __future__ import annotations

import math

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from hippo_dask.dashboard._flight import has_submissions, stage_attempts
from hippo_dask.storage._records import STAGE_COLUMNS

NAN = math.nan


def records(*rows: tuple[str, str, int, int, float, float, str, str]) -> pd.DataFrame:
    """Stage records ``(writer, node, start, stop, started, finished, worker, status)``."""
    data = [
        {
            "writer": w,
            "node": n,
            "start_step": a,
            "step": b,
            "started": t0,
            "finished": t1,
            "worker": k,
            "status": s,
            "error": "ValueError" if s == "failed" else "",
        }
        for w, n, a, b, t0, t1, k, s in rows
    ]
    return pd.DataFrame(data, columns=list(STAGE_COLUMNS))


def view(frame: pd.DataFrame) -> list[tuple[str, str, float, float]]:
    return [(str(r.node), str(r.status), r.started, r.finished) for r in frame.itertuples()]


def same(
    got: list[tuple[str, str, float, float]], want: list[tuple[str, str, float, float]]
) -> bool:
    """Equal, NaN equal to NaN."""
    return len(got) == len(want) and all(
        g[:2] == w[:2]
        and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(g[2:], w[2:]))
        for g, w in zip(got, want)
    )


def test_a_worker_runs_its_first_open_stage_and_queues_the_rest() -> None:
    frame = records(
        ("w", "a", 0, 10, 100.0, NAN, "x", "submitted"),
        ("w", "b", 10, 20, 100.5, NAN, "x", "submitted"),
        ("w", "c", 0, 10, 101.0, NAN, "x", "submitted"),
        ("w", "a", 0, 10, 100.2, 104.0, "x", "done"),
    )
    assert has_submissions(frame)
    out = stage_attempts(frame, now=110.0, active={"w"})
    # b runs from the end of a (its worker was busy until then) up to now; c waits behind it
    assert same(
        view(out),
        [("a", "done", 100.2, 104.0), ("b", "running", 104.0, 110.0), ("c", "queued", NAN, NAN)],
    )
    assert out.loc[out["node"] == "b", "submitted"].tolist() == [100.5]


def test_records_of_older_writers_are_finished_stages_as_they_are() -> None:
    frame = records(
        ("old", "a", 0, 10, 1.0, 5.0, "x", "done"), ("old", "b", 0, 10, 2.0, 3.0, "y", "done")
    )
    assert not has_submissions(frame)
    out = stage_attempts(frame, now=100.0, active={"old"})
    assert view(out) == [("a", "done", 1.0, 5.0), ("b", "done", 2.0, 3.0)]
    assert out["submitted"].isna().all()
    assert stage_attempts(frame.iloc[:0], now=1.0, active=()).empty


def test_a_stage_planned_again_on_the_same_worker_is_a_second_attempt() -> None:
    frame = records(
        ("w", "a", 0, 10, 100.0, NAN, "x", "submitted"),
        ("w", "a", 0, 10, 100.1, 101.0, "x", "retried"),
        ("w", "a", 0, 10, 102.0, NAN, "x", "submitted"),
    )
    out = stage_attempts(frame, now=105.0, active={"w"})
    assert view(out) == [("a", "retried", 100.1, 101.0), ("a", "running", 102.0, 105.0)]


def test_ends_without_a_worker_report_start_when_their_worker_was_free() -> None:
    frame = records(
        ("w", "a", 0, 10, 100.0, NAN, "x", "submitted"),
        ("w", "b", 0, 10, 100.5, NAN, "x", "submitted"),
        ("w", "a", 0, 10, 100.1, 103.0, "x", "done"),
        ("w", "b", 0, 10, NAN, 106.0, "x", "lost"),
        ("w", "c", 0, 10, 105.0, NAN, "x", "submitted"),
        ("w", "c", 0, 10, NAN, 106.0, "x", "lost"),
    )
    out = stage_attempts(frame, now=120.0, active={"w"})
    # b ran from a's end until its worker was lost; c, queued behind b, never started
    assert view(out) == [
        ("a", "done", 100.1, 103.0),
        ("b", "lost", 103.0, 106.0),
        ("c", "lost", 106.0, 106.0),
    ]


def test_open_stages_of_a_silent_writer_are_stale_and_workers_run_one_stage() -> None:
    frame = records(
        ("gone", "a", 0, 10, 100.0, NAN, "x", "submitted"),
        ("one", "b", 0, 10, 101.0, NAN, "x", "submitted"),
        ("two", "c", 0, 10, 102.0, NAN, "x", "submitted"),
    )
    out = stage_attempts(frame, now=110.0, active={"one", "two"})
    got = {str(r.node): str(r.status) for r in out.itertuples()}
    # two drivers queue on worker x: the first submitted runs, the other waits for the slot
    assert got == {"a": "stale", "b": "running", "c": "queued"}


def test_a_stage_taken_back_before_it_started_has_no_width_where_it_ended() -> None:
    # b was queued behind a on x and taken back at 103 (no start known) while a ran until 108:
    # its bar ends where it was cancelled and starts there, not at a's end after it.
    frame = records(
        ("w", "a", 0, 10, 100.0, NAN, "x", "submitted"),
        ("w", "b", 10, 20, 100.5, NAN, "x", "submitted"),
        ("w", "b", 10, 20, NAN, 103.0, "x", "cancelled"),
        ("w", "a", 0, 10, 100.2, 108.0, "x", "done"),
    )
    out = stage_attempts(frame, now=110.0, active={"w"})
    assert same(view(out), [("a", "done", 100.2, 108.0), ("b", "cancelled", 103.0, 103.0)])
