"""The study dashboard: stage tree, critical path, learning curves, savings, worker lanes.

Everything here reads a study's plan journal and zarr metrics store, never the scheduler, so it
works from another process or machine while the study runs, and on a finished study. Needs
the ``dashboard`` extra (Bokeh); ``import hippo_dask`` does not import this package.

>>> from hippo_dask import dashboard                        # doctest: +SKIP
>>> board = dashboard.serve("./hippo-runs", "digits-cnn", port=0, background=True)
>>> board.url                                               # open it in a browser
>>> dashboard.save_report("./hippo-runs", "report.html", "digits-cnn")

The command line does the same: ``hippo-dask dashboard ./hippo-runs --name digits-cnn`` and
``hippo-dask report ./hippo-runs --name digits-cnn -o report.html``.
"""

from hippo_dask.dashboard._app import (
    DEFAULT_INTERVAL,
    ROUTES,
    StudyDashboard,
    add_to_document,
    app_from_argv,
)
from hippo_dask.dashboard._base import DashboardComponent
from hippo_dask.dashboard._curves import CurvesView
from hippo_dask.dashboard._lanes import WorkerLanesView
from hippo_dask.dashboard._reader import StudyNotFoundError, StudyReader, find_studies, open_study
from hippo_dask.dashboard._savings import SavingsView
from hippo_dask.dashboard._serve import DashboardServer, add_to_scheduler, save_report, serve
from hippo_dask.dashboard._snapshot import (
    STATUSES,
    CriticalStage,
    Curve,
    NodeView,
    Savings,
    StudySnapshot,
    TrialView,
)
from hippo_dask.dashboard._tree import StageTreeView

__all__ = [
    "DEFAULT_INTERVAL",
    "ROUTES",
    "STATUSES",
    "CriticalStage",
    "Curve",
    "CurvesView",
    "DashboardComponent",
    "DashboardServer",
    "NodeView",
    "Savings",
    "SavingsView",
    "StageTreeView",
    "StudyDashboard",
    "StudyNotFoundError",
    "StudyReader",
    "StudySnapshot",
    "TrialView",
    "WorkerLanesView",
    "add_to_document",
    "add_to_scheduler",
    "app_from_argv",
    "find_studies",
    "open_study",
    "save_report",
    "serve",
]
