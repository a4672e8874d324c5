"""What every dashboard panel is: a data source, a Bokeh root, and ``update()``.

The pattern is distributed's dashboard components: ``source`` is a ``ColumnDataSource`` the
glyphs draw from, ``root`` the Bokeh model to put in a layout, and ``update()`` rewrites
``source.data`` from the newest :class:`~hippo_dask.dashboard.StudySnapshot`. Tests call
``update()`` and read ``source.data``; the server calls it from a periodic callback.

Every string a user or a storage record controls (study, metric and hyper-parameter names and
values, error texts, worker names) reaches the page in one of three ways, and only the first
interprets HTML:

- HTML sinks: a ``Div``'s ``text``, a tooltip field marked ``{safe}``, ``_repr_html_``. What
  goes there is built from :func:`escape`-d parts only.
- Tooltip fields without ``{safe}`` (``@label``): BokehJS escapes them itself.
- Canvas text (titles, axis and tick labels, legends, glyph text) and widget labels: drawn as
  text, never parsed.
"""

from __future__ import annotations

import html
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hippo_dask.dashboard._reader import StudyReader
    from hippo_dask.dashboard._snapshot import StudySnapshot

__all__ = ["COLORS", "PALETTE", "DashboardComponent", "escape", "replace_data"]

logger = logging.getLogger(__name__)

COLORS = {
    "done": "#3f9e6e",
    "running": "#f0a030",
    "queued": "#f5d59a",
    "pending": "#c3cbd3",
    "stopped": "#8f7ac4",
    "failed": "#d1495b",
    "critical": "#1f4e9c",
    "halo": "#8fb8f0",
    "best": "#e0561f",
    "curve": "#5b7fa6",
    "text": "#2d3748",
    "muted": "#718096",
}
"""Status colours and accents, chosen to stay apart for colour-blind readers too."""

PALETTE = (
    "#4e79a7",
    "#59a14f",
    "#9c755f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#ff9da7",
    "#bab0ac",
    "#f28e2b",
    "#e15759",
)
"""Categorical colours (one per root of the plan, i.e. per family of fixed values)."""

FONT = "Inter, 'Helvetica Neue', Helvetica, Arial, sans-serif"


def escape(value: object) -> str:
    """``value`` as HTML that shows it literally: ``&``, ``<``, ``>`` and both quotes become
    entities, so ``<img src=x onerror=...>`` in a metric name is text, not an element.

    >>> escape('<img src=x onerror="go()">')
    '&lt;img src=x onerror=&quot;go()&quot;&gt;'
    """
    return html.escape(str(value), quote=True)


def style_figure(fig: Any) -> None:
    """The house look: light grid, no outline, readable titles and axis labels."""
    fig.outline_line_color = None
    fig.title.text_font_size = "13px"
    fig.title.text_color = COLORS["text"]
    fig.title.text_font_style = "bold"
    fig.title.text_font = FONT
    fig.toolbar.logo = None
    fig.background_fill_color = "#ffffff"
    fig.border_fill_color = "#ffffff"
    for axis in (*fig.xaxis, *fig.yaxis):
        axis.axis_line_color = "#a0aec0"
        axis.major_tick_line_color = "#a0aec0"
        axis.minor_tick_line_color = None
        axis.major_label_text_color = COLORS["muted"]
        axis.major_label_text_font = FONT
        axis.axis_label_text_color = COLORS["text"]
        axis.axis_label_text_font = FONT
        axis.axis_label_text_font_style = "normal"
    for grid in (*fig.xgrid, *fig.ygrid):
        grid.grid_line_color = "#edf2f7"


def replace_data(source: Any, data: dict[str, Any]) -> None:
    """Give ``source`` new columns, unless they equal the old ones: a browser redraws (and
    receives) a source only when something changed, not at every refresh."""
    if source.data != data:
        source.data = data


class DashboardComponent(ABC):
    """A dashboard panel over a :class:`~hippo_dask.dashboard.StudyReader`.

    Attributes
    ----------
    reader
        Where the panel reads the study from.
    source
        The ``ColumnDataSource`` its main glyphs draw; what tests assert on.
    root
        The Bokeh model to place in a layout (a figure, or a column of them).
    """

    reader: StudyReader
    source: Any
    root: Any

    def __init__(self, reader: StudyReader) -> None:
        self.reader = reader

    def update(self, snapshot: StudySnapshot | None = None) -> None:
        """Redraw from ``snapshot`` (default: the reader's latest, refreshed if needed)."""
        if snapshot is None:
            snapshot = self.reader.latest(max_age=1.0)
        try:
            self._draw(snapshot)
        except Exception:
            logger.exception("dashboard: %s could not draw %s", type(self).__name__, snapshot.name)
            raise

    @abstractmethod
    def _draw(self, snapshot: StudySnapshot) -> None:
        """Rewrite the sources from ``snapshot``."""
