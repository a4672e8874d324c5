"""Put the panels together: one page per study, a route table, periodic refresh.

:class:`StudyDashboard` builds the four panels (stage tree, learning curves, savings, worker
lanes) and a header over one :class:`~hippo_dask.dashboard.StudyReader`. :func:`add_to_document`
puts it in a Bokeh document and refreshes it every ``interval`` seconds: the storage is read in a
thread (an S3 listing can take a while), the panels are redrawn on the document's next tick,
and the callback holds the dashboard through a weak reference, as distributed's dashboard does,
so a closed browser tab frees it. :data:`ROUTES` maps URL paths to page builders:
``/`` (everything) and one page per panel.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hippo_dask.dashboard._base import COLORS, FONT, DashboardComponent, escape
from hippo_dask.dashboard._curves import CurvesView
from hippo_dask.dashboard._lanes import WorkerLanesView
from hippo_dask.dashboard._savings import SavingsView
from hippo_dask.dashboard._tree import StageTreeView
from hippo_dask.errors import HippoError

if TYPE_CHECKING:
    from hippo_dask.dashboard._reader import StudyReader
    from hippo_dask.dashboard._snapshot import StudySnapshot

__all__ = ["DEFAULT_INTERVAL", "ROUTES", "StudyDashboard", "add_to_document", "app_from_argv"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
"""Seconds between refreshes of a served dashboard."""

PANELS = ("tree", "curves", "savings", "lanes")


class StudyDashboard:
    """The panels of one study and the header above them.

    Parameters
    ----------
    reader
        The study, as :func:`~hippo_dask.dashboard.open_study` opens it.
    panels
        Which panels to build, of ``"tree", "curves", "savings", "lanes"`` (default: all).
    interactive
        ``False`` for a static page (a saved report): leaves out the metric selector, which
        needs a server to act.

    Attributes
    ----------
    components
        The panels by name, each a :class:`DashboardComponent`.
    root
        The Bokeh layout to show, save or put in a document.
    """

    def __init__(
        self, reader: StudyReader, panels: tuple[str, ...] = PANELS, *, interactive: bool = True
    ) -> None:
        from bokeh.layouts import column, row
        from bokeh.models.widgets.markups import Div

        unknown = [p for p in panels if p not in PANELS]
        if unknown or not panels:
            raise ValueError(
                f"StudyDashboard: unknown panels {unknown}; choose among {list(PANELS)}"
            )
        self.reader = reader
        # a fixed height: the clock in it changes at every refresh, the layout must not
        self.header = Div(text="", name="dashboard-header", sizing_mode="stretch_width", height=50)
        self.components: dict[str, DashboardComponent] = {}
        builders: dict[str, Callable[[StudyReader], DashboardComponent]] = {
            "tree": StageTreeView,
            "curves": CurvesView,
            "savings": SavingsView,
            "lanes": WorkerLanesView,
        }
        for name in panels:
            self.components[name] = builders[name](reader)
        curves = self.components.get("curves")
        if isinstance(curves, CurvesView) and not interactive:
            curves.root.children = [curves.figure]
        middle = [self.components[p].root for p in ("curves", "savings") if p in panels]
        children: list[Any] = [self.header]
        if "tree" in panels:
            children.append(self.components["tree"].root)
        if middle:
            children.append(row(*middle, sizing_mode="stretch_width"))
        if "lanes" in panels:
            children.append(self.components["lanes"].root)
        self.root = column(
            *children,
            sizing_mode="stretch_width",
            styles={"padding": "4px 14px", "background": "#ffffff"},
        )

    def update(self, snapshot: StudySnapshot | None = None) -> None:
        """Redraw every panel from ``snapshot`` (default: a fresh read of the study)."""
        if snapshot is None:
            snapshot = self.reader.refresh()
        self.header.text = header_html(snapshot)
        for component in self.components.values():
            component.update(snapshot)


def header_html(snapshot: StudySnapshot) -> str:
    """The title bar: study name, where it lives, live or idle, when read."""
    state = ("live", COLORS["running"]) if snapshot.live else ("idle", COLORS["muted"])
    if (
        not snapshot.live
        and snapshot.savings.trials
        and not any(n.status in ("pending", "running", "queued") for n in snapshot.nodes)
    ):
        state = ("finished", COLORS["done"])
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.taken))
    return (
        f'<div style="font-family: {FONT}; color: {COLORS["text"]}; display: flex; '
        "align-items: baseline; gap: 14px; width: 100%; box-sizing: border-box; "
        'background: #f4f7fb; border-radius: 6px; padding: 8px 12px;">'
        '<span style="font-size: 20px; font-weight: 700;">hippo-dask</span>'
        f'<span style="font-size: 18px;">study <b data-hippo="study">{escape(snapshot.name)}</b></span>'
        f'<span style="font-size: 12px; color: {COLORS["muted"]};">{escape(snapshot.root)}</span>'
        f'<span style="font-size: 12px; padding: 1px 8px; border-radius: 9px; color: white; '
        f'background: {state[1]};" data-hippo="state">{state[0]}</span>'
        f'<span style="font-size: 12px; color: {COLORS["muted"]};">read at {stamp}</span></div>'
    )


def add_to_document(
    doc: Any,
    reader: StudyReader,
    panels: tuple[str, ...] = PANELS,
    *,
    interval: float = DEFAULT_INTERVAL,
) -> StudyDashboard:
    """Fill the Bokeh document ``doc`` with a dashboard of ``reader`` that refreshes itself.

    The first snapshot is read before the page is sent, so it never shows empty panels. Every
    ``interval`` seconds a thread reads what is new in storage (shared by every session on this
    reader, at most once per interval) and the panels redraw on the next tick.
    """
    from bokeh.document import without_document_lock

    dashboard = StudyDashboard(reader, panels)
    dashboard.update(reader.latest(max_age=interval / 2))
    doc.add_root(dashboard.root)
    doc.title = f"hippo-dask: {reader.name}"
    ref = weakref.ref(dashboard)

    def redraw(snapshot: StudySnapshot) -> None:
        board = ref()
        if board is not None:
            board.update(snapshot)

    @without_document_lock  # type: ignore[untyped-decorator, unused-ignore]
    async def refresh() -> None:
        if ref() is None:
            return
        loop = asyncio.get_running_loop()
        try:
            snapshot = await loop.run_in_executor(None, reader.latest, interval / 2)
        except (HippoError, OSError) as exc:  # storage briefly down: keep the last picture
            logger.warning("dashboard: cannot read study %s: %s", reader.name, exc)
            return
        except Exception:
            logger.exception("dashboard: reading study %s failed", reader.name)
            raise
        doc.add_next_tick_callback(functools.partial(redraw, snapshot))

    doc.add_periodic_callback(refresh, int(interval * 1000))
    doc.hippo_dashboard = dashboard  # keeps the dashboard alive as long as the session
    return dashboard


def _page(panels: tuple[str, ...]) -> Callable[[Any, StudyReader, float], StudyDashboard]:
    def build(doc: Any, reader: StudyReader, interval: float = DEFAULT_INTERVAL) -> StudyDashboard:
        return add_to_document(doc, reader, panels, interval=interval)

    build.__name__ = f"{'_'.join(panels)}_doc"
    return build


ROUTES: dict[str, Callable[[Any, StudyReader, float], StudyDashboard]] = {
    "/": _page(PANELS),
    "/tree": _page(("tree",)),
    "/curves": _page(("curves",)),
    "/savings": _page(("savings",)),
    "/lanes": _page(("lanes",)),
}
"""URL path to page builder ``(doc, reader, interval)``: the whole dashboard and each panel."""


def app_from_argv(
    doc: Any, argv: Sequence[str] | None = None, panels: tuple[str, ...] = PANELS
) -> StudyDashboard:
    """Fill ``doc`` from a ``bokeh serve`` app's arguments (what the apps in ``dashboards/`` do).

    ``bokeh serve dashboards/study.py --args STORAGE_URL [--name STUDY] [--interval S]
    [--endpoint-url URL]``: the arguments after ``--args`` arrive in ``sys.argv[1:]``.
    Sessions of one server share one reader of the study.
    """
    import sys

    from hippo_dask.dashboard._reader import open_study

    parser = argparse.ArgumentParser(prog="bokeh serve ... --args", add_help=False)
    parser.add_argument("storage", metavar="STORAGE_URL")
    parser.add_argument("--name")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument("--endpoint-url")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    reader = open_study(args.storage, args.name, options, shared=True)
    return add_to_document(doc, reader, panels, interval=args.interval)
