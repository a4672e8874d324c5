"""The stage tree panel: every plan node as a bar over its steps, the critical path on top.

Each node is drawn on its own row from its start step to the last step requested of it (step
on x), children below their parent, joined by an edge at the branch step. The solid part of a
bar is trained, the pale rest still to do; the colour is the node's status (running and queued
as the driver recorded them; see :mod:`hippo_dask.dashboard._snapshot`). The current
critical path (the longest chain of pending stages, which the scheduler runs first, on one
worker) glows blue behind the stages it consists of, with a thin line through them; small
ticks mark checkpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hippo_dask.dashboard._base import COLORS, FONT, DashboardComponent, replace_data, style_figure
from hippo_dask.dashboard._snapshot import STATUSES

if TYPE_CHECKING:
    from hippo_dask.dashboard._reader import StudyReader
    from hippo_dask.dashboard._snapshot import StudySnapshot

__all__ = ["StageTreeView"]

ROW_PIXELS = 18
"""Height of one node row."""

TOOLTIP = f"""
<div style="font-family: {FONT}; font-size: 12px; max-width: 420px;">
  <div style="font-weight: bold;">node @id (@label) &nbsp;<span style="color: @color;">&#9632;</span> @status</div>
  <div>steps @start &rarr; @extent (trained to @trained)</div>
  <div>@branch{{safe}}</div>
  <hr style="margin: 3px 0;">
  <div>@config{{safe}}</div>
  <hr style="margin: 3px 0;">
  <div>checkpoints: @checkpoints</div>
  <div>requests end at: @requests</div>
  <div>metrics @metrics</div>
  <div>@speed</div>
</div>
"""


def _format_metrics(step: int | None, metrics: dict[str, float] | None) -> str:
    if step is None or not metrics:
        return "none yet"
    values = ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items())
    return f"at step {step}: {values}"


class StageTreeView(DashboardComponent):
    """The plan's nodes laid out as a tree, coloured by status, with the critical path.

    Sources
    -------
    source
        One row per node: ``id, parent, start, extent, trained, row, label, status, color,
        config, branch, checkpoints, requests, metrics, speed``. ``config`` and ``branch`` are
        HTML built from escaped parts (the tooltip shows them ``{safe}``); the rest is text.
    edges
        One row per parent-child link: ``x0, y0, x1, y1, child, critical``.
    critical
        One row per stage of the current critical path: ``node, x0, x1, y, seconds``.
    checkpoints
        One row per checkpoint: ``x, y, node``.
    """

    def __init__(self, reader: StudyReader, *, width: int | None = None) -> None:
        super().__init__(reader)
        from bokeh.models import ColumnDataSource, FixedTicker, HoverTool
        from bokeh.models.annotations.legends import Legend, LegendItem
        from bokeh.plotting import figure

        self.source = ColumnDataSource(
            {
                k: []
                for k in (
                    "id",
                    "parent",
                    "start",
                    "extent",
                    "trained",
                    "row",
                    "label",
                    "status",
                    "color",
                    "config",
                    "branch",
                    "checkpoints",
                    "requests",
                    "metrics",
                    "speed",
                )
            },
            name="stage-tree-nodes",
        )
        self.edges = ColumnDataSource(
            {k: [] for k in ("x0", "y0", "x1", "y1", "child", "critical")},
            name="stage-tree-edges",
        )
        self.critical = ColumnDataSource(
            {k: [] for k in ("node", "x0", "x1", "y", "seconds")}, name="stage-tree-critical"
        )
        self.checkpoints = ColumnDataSource(
            {"x": [], "y": [], "node": []}, name="stage-tree-checkpoints"
        )
        sizing: dict[str, Any] = {"width": width} if width else {"sizing_mode": "stretch_width"}
        fig: Any = figure(
            height=240,
            x_axis_label="step",
            tools="xpan,xwheel_zoom,box_zoom,reset,save",
            toolbar_location="above",
            name="stage-tree",
            **sizing,
        )
        fig.y_range.flipped = True
        fig.ygrid.visible = False
        fig.yaxis.ticker = FixedTicker(ticks=[])
        fig.yaxis.major_label_text_font_size = "11px"
        fig.yaxis.axis_line_color = None
        fig.yaxis.major_tick_line_color = None
        critical_edges = ColumnDataSource(
            {k: [] for k in ("x0", "y0", "x1", "y1")}, name="stage-tree-critical-edges"
        )
        self._critical_edges = critical_edges
        # the critical path: a halo behind the bars and edges it runs along
        fig.segment(
            "x0",
            "y0",
            "x1",
            "y1",
            source=critical_edges,
            line_color=COLORS["halo"],
            line_width=8,
            line_cap="round",
        )
        fig.segment(
            "x0",
            "y",
            "x1",
            "y",
            source=self.critical,
            line_color=COLORS["halo"],
            line_width=ROW_PIXELS,
            line_cap="round",
        )
        fig.segment("x0", "y0", "x1", "y1", source=self.edges, line_color="#a0aec0", line_width=1.5)
        fig.hbar(
            y="row",
            left="start",
            right="extent",
            height=0.62,
            source=self.source,
            fill_color="white",
            line_color=None,
        )  # the halo must not show through
        whole = fig.hbar(
            y="row",
            left="start",
            right="extent",
            height=0.62,
            source=self.source,
            fill_color="color",
            fill_alpha=0.35,
            line_color="color",
            line_alpha=0.9,
        )
        fig.hbar(
            y="row",
            left="start",
            right="trained",
            height=0.62,
            source=self.source,
            fill_color="color",
            line_color=None,
        )
        fig.scatter(
            "x",
            "y",
            source=self.checkpoints,
            marker="dash",
            angle=1.5708,
            size=9,
            line_color="#2d3748",
            line_width=1.5,
            line_alpha=0.7,
        )
        fig.segment(
            "x0",
            "y",
            "x1",
            "y",
            source=self.critical,
            line_color=COLORS["critical"],
            line_width=1.5,
            line_alpha=0.8,
        )
        path = fig.line([float("nan")], [float("nan")], line_color=COLORS["halo"], line_width=9)
        # one legend entry per status, whether or not a node has it now
        self._legend_source = ColumnDataSource(
            {
                "x": [float("nan")] * len(STATUSES),
                "y": [float("nan")] * len(STATUSES),
                "status": list(STATUSES),
                "color": [COLORS[s] for s in STATUSES],
            }
        )
        swatches = fig.scatter(
            "x",
            "y",
            source=self._legend_source,
            marker="square",
            size=12,
            fill_color="color",
            line_color=None,
        )
        legend = Legend(
            items=[
                *[
                    LegendItem(label=status, renderers=[swatches], index=i)
                    for i, status in enumerate(STATUSES)
                ],
                LegendItem(label="critical path", renderers=[path]),
            ],
            orientation="horizontal",
            location="top_left",
            border_line_color=None,
            label_text_font=FONT,
            label_text_font_size="12px",
            label_text_color=COLORS["text"],
        )
        fig.add_layout(legend, "above")
        fig.add_tools(HoverTool(renderers=[whole], tooltips=TOOLTIP))
        style_figure(fig)
        self.figure = fig
        self.root = fig

    def _draw(self, snapshot: StudySnapshot) -> None:
        rows = {n.id: n.row for n in snapshot.nodes}
        nodes = snapshot.nodes
        replace_data(
            self.source,
            {
                "id": [n.id for n in nodes],
                "parent": [-1 if n.parent is None else n.parent for n in nodes],
                "start": [n.start for n in nodes],
                "extent": [max(n.extent, n.start) for n in nodes],
                "trained": [n.trained for n in nodes],
                "row": [n.row for n in nodes],
                "label": [n.label for n in nodes],
                "status": [n.status for n in nodes],
                "color": [COLORS[n.status] for n in nodes],
                "config": [n.config for n in nodes],
                "branch": [
                    f"branches off at step {n.start}: {n.branch_values}"
                    if n.branch_values
                    else "a root: trained from scratch"
                    for n in nodes
                ],
                "checkpoints": [", ".join(map(str, n.checkpoints)) or "none" for n in nodes],
                "requests": [", ".join(map(str, n.requests)) or "none" for n in nodes],
                "metrics": [_format_metrics(n.metrics_step, dict(n.metrics)) for n in nodes],
                "speed": [
                    f"{n.seconds_per_step * 1e3:.1f} ms per step"
                    if n.seconds_per_step is not None
                    else "not profiled yet"
                    for n in nodes
                ],
            },
        )
        on_path = {(a, b) for a, b, _ in snapshot.critical_edges()}
        links = [n for n in nodes if n.parent is not None]
        replace_data(
            self.edges,
            {
                "x0": [n.start for n in links],
                "y0": [rows[n.parent] for n in links],  # type: ignore[index]
                "x1": [n.start for n in links],
                "y1": [n.row for n in links],
                "child": [n.id for n in links],
                "critical": [(n.parent, n.id) in on_path for n in links],
            },
        )
        crossing = [n for n in links if (n.parent, n.id) in on_path]
        replace_data(
            self._critical_edges,
            {
                "x0": [n.start for n in crossing],
                "y0": [rows[n.parent] for n in crossing],  # type: ignore[index]
                "x1": [n.start for n in crossing],
                "y1": [n.row for n in crossing],
            },
        )
        replace_data(
            self.critical,
            {
                "node": [s.node for s in snapshot.critical],
                "x0": [s.start for s in snapshot.critical],
                "x1": [s.stop for s in snapshot.critical],
                "y": [rows[s.node] for s in snapshot.critical],
                "seconds": [s.seconds for s in snapshot.critical],
            },
        )
        marks = [(step, n.row, n.id) for n in nodes for step in n.checkpoints]
        replace_data(
            self.checkpoints,
            {
                "x": [m[0] for m in marks],
                "y": [m[1] for m in marks],
                "node": [m[2] for m in marks],
            },
        )
        self.figure.yaxis.ticker.ticks = [n.row for n in nodes]
        self.figure.yaxis.major_label_overrides = {n.row: n.label for n in nodes}
        self.figure.height = max(200, min(900, 110 + ROW_PIXELS * len(nodes)))
        self.figure.title.text = self.headline(snapshot)

    @staticmethod
    def headline(snapshot: StudySnapshot) -> str:
        """``Stage tree: 23 nodes (12 done, 2 running, ...); critical path: ...``."""
        counts = snapshot.status_counts()
        parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
        text = f"Stage tree: {snapshot.node_count} nodes" + (f" ({parts})" if parts else "")
        if snapshot.critical:
            steps = sum(s.stop - s.start for s in snapshot.critical)
            seconds = sum(s.seconds for s in snapshot.critical)
            count = len(snapshot.critical)
            text += (
                f"; critical path {count} stage{'s' if count != 1 else ''}, {steps} steps, "
                f"~{seconds:.3g} s"
            )
        else:
            text += "; nothing pending"
        if snapshot.estimated and counts["running"]:
            text += " (running estimated: the store has no submission records)"
        return text
