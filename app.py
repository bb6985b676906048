"""`panel serve app.py [--args <bundle>]` — the galaxy explorer dashboard.

The bundle: `--args <bundle>`, else $GALAXY_EXPLORER_BUNDLE, else data/bundles/demo (built by
`python -m precompute build`); without one the page says how to build it. Add `--plugins explorer.serve_thumbnails`
(before `--args`) for hover thumbnails served as files, at any survey size.
"""
import panel as pn

from explorer.layout import create_app

if pn.state.served:
    # One walk of the page's model graph when it is complete instead of one per root added (~0.4 s of a page's ~2 s)
    with pn.state.curdoc.models.freeze():
        create_app().servable()
