"""The worker-lanes panel: a Gantt chart of stages per worker over time.

One lane per worker, one bar per stage from its recorded start to its end (the workers'
clocks, from the stage records of the metrics store), coloured by the root of the plan its node
hangs from (a family of fixed values). Gaps are idle workers; a chain of bars of one colour on
one lane is a critical path pinned to that worker.
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


def short_worker(address: str) -> str:
    """A worker address without its protocol: ``tcp://10.0.0.5:4001`` -> ``10.0.0.5:4001``."""
    return address.split("://", 1)[-1] or "(unnamed)"


class WorkerLanesView(DashboardComponent):
    """Stages per worker over time.

    Sources
    -------
    source
        One row per stage record: ``worker, left, right`` (ms since the epoch, for a datetime
        axis), ``node, steps, seconds, status, color``.
    """

    def __init__(self, reader: StudyReader, *, width: int | None = None) -> None:
        super().__init__(reader)
        from bokeh.models import ColumnDataSource, FactorRange, HoverTool
        from bokeh.plotting import figure

        self.source = ColumnDataSource(
            {k: [] for k in ("worker", "left", "right", "node", "steps", "seconds", "status",
                             "color")},
            name="worker-lanes",
        )
        sizing: dict[str, Any] = {"width": width} if width else {"sizing_mode": "stretch_width"}
        fig: Any = figure(y_range=FactorRange(factors=[]), x_axis_type="datetime", height=160,
                     tools="xpan,xwheel_zoom,box_zoom,reset,save", toolbar_location="above",
                     x_axis_label="time (worker clock)", name="worker-lanes-figure", **sizing)
        bars = fig.hbar(y="worker", left="left", right="right", height=0.7, source=self.source,
                        fill_color="color", line_color="white", line_width=0.5)
        fig.add_tools(HoverTool(renderers=[bars], tooltips=(
            f'<div style="font-family: {FONT}; font-size: 12px;">'
            "<b>node @node</b>: steps @steps<br>@seconds s on @worker<br>@status</div>"
        )))
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
            replace_data(self.source, {
                "worker": names,
                "left": (lanes["started"].astype(float) * 1e3).tolist(),
                "right": (lanes["finished"].astype(float) * 1e3).tolist(),
                "node": nodes,
                "steps": [f"{a} \u2192 {b}" for a, b in zip(lanes["start_step"], lanes["step"])],
                "seconds": [f"{d:.2f}" for d in (lanes["finished"] - lanes["started"])],
                "status": [str(s) for s in lanes["status"]],
                "color": [COLORS["failed"] if str(s) != "done"
                          else colour_of.get(roots.get(n, -1), COLORS["muted"])
                          for n, s in zip(nodes, lanes["status"])],
            })
        self.figure.y_range.factors = workers
        self.figure.height = max(150, 100 + LANE_PIXELS * len(workers))
        self.figure.title.text = self.headline(snapshot, len(workers))

    @staticmethod
    def headline(snapshot: StudySnapshot, workers: int) -> str:
        """``Worker lanes: 2 workers, 31 stages, busy 84% of 12.0 s``."""
        lanes = snapshot.lanes
        if lanes.empty:
            return "Worker lanes: no stage has finished yet"
        span = float(lanes["finished"].max() - lanes["started"].min())
        busy = float((lanes["finished"] - lanes["started"]).sum())
        share = busy / (span * workers) if span > 0 and workers else 1.0
        return (f"Worker lanes: {workers} worker{'s' if workers != 1 else ''}, {len(lanes)} "
                f"stages, busy {100 * share:.0f}% of {span:.1f} s")
