"""The learning-curves panel: every trial's metric against the step, shared prefixes once.

Values come from the zarr metrics store (what the workers measured, at every requested step
and every ``eval_every`` steps). A line per plan node, starting at its parent's value at the
branch step, so a trial's curve is the chain of lines along its path and a prefix shared by
ten trials is one line, not ten on top of each other. The best trial's path is drawn over the
rest. A selector picks the metric and whether higher or lower is better.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from hippo_dask.dashboard._base import COLORS, FONT, DashboardComponent, replace_data, style_figure

if TYPE_CHECKING:
    from hippo_dask.dashboard._reader import StudyReader
    from hippo_dask.dashboard._snapshot import StudySnapshot

__all__ = ["CurvesView", "default_metric", "default_mode"]

_LOWER_IS_BETTER = ("loss", "err", "mse", "mae", "rmse", "perplexity", "regret", "time")
_NOT_A_SCORE = ("step", "steps", "epoch", "epochs", "iteration")


def default_mode(metric: str) -> str:
    """``"min"`` for metrics that read as costs (loss, error, ...), else ``"max"``."""
    name = metric.lower()
    return "min" if any(word in name for word in _LOWER_IS_BETTER) else "max"


def default_metric(names: tuple[str, ...]) -> str | None:
    """The metric to show first: the first that is not a step counter."""
    for name in names:
        if name.lower() not in _NOT_A_SCORE:
            return name
    return names[0] if names else None


class CurvesView(DashboardComponent):
    """Learning curves of every trial, from the metrics store, with the best trial on top.

    Sources
    -------
    source
        One line per node: ``xs, ys, node, config`` (``config``: HTML of escaped parts).
    best_source
        The best trial's path: ``xs, ys, node``; ``best_point`` its final value.

    Parameters
    ----------
    reader
        The study.
    metric, mode
        What to show first; by default the first metric that is not a step count, and
        ``"min"`` for names such as ``loss`` or ``error``.
    """

    def __init__(
        self,
        reader: StudyReader,
        *,
        metric: str | None = None,
        mode: str | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__(reader)
        from bokeh.layouts import column, row
        from bokeh.models import ColumnDataSource, HoverTool
        from bokeh.models.widgets.groups import RadioButtonGroup
        from bokeh.models.widgets.inputs import Select
        from bokeh.plotting import figure

        if mode is not None and mode not in ("max", "min"):
            raise ValueError(f"CurvesView: `mode` must be 'max' or 'min', got {mode!r}")
        self.metric = metric
        self.mode = mode
        self._chosen_mode = mode is not None
        self.source = ColumnDataSource(
            {"xs": [], "ys": [], "node": [], "config": []}, name="curves"
        )
        self.best_source = ColumnDataSource({"xs": [], "ys": [], "node": []}, name="curves-best")
        self.best_point = ColumnDataSource(
            {"x": [], "y": [], "label": []}, name="curves-best-point"
        )
        sizing: dict[str, Any] = {"width": width} if width else {"sizing_mode": "stretch_width"}
        fig: Any = figure(
            height=330,
            x_axis_label="step",
            tools="pan,wheel_zoom,box_zoom,reset,save",
            toolbar_location="above",
            name="curves-figure",
            **sizing,
        )
        lines = fig.multi_line(
            "xs",
            "ys",
            source=self.source,
            line_color=COLORS["curve"],
            line_alpha=0.45,
            line_width=1.6,
            hover_line_color=COLORS["critical"],
            hover_line_alpha=1.0,
            hover_line_width=3,
        )
        fig.multi_line(
            "xs",
            "ys",
            source=self.best_source,
            line_color=COLORS["best"],
            line_width=3.2,
            legend_label="best trial",
        )
        fig.scatter(
            "x",
            "y",
            source=self.best_point,
            size=9,
            fill_color=COLORS["best"],
            line_color="white",
            line_width=1.5,
        )
        fig.text(
            "x",
            "y",
            text="label",
            source=self.best_point,
            x_offset=-10,
            y_offset=4,
            text_align="right",
            text_baseline="top",
            text_font_size="11px",
            text_color=COLORS["best"],
            text_font={"value": FONT},
        )
        fig.legend.location = "bottom_right"
        fig.legend.border_line_color = None
        fig.legend.background_fill_alpha = 0.7
        fig.legend.label_text_font = FONT
        fig.legend.label_text_font_size = "12px"
        fig.add_tools(
            HoverTool(
                renderers=[lines],
                tooltips=(
                    f'<div style="font-family: {FONT}; font-size: 12px;">'
                    "<b>node @node</b><br>@config{safe}</div>"
                ),
                line_policy="nearest",
            )
        )
        style_figure(fig)
        self.figure = fig
        self.select: Any = Select(
            title="metric", options=[], value="", width=180, name="curves-metric"
        )
        self.mode_select = RadioButtonGroup(
            labels=["higher is better", "lower is better"], active=0, name="curves-mode"
        )
        self.select.on_change("value", self._on_metric)
        self.mode_select.on_change("active", self._on_mode)
        self.mode_select.align = "end"
        self.root = column(
            row(self.select, self.mode_select),
            fig,
            sizing_mode="stretch_width" if not width else None,
        )
        self._last: StudySnapshot | None = None

    def _on_metric(self, attr: str, old: Any, new: Any) -> None:
        if new and new != self.metric:
            self.metric = str(new)
            if not self._chosen_mode:
                self.mode = default_mode(self.metric)
            if self._last is not None:
                self._draw(self._last)

    def _on_mode(self, attr: str, old: Any, new: Any) -> None:
        mode = "max" if new == 0 else "min"
        if mode != self.mode:
            self.mode, self._chosen_mode = mode, True
            if self._last is not None:
                self._draw(self._last)

    def _draw(self, snapshot: StudySnapshot) -> None:
        self._last = snapshot
        names = list(snapshot.metric_names)
        if self.metric is None or (self.metric not in names and names):
            self.metric = default_metric(snapshot.metric_names)
        metric = self.metric
        if self.mode is None or not self._chosen_mode:
            self.mode = default_mode(metric) if metric else "max"
        if self.select.options != names:
            self.select.options = names
        if metric is not None and self.select.value != metric:
            self.select.value = metric
        active = 0 if self.mode == "max" else 1
        if self.mode_select.active != active:
            self.mode_select.active = active
        curves = snapshot.curves(metric) if metric else []
        config = {n.id: n.config for n in snapshot.nodes}
        replace_data(
            self.source,
            {
                "xs": [list(c.steps) for c in curves],
                "ys": [list(c.values) for c in curves],
                "node": [c.node for c in curves],
                "config": [config.get(c.node, "") for c in curves],
            },
        )
        best = snapshot.best(metric, self.mode) if metric else None
        on_path = set(best.path) if best is not None else set()
        chosen = [c for c in curves if c.node in on_path]
        if best is not None:  # its own path only: cut the last node's line at the trial's end
            chosen = [
                type(c)(c.node, *_until(c, best.steps)) if c.node == best.node else c
                for c in chosen
            ]
        replace_data(
            self.best_source,
            {
                "xs": [list(c.steps) for c in chosen],
                "ys": [list(c.values) for c in chosen],
                "node": [c.node for c in chosen],
            },
        )
        if best is not None and best.metrics is not None and metric is not None:
            value = best.metrics[metric]
            replace_data(
                self.best_point,
                {
                    "x": [best.steps],
                    "y": [value],
                    "label": [f"best {value:.4g} at step {best.steps}"],
                },
            )
        else:
            replace_data(self.best_point, {"x": [], "y": [], "label": []})
        points = sum(len(c.steps) for c in curves)
        shown = sum(1 for t in snapshot.trials if t.metrics is not None)
        title = f"Learning curves: {metric or 'no metrics yet'}"
        if metric:
            title += (
                f", {shown} of {len(snapshot.trials)} trials finished, {len(curves)} lines "
                f"({points} points)"
            )
            if best is not None and best.metrics is not None:
                direction = "highest" if self.mode == "max" else "lowest"
                title += f"; best ({direction}) {best.metrics[metric]:.4g}"
        self.figure.title.text = title
        self.figure.yaxis.axis_label = metric or ""


def _until(curve: Any, steps: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The points of ``curve`` up to ``steps``."""
    keep = [i for i, s in enumerate(curve.steps) if s <= steps]
    values = tuple(curve.values[i] for i in keep)
    return tuple(curve.steps[i] for i in keep), tuple(
        v if math.isfinite(v) else math.nan for v in values
    )
