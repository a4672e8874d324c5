"""Where a dashboard is shown: a Bokeh server, a static HTML report, the Dask dashboard.

:func:`serve` starts a Bokeh server for a study on ``127.0.0.1`` (``host`` opens it to other
machines) with the pages of :data:`~hippo_dask.dashboard.ROUTES`; ``port=0`` picks a free port.
:func:`save_report` writes the same panels, drawn once, to a standalone HTML file (Bokeh's
``save`` with the JavaScript inline, so it opens offline). :func:`add_to_scheduler` mounts the
pages on a running Dask scheduler's own dashboard under ``/hippo/<study>``: they still read only
the plan journal and the metrics store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hippo_dask.dashboard._app import DEFAULT_INTERVAL, PANELS, ROUTES, StudyDashboard
from hippo_dask.dashboard._base import escape
from hippo_dask.dashboard._reader import StudyReader, open_study

if TYPE_CHECKING:
    import distributed

__all__ = ["DashboardServer", "add_to_scheduler", "save_report", "serve"]

logger = logging.getLogger(__name__)


def _applications(reader: StudyReader, interval: float, prefix: str = "") -> dict[str, Any]:
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler

    apps = {}
    for path, build in ROUTES.items():

        def page(doc: Any, build: Any = build) -> None:
            build(doc, reader, interval)

        apps[(prefix + path).rstrip("/") or "/"] = Application(FunctionHandler(page))
    return apps


def _check_interval(interval: float) -> float:
    if (
        isinstance(interval, bool)
        or not isinstance(interval, (int, float))
        or not 0.2 <= interval <= 3600
    ):
        raise ValueError(f"dashboard: `interval` must be seconds in [0.2, 3600], got {interval!r}")
    return float(interval)


class DashboardServer:
    """A running dashboard server; :meth:`stop` ends it.

    Attributes
    ----------
    url
        The page of the whole dashboard, e.g. ``http://127.0.0.1:5006/``.
    port
        The port it listens on (the one picked, with ``port=0``).
    reader
        The study it shows.
    """

    def __init__(
        self,
        server: Any,
        reader: StudyReader,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None = None,
        thread: threading.Thread | None = None,
    ) -> None:
        self._server = server
        self._loop = loop
        self._thread = thread
        self.reader = reader
        self.host = host
        self.port = port
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.url = f"http://{shown}:{port}/"

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C); for the command line."""
        self._server.run_until_shutdown()

    def stop(self) -> None:
        """Stop serving (and the background thread, if it runs in one)."""
        if self._loop is not None and self._thread is not None:
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._shutdown)
                self._thread.join(timeout=10)
            return
        self._server.stop()

    def _shutdown(self) -> None:
        self._server.stop()
        assert self._loop is not None
        self._loop.stop()

    def __repr__(self) -> str:
        return f"<DashboardServer {self.reader.name!r} at {self.url}>"

    def _repr_html_(self) -> str:
        url = escape(self.url)
        return (
            f"hippo-dask dashboard of study <b>{escape(self.reader.name)}</b>: "
            f'<a href="{url}" target="_blank">{url}</a>'
        )


def _build_server(
    reader: StudyReader, host: str, port: int, interval: float, origins: list[str]
) -> tuple[Any, int]:
    """A Bokeh server on ``host:port`` (must run on the thread whose loop will serve it)."""
    from bokeh.server.server import BaseServer
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.util import bind_sockets
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    sockets, bound = bind_sockets(host, port)
    allowed = [f"127.0.0.1:{bound}", f"localhost:{bound}"]
    if host not in ("127.0.0.1", "localhost", ""):
        allowed.append(f"{host}:{bound}")
    allowed += [o if ":" in o else f"{o}:{bound}" for o in origins]
    try:
        tornado_app = BokehTornado(
            _applications(reader, interval), extra_websocket_origins=allowed, use_index=False
        )
        http_server = HTTPServer(tornado_app)
        http_server.start(1)
        http_server.add_sockets(sockets)
    except Exception:
        for s in sockets:
            s.close()
        raise
    return BaseServer(IOLoop.current(), tornado_app, http_server), bound


def serve(
    url: str | StudyReader,
    name: str | None = None,
    *,
    port: int = 5006,
    host: str = "127.0.0.1",
    interval: float = DEFAULT_INTERVAL,
    storage_options: Mapping[str, Any] | None = None,
    allow_origin: list[str] | None = None,
    background: bool = False,
) -> DashboardServer:
    """Start a Bokeh server showing the study at ``url`` (storage root, with ``name``).

    Parameters
    ----------
    url
        The storage root or study folder (see :func:`open_study`), or a reader.
    name
        The study's name, when ``url`` is a storage root holding several.
    port
        Port to listen on; 0 picks a free one (read it from the result's ``port``).
    host
        Address to bind: loopback by default, so only this machine sees the dashboard; give
        ``0.0.0.0`` (or an interface address) to serve other machines. The pages have no
        login: opening them shows the study (hyper-parameters, metrics, worker names, the
        storage root) to anyone who can reach the port. They only read the study's storage
        and run nothing on the workers. To watch from your laptop without opening anything,
        tunnel instead: ``ssh -L 5006:127.0.0.1:5006 server``.
    interval
        Seconds between refreshes from storage.
    storage_options
        Passed to fsspec (credentials, ``endpoint_url``).
    allow_origin
        Further ``host[:port]`` names browsers may reach the server by (behind a proxy, an SSH
        tunnel with another name).
    background
        Serve from a daemon thread and return at once (notebooks, tests); otherwise the caller
        runs the server with :meth:`DashboardServer.run` on its own thread.

    Raises
    ------
    StudyNotFoundError
        If ``url`` holds no such study (the message lists those it holds).
    OSError
        If the port is taken.
    """
    interval = _check_interval(interval)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"dashboard: `port` must be 0..65535 (0: any free port), got {port!r}")
    reader = url if isinstance(url, StudyReader) else open_study(url, name, storage_options)
    reader.refresh()  # fail here, not in the first browser session, if storage is unreadable
    origins = list(allow_origin or [])
    if not background:
        server, bound = _build_server(reader, host, port, interval, origins)
        server.start()
        return DashboardServer(server, reader, host, bound)
    ready: dict[str, Any] = {}
    started = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            server, bound = _build_server(reader, host, port, interval, origins)
            server.start()
            ready.update(server=server, port=bound, loop=loop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            ready["error"] = exc
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"hippo-dashboard-{reader.name}", daemon=True)
    thread.start()
    started.wait()
    if "error" in ready:
        raise ready["error"]
    logger.info("dashboard of %s at http://%s:%s/", reader.name, host, ready["port"])
    return DashboardServer(ready["server"], reader, host, ready["port"], ready["loop"], thread)


def save_report(
    url: str | StudyReader,
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write the dashboard of the study at ``url``, as it is now, to a standalone HTML file.

    The file carries Bokeh's JavaScript inline: it opens without a network or a server (attach
    it to a paper or a ticket). Returns the path written.

    Raises
    ------
    StudyNotFoundError
        If ``url`` holds no such study.
    """
    from bokeh.io import save
    from bokeh.resources import INLINE

    reader = url if isinstance(url, StudyReader) else open_study(url, name, storage_options)
    board = StudyDashboard(reader, PANELS, interactive=False)
    board.update(reader.refresh())
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    save(board.root, filename=target, resources=INLINE, title=f"hippo-dask report: {reader.name}")
    return target


_MOUNTED: dict[tuple[int, str], list[str]] = {}


def _mount(
    root: str,
    storage_options: Mapping[str, Any] | None,
    interval: float,
    dask_scheduler: Any = None,
) -> list[str]:
    """On the scheduler: add the study's pages to its HTTP server (distributed's own recipe);
    once per scheduler and study."""
    known = _MOUNTED.get((id(dask_scheduler), root))
    if known is not None:
        return known
    import dask
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.util import create_hosts_allowlist
    from tornado.ioloop import IOLoop

    reader = StudyReader(root, storage_options)
    prefix = f"/hippo/{reader.name}"
    options = dict(dask.config.get("distributed.scheduler.dashboard.bokeh-application"))
    origins = create_hosts_allowlist(
        options.pop("allow_websocket_origin", None), dask_scheduler.http_server.port
    )
    app = BokehTornado(
        _applications(reader, interval, prefix),
        prefix="",
        extra_websocket_origins=origins,
        use_index=False,
        absolute_url="",
    )
    dask_scheduler.http_application.add_application(app)
    app.initialize(IOLoop.current())
    paths = _MOUNTED[(id(dask_scheduler), root)] = [(prefix + path).rstrip("/") for path in ROUTES]
    logger.info("dashboard pages of %s added to the Dask scheduler under %s", reader.name, prefix)
    return paths


def add_to_scheduler(
    client: distributed.Client,
    url: str | StudyReader,
    name: str | None = None,
    *,
    interval: float = DEFAULT_INTERVAL,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Add the study's dashboard pages to the Dask scheduler's dashboard of ``client``.

    The pages live under ``/hippo/<study>`` (the whole dashboard) and
    ``/hippo/<study>/tree|curves|savings|lanes`` on the scheduler's dashboard address, and are
    served by the scheduler's process, which therefore needs ``hippo_dask`` and access to the
    storage. Returns the pages' full URLs.

    Raises
    ------
    StudyNotFoundError
        If ``url`` holds no such study.
    """
    interval = _check_interval(interval)
    reader = url if isinstance(url, StudyReader) else open_study(url, name, storage_options)
    options = dict(storage_options or reader.storage_options)
    paths: list[str] = client.run_on_scheduler(  # type: ignore[no-untyped-call]
        _mount, reader.root, options, interval
    )
    link = client.dashboard_link
    base = link.rsplit("/", 1)[0] if link.endswith("/status") else link.rstrip("/")
    return [base + path for path in paths]
