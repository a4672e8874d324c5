"""One panel of a study's dashboard: the worker lanes, a Gantt chart of stages per worker.

    bokeh serve dashboards/lanes.py --args ./hippo-runs --name digits-grid
"""

from bokeh.plotting import curdoc

from hippo_dask.dashboard import app_from_argv

app_from_argv(curdoc(), panels=("lanes",))
