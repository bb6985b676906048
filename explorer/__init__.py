"""The galaxy explorer dashboard: `panel serve app.py` (see explorer.layout.create_app).

Views read the bundle through explorer.data (loaded once per server process) and follow one per-session
explorer.state.SelectionState. Nothing here imports torch.
"""
import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  registers the Bokeh backend, so views can set its options

hv.Store.set_current_backend("bokeh")
