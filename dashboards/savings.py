"""One panel of a study's dashboard: what sharing saved: steps and worker time.

    bokeh serve dashboards/savings.py --args ./hippo-runs --name digits-grid
"""

from bokeh.plotting import curdoc

from hippo_dask.dashboard import app_from_argv

app_from_argv(curdoc(), panels=("savings",))
