"""One panel of a study's dashboard: the stage tree, coloured by status, with the critical path.

    bokeh serve dashboards/tree.py --args ./hippo-runs --name digits-grid
"""

from bokeh.plotting import curdoc

from hippo_dask.dashboard import app_from_argv

app_from_argv(curdoc(), panels=("tree",))
