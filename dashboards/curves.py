"""One panel of a study's dashboard: the learning curves of every trial, shared prefixes drawn once.

    bokeh serve dashboards/curves.py --args ./hippo-runs --name digits-grid
"""

from bokeh.plotting import curdoc

from hippo_dask.dashboard import app_from_argv

app_from_argv(curdoc(), panels=("curves",))
