"""The whole dashboard of a study: stage tree, learning curves, savings, worker lanes.

    bokeh serve dashboards/study.py --args ./hippo-runs --name digits-grid

or every page at once: ``bokeh serve dashboards/*.py --args ...`` (``/study``, ``/tree``, ...).
``hippo-dask dashboard ./hippo-runs --name digits-grid`` serves the same without ``bokeh serve``.
"""

from bokeh.plotting import curdoc

from hippo_dask.dashboard import app_from_argv

app_from_argv(curdoc())
