"""Every user-controlled string reaches the dashboard's HTML escaped (fast: no browser).

A page interprets HTML in three places only: a ``Div``'s text, a tooltip field marked
``{safe}``, and a notebook's ``_repr_html_``. For a study with markup planted in its name,
metric names, hyper-parameter names and values, a stage's error and a worker's name, no such
sink may hold the markup raw, and each planted string must be there escaped (shown as text).
Fields BokehJS escapes itself (tooltip fields without ``{safe}``) may hold it raw;
``test_browser_escaping.py`` checks the whole page in chromium.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

from hippo_dask.dashboard import DashboardServer, StudyDashboard, open_study
from tests.security.hostile import (
    ERROR,
    HP_NAME,
    HP_VALUE,
    IMG,
    MARKUP,
    METRIC_IMG,
    METRIC_SCRIPT,
    STUDY,
    WORKER,
    write_hostile_study,
)

_SAFE_FIELD = re.compile(r"@(?:\{([^}]+)\}|(\w+))\{safe\}")


def html_sinks(root: Any) -> dict[str, list[str]]:
    """Every string under the Bokeh model ``root`` that a browser parses as HTML, by where."""
    from bokeh.models import HoverTool
    from bokeh.models.widgets.markups import Markup

    sinks: dict[str, list[str]] = {}
    model: Any
    for model in root.references():
        if isinstance(model, Markup) and not getattr(model, "render_as_text", False):
            sinks.setdefault(f"{type(model).__name__} {model.name}", []).append(str(model.text))
        if isinstance(model, HoverTool):
            tooltips: Any = model.tooltips
            templates = (
                [tooltips] if isinstance(tooltips, str) else [str(v) for _, v in tooltips or []]
            )
            for template in templates:
                for braced, plain in _SAFE_FIELD.findall(template):
                    field = braced or plain
                    renderer: Any
                    for renderer in model.renderers or []:
                        values = renderer.data_source.data.get(field, [])
                        sinks.setdefault(f"tooltip @{field}{{safe}}", []).extend(map(str, values))
    return sinks


def _raw(sinks: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        where: [t for t in texts if any(m.lower() in t.lower() for m in MARKUP)]
        for where, texts in sinks.items()
        if any(m.lower() in t.lower() for t in texts for m in MARKUP)
    }


def escape(text: str) -> str:
    """How a planted string reads once escaped for HTML."""
    return html.escape(text, quote=True)


def test_the_dashboards_escape_makes_markup_text() -> None:
    from hippo_dask.dashboard._base import escape

    for text in (*MARKUP, "a & b", 'it\'s "quoted"', "plain"):
        escaped = escape(text)
        assert not re.search(r"[<>\"']", escaped)
        assert html.unescape(escaped) == text
    assert escape(3.5) == "3.5"


@pytest.mark.parametrize("interactive", [True, False], ids=["served", "report"])
def test_no_planted_markup_reaches_an_html_sink_raw(tmp_path: Path, interactive: bool) -> None:
    reader = open_study(write_hostile_study(tmp_path))
    board = StudyDashboard(reader, interactive=interactive)
    board.update()
    sinks = html_sinks(board.root)
    assert {"Div dashboard-header", "tooltip @config{safe}"} <= set(sinks)
    assert _raw(sinks) == {}
    everything = "\n".join(t for texts in sinks.values() for t in texts)
    for planted in (STUDY, HP_NAME, HP_VALUE, IMG):
        assert escape(planted) in everything, f"{planted!r} is not shown as text anywhere"
    # what the tooltips show as plain fields (BokehJS escapes those) is the planted text itself
    tree = board.components["tree"].source.data
    assert any(METRIC_IMG in m and METRIC_SCRIPT in m for m in tree["metrics"])
    lanes = board.components["lanes"].source.data
    assert any(ERROR in s for s in lanes["state"])
    assert WORKER.split("://", 1)[1] in lanes["worker"]
    curves: Any = board.components["curves"]
    assert METRIC_IMG in curves.select.options


def test_the_notebook_view_of_a_server_escapes_the_study_name(tmp_path: Path) -> None:
    reader = open_study(write_hostile_study(tmp_path))
    server = DashboardServer(None, reader, "127.0.0.1", 5006)
    shown = server._repr_html_()
    assert not any(m in shown for m in MARKUP)
    assert escape(STUDY) in shown
