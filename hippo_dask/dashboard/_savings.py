"""The savings panel: what sharing saved so far, as figures and two small bar charts.

Steps: requested (what a trial-by-trial run trains: each trial's longest request) against
unique (after merging shared prefixes) and executed (what the workers trained, from the stage
records). Worker time: the recorded seconds of every stage against a trial-by-trial run of the
same requests at the same all-inclusive seconds per step (the figures of ``result.stats``; see
:mod:`hippo_dask.plan._savings` for the formula). The merge rate is Hippo's *p*: requested /
unique steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hippo_dask.dashboard._base import COLORS, FONT, DashboardComponent, replace_data, style_figure

if TYPE_CHECKING:
    from hippo_dask.dashboard._reader import StudyReader
    from hippo_dask.dashboard._snapshot import Savings, StudySnapshot

__all__ = ["SavingsView", "format_seconds"]

_BARS = ("trial-by-trial", "unique", "executed")


def format_seconds(seconds: float | None) -> str:
    """``"12.3 s"``, ``"4.5 min"``, ``"2.1 h"``; ``"n/a"`` for ``None``."""
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _figure(label: str, value: str, key: str, note: str = "") -> str:
    return (
        '<div style="padding: 6px 14px 6px 0; min-width: 118px;">'
        f'<div style="font-size: 11px; color: {COLORS["muted"]}; text-transform: uppercase; '
        f'letter-spacing: .04em;">{label}</div>'
        f'<div style="font-size: 22px; font-weight: 600; color: {COLORS["text"]};">'
        f'<span data-hippo="{key}">{value}</span></div>'
        f'<div style="font-size: 11px; color: {COLORS["muted"]};">{note}</div></div>'
    )


def figures_html(savings: Savings) -> str:
    """The savings as labelled figures, each value in a ``<span data-hippo="...">``."""
    saved = savings.saved_fraction
    cards = [
        _figure(
            "merge rate",
            f"{savings.merge_rate:.2f}&times;",
            "merge-rate",
            "requested / unique steps",
        ),
        _figure("trials", f"{savings.trials_done} / {savings.trials}", "trials", "finished"),
        _figure(
            "steps requested", f"{savings.requested_steps:,}", "requested-steps", "trial by trial"
        ),
        _figure("steps unique", f"{savings.unique_steps:,}", "unique-steps", "after merging"),
        _figure(
            "steps executed",
            f"{savings.executed_steps:,}",
            "executed-steps",
            f"in {savings.stages:,} stages",
        ),
        _figure(
            "worker time",
            format_seconds(savings.worker_seconds),
            "worker-seconds",
            f"vs ~{format_seconds(savings.trial_by_trial_seconds)} trial by trial",
        ),
        _figure(
            "saved",
            "n/a" if saved is None else f"{100 * saved:.0f}%",
            "saved",
            "of the worker time",
        ),
    ]
    return (
        f'<div style="display: flex; flex-wrap: wrap; font-family: {FONT};">'
        + "".join(cards)
        + "</div>"
    )


class SavingsView(DashboardComponent):
    """Figures and bars of what sharing saved.

    Sources
    -------
    source
        The step bars: ``kind`` (trial-by-trial, unique, executed), ``steps``, ``color``,
        ``label``.
    time_source
        The worker-time bars: ``kind`` (trial-by-trial, used), ``seconds``, ``color``, ``label``.
    figures
        The ``Div`` with the figures; ``figures.text`` is what the page shows.
    """

    def __init__(self, reader: StudyReader, *, width: int | None = None) -> None:
        super().__init__(reader)
        from bokeh.layouts import column, row
        from bokeh.models import ColumnDataSource
        from bokeh.models.widgets.markups import Div
        from bokeh.plotting import figure

        self.figures = Div(text="", name="savings-figures", sizing_mode="stretch_width")
        self.title = Div(text="", name="savings-title")
        self.source = ColumnDataSource(
            {
                "kind": list(_BARS),
                "steps": [0, 0, 0],
                "color": [COLORS["pending"], COLORS["done"], COLORS["critical"]],
                "label": ["", "", ""],
            },
            name="savings-steps",
        )
        self.time_source = ColumnDataSource(
            {
                "kind": ["trial-by-trial", "used"],
                "seconds": [0.0, 0.0],
                "color": [COLORS["pending"], COLORS["critical"]],
                "label": ["", ""],
            },
            name="savings-time",
        )
        self.steps_figure = self._bars(figure, list(_BARS), self.source, "steps", "steps")
        self.time_figure = self._bars(
            figure, ["trial-by-trial", "used"], self.time_source, "seconds", "worker-seconds"
        )
        charts = row(self.steps_figure, self.time_figure)
        self.root = column(self.title, self.figures, charts, width=width or 460)

    @staticmethod
    def _bars(figure: Any, kinds: list[str], source: Any, field: str, label: str) -> Any:
        from bokeh.models import Range1d

        fig: Any = figure(
            y_range=list(reversed(kinds)),
            x_range=Range1d(start=0, end=1),
            height=150,
            width=225,
            tools="",
            toolbar_location=None,
            x_axis_label=label,
        )
        fig.hbar(
            y="kind", right=field, height=0.62, source=source, fill_color="color", line_color=None
        )
        fig.text(
            x=field,
            y="kind",
            text="label",
            source=source,
            x_offset=4,
            y_offset=0,
            text_baseline="middle",
            text_font_size="11px",
            text_color=COLORS["text"],
            text_font={"value": FONT},
        )
        fig.ygrid.visible = False
        fig.xaxis.ticker.desired_num_ticks = 3
        style_figure(fig)
        return fig

    def _draw(self, snapshot: StudySnapshot) -> None:
        s = snapshot.savings
        self.figures.text = figures_html(s)
        self.title.text = (
            f'<div style="font-family: {FONT}; font-size: 13px; font-weight: bold; '
            f'color: {COLORS["text"]};">Savings so far</div>'
        )
        steps = [s.requested_steps, s.unique_steps, s.executed_steps]
        replace_data(
            self.source,
            {
                "kind": list(_BARS),
                "steps": steps,
                "color": [COLORS["pending"], COLORS["done"], COLORS["critical"]],
                "label": [f"{v:,}" for v in steps],
            },
        )
        self.steps_figure.x_range.end = 1.4 * max(1, *steps)
        by_trial = s.trial_by_trial_seconds
        seconds = [by_trial if by_trial is not None else 0.0, s.worker_seconds]
        replace_data(
            self.time_source,
            {
                "kind": ["trial-by-trial", "used"],
                "seconds": seconds,
                "color": [COLORS["pending"], COLORS["critical"]],
                "label": [
                    ("~" + format_seconds(by_trial)) if by_trial is not None else "n/a",
                    format_seconds(s.worker_seconds),
                ],
            },
        )
        self.time_figure.x_range.end = 1.55 * max(1e-3, *seconds)
