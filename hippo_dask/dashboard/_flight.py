"""Stage attempts from the metrics store's stage records: what ran, what runs, what waits.

The driver writes a ``"submitted"`` record when it hands a stage to a worker and one ending
record (``"done"``, ``"failed"``, ``"retried"``, ``"lost"``, ``"cancelled"``) when the stage
ends; see :class:`~hippo_dask.storage.StageRecord`. :func:`stage_attempts` pairs them into one
row per attempt. A worker runs the stages submitted to it one at a time, in submission order
(each waits for the one before it, a Dask dependency), so an attempt with no ending record is
``running`` when every attempt submitted to that worker before it ended, and ``queued``
otherwise. Stores written before these records hold only ``"done"`` records: each is an attempt
of its own, and nothing is known to run (:func:`has_submissions` is false).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from hippo_dask._constants import SUBMITTED

__all__ = ["QUEUED", "RUNNING", "STALE", "has_submissions", "stage_attempts"]

RUNNING = "running"
"""An attempt in flight whose worker runs it now (all submitted there before it ended)."""
QUEUED = "queued"
"""An attempt in flight that waits on its worker behind another."""
STALE = "stale"
"""An attempt without an ending record whose writer went quiet (its driver was killed)."""

_STAGE = ["writer", "worker", "node", "start_step", "step"]
COLUMNS = [*_STAGE, "submitted", "started", "finished", "status", "error"]
"""Columns of :func:`stage_attempts`' frame."""


def has_submissions(stages: pd.DataFrame) -> bool:
    """Whether the records say when stages were submitted (a writer of this version wrote them)."""
    return bool(not stages.empty and (stages["status"] == SUBMITTED).any())


def stage_attempts(stages: pd.DataFrame, *, now: float, active: Collection[str]) -> pd.DataFrame:
    """One row per stage attempt, from every stage record (``read_stages(status=None)``).

    Parameters
    ----------
    stages
        Stage records, columns :data:`~hippo_dask.storage._records.STAGE_COLUMNS` (``error``
        may be missing).
    now
        Unix seconds: where the bar of a running attempt ends.
    active
        Writers whose open attempts are in flight; those of any other writer are ``stale``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`. ``submitted`` is when the driver submitted the attempt (NaN
        for records of older writers); ``started`` to ``finished`` is its bar in the worker's
        lane: the worker's times where it reported them, else from when the worker was free
        for it (its submission, or the end of the attempt before it there) to its end, or to
        ``now`` while it runs. ``status`` is the ending record's, or ``running``, ``queued`` or
        ``stale`` for open attempts. Sorted by ``started``, then ``submitted``.
    """
    frame = stages.copy()
    if "error" not in frame.columns:
        frame["error"] = ""
    if frame.empty:
        return pd.DataFrame({c: pd.Series([], dtype=_dtype(c)) for c in COLUMNS})
    submitted = frame[frame["status"] == SUBMITTED].sort_values("started", kind="stable")
    ended = frame[frame["status"] != SUBMITTED].sort_values("finished", kind="stable")
    # the n-th submission of a stage to a worker ends with the n-th ending record of it: the
    # driver submits a stage again only after the attempt before it ended
    submitted = submitted.assign(attempt=submitted.groupby(_STAGE, sort=False).cumcount())
    ended = ended.assign(attempt=ended.groupby(_STAGE, sort=False).cumcount())
    pairs = submitted[[*_STAGE, "attempt", "started"]].rename(columns={"started": "submitted"})
    out = pairs.merge(
        ended[[*_STAGE, "attempt", "started", "finished", "status", "error"]],
        on=[*_STAGE, "attempt"],
        how="outer",
        sort=False,
    )
    out["status"] = out["status"].fillna(SUBMITTED).astype(object)
    out["error"] = out["error"].fillna("").astype(object)
    out = out.drop(columns="attempt")
    _place(out, now, set(active))
    return out.sort_values(["started", "submitted"], kind="stable", ignore_index=True)[COLUMNS]


def _place(frame: pd.DataFrame, now: float, active: set[str]) -> None:
    """Decide open attempts (running, queued, stale) and the bars' starts, in place."""
    is_open = (frame["status"] == SUBMITTED).to_numpy()
    live = frame["writer"].isin(active).to_numpy()
    frame.loc[is_open & ~live, "status"] = STALE
    status = frame["status"].to_numpy(dtype=object).copy()
    started = frame["started"].to_numpy(dtype=np.float64).copy()
    finished = frame["finished"].to_numpy(dtype=np.float64).copy()
    submitted = frame["submitted"].to_numpy(dtype=np.float64)
    heads: dict[str, list[tuple[float, int]]] = {}  # worker -> (submitted, row) of lane heads
    known = frame.index[~np.isnan(submitted)]
    for (_, worker), rows in (
        frame.loc[known].groupby(["writer", "worker"], sort=False).groups.items()
    ):
        order = np.asarray(rows)[np.argsort(submitted[rows], kind="stable")]
        ends = finished[order]
        free = np.fmax(submitted[order], np.concatenate(([np.nan], np.fmax.accumulate(ends)[:-1])))
        for position, row in enumerate(order):
            if np.isnan(started[row]):  # a withdrawn one never started: no width at its end
                started[row] = np.fmin(free[position], finished[row])
            if status[row] == SUBMITTED:  # the first open one of this writer on this worker
                heads.setdefault(str(worker), []).append((submitted[row], row))
                break
    for worker_heads in heads.values():
        # one stage at a time per worker: of several drivers' heads, the first submitted runs
        _, row = min(worker_heads)
        status[row] = RUNNING
        finished[row] = max(now, started[row])
    status[status == SUBMITTED] = QUEUED
    frame["status"] = status
    frame["started"] = started
    frame["finished"] = finished


def _dtype(column: str) -> object:
    if column in ("start_step", "step"):
        return np.int64
    if column in ("submitted", "started", "finished"):
        return np.float64
    return "str"
