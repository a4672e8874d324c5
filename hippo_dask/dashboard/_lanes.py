"""The worker-lanes panel: a Gantt chart of stages per worker over time.

One lane per worker, one bar per stage from its recorded start to its end (the workers'
clocks, from the stage records of the metrics store), coloured by the root of the plan its node
hangs from (a family of fixed values). Gaps are idle workers; a chain of bars of one colour on
one lane is a critical path pinned to that worker. A stage running now is drawn pale and
hatched up to the time the snapshot was taken; failed attempts are red, attempts lost with
their worker or cancelled are grey. Stages queued behind it on the worker are not drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hippo_dask.dashboard._base import (
    COLORS,
    FONT,
    PALETTE,
    DashboardComponent,
    replace_data,
    style_figure,
)

if TYPE_CHECKING:
    from hippo_dask.dashboard._reader import StudyReader
    from hippo_dask.dashboard._snapshot import StudySnapshot

__all__ = ["WorkerLanesView", "short_worker"]

LANE_PIXELS = 34

_COLUMNS = (
    "worker",
    "left",
    "right",
    "node",
    "steps",
    "seconds",
    "status",
    "state",
    "color",
    "alpha",
    "hatch",
    "outline",
)

_ORDER = ("running", "failed", "retried", "lost", "cancelled")
"""Statuses the headline counts besides finished stages, in its order."""


def _look(status: str, colour: str) -> tuple[str, float, str, str]:
    """Fill colour, fill alpha, hatch pattern and outline of a bar of ``status``."""
    if status == "running":
        return colour, 0.3, "/", colour
    if status in ("failed", "retried"):
        return COLORS["failed"], 1.0, " ", "white"
    if status in ("lost", "cancelled"):
        return COLORS["muted"], 0.45, " ", "white"
    return colour, 1.0, " ", "white"


def short_worker(address: str) -> str:
    """A worker address without its protocol: ``tcp://10.0.0.5:4001`` -> ``10.0.0.5:4001``."""
    return address.split("://", 1)[-1] or "(unnamed)"


class WorkerLanesView(DashboardComponent):
    """Stages per worker over time.

    Sources
    -------
    source
        One row per bar: ``worker, left, right`` (ms since the epoch, for a datetime axis),
        ``node, steps, seconds, status`` (``done``, ``running``, ``failed``, ``retried``,
        ``lost``, ``cancelled``), ``state`` (the status as the hover shows it), ``color,
        alpha, hatch, outline``.
    """

    def __init__(self, reader: StudyReader, *, width: int | None = None) -> None:
        super().__init__(reader)
        from bokeh.models import ColumnDataSource, FactorRange, HoverTool
        from bokeh.plotting import figure

        self.source = ColumnDataSource(
            {k: [] for k in _COLUMNS},
            name="worker-lanes",
        )
        sizing: dict[str, Any] = {"width": width} if width else {"sizing_mode": "stretch_width"}
        fig: Any = figure(
            y_range=FactorRange(factors=[]),
            x_axis_type="datetime",
            height=160,
            tools="xpan,xwheel_zoom,box_zoom,reset,save",
            toolbar_location="above",
            x_axis_label="time (worker clock)",
            name="worker-lanes-figure",
            **sizing,
        )
        bars = fig.hbar(
            y="worker",
            left="left",
            right="right",
            height=0.7,
            source=self.source,
            fill_color="color",
            fill_alpha="alpha",
            hatch_pattern="hatch",
            hatch_color="color",
            hatch_alpha=0.8,
            line_color="outline",
            line_width=1.0,
        )
        fig.add_tools(
            HoverTool(
                renderers=[bars],
                tooltips=(
                    f'<div style="font-family: {FONT}; font-size: 12px;">'
                    "<b>node @node</b>: steps @steps<br>@seconds s on @worker<br>@state</div>"
                ),
            )
        )
        fig.ygrid.visible = False
        style_figure(fig)
        self.figure = fig
        self.root = fig

    def _draw(self, snapshot: StudySnapshot) -> None:
        lanes = snapshot.lanes
        roots = {n.id: n.root for n in snapshot.nodes}
        order = sorted({n.root for n in snapshot.nodes})
        colour_of = {root: PALETTE[i % len(PALETTE)] for i, root in enumerate(order)}
        if lanes.empty:
            workers: list[str] = []
            replace_data(self.source, {k: [] for k in self.source.data})
        else:
            names = [short_worker(str(w)) for w in lanes["worker"]]
            workers = sorted(set(names))
            nodes = [int(n) for n in lanes["node"]]
            statuses = [str(s) for s in lanes["status"]]
            looks = [
                _look(s, colour_of.get(roots.get(n, -1), COLORS["muted"]))
                for n, s in zip(nodes, statuses)
            ]
            errors = lanes["error"] if "error" in lanes.columns else [""] * len(lanes)
            replace_data(
                self.source,
                {
                    "worker": names,
                    "left": (lanes["started"].astype(float) * 1e3).tolist(),
                    "right": (lanes["finished"].astype(float) * 1e3).tolist(),
                    "node": nodes,
                    "steps": [
                        f"{a} \u2192 {b}" for a, b in zip(lanes["start_step"], lanes["step"])
                    ],
                    "seconds": [f"{d:.2f}" for d in (lanes["finished"] - lanes["started"])],
                    "status": statuses,
                    "state": [
                        f"{s} ({e})" if e else ("running now" if s == "running" else s)
                        for s, e in zip(statuses, errors)
                    ],
                    "color": [look[0] for look in looks],
                    "alpha": [look[1] for look in looks],
                    "hatch": [look[2] for look in looks],
                    "outline": [look[3] for look in looks],
                },
            )
        self.figure.y_range.factors = workers
        self.figure.height = max(150, 100 + LANE_PIXELS * len(workers))
        self.figure.title.text = self.headline(snapshot, len(workers))

    @staticmethod
    def headline(snapshot: StudySnapshot, workers: int) -> str:
        """``Worker lanes: 2 workers, 31 stages, 2 running, busy 84% of 12.0 s``.

        Stages are the finished ones; the others are counted by status; busy time includes
        the running stages' time so far.
        """
        lanes = snapshot.lanes
        if lanes.empty:
            return "Worker lanes: no stage has run yet"
        counts = lanes["status"].astype(str).value_counts()
        done = int(counts.get("done", 0))
        others = "".join(f", {int(counts[s])} {s}" for s in _ORDER if counts.get(s, 0))
        span = float(lanes["finished"].max() - lanes["started"].min())
        busy = float((lanes["finished"] - lanes["started"]).sum())
        share = busy / (span * workers) if span > 0 and workers else 1.0
        return (
            f"Worker lanes: {workers} worker{'s' if workers != 1 else ''}, {done} "
            f"stage{'s' if done != 1 else ''}{others}, busy {100 * share:.0f}% of "
            f"{span:.1f} s"
        )
