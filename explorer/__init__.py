"""The galaxy explorer dashboard: `panel serve app.py` (see explorer.layout.create_app).

Views read the bundle through explorer.data (loaded once per server process) and follow one per-session
explorer.state.SelectionState. Nothing here imports torch.
"""
import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  registers the Bokeh backend, so views can set its options

hv.Store.set_current_backend("bokeh")
# Canvas, not WebGL: every layout change repaints every plot, and a WebGL plot is then copied to its canvas
# (drawImage), which is slow wherever WebGL is software-rendered (remote desktops, headless browsers); a brush
# cost ~20 s in headless Chromium. Plots here hold at most a few thousand glyphs, which canvas draws at once.
hv.renderer("bokeh").webgl = False
