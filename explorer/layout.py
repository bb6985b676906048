"""The page: controls in the sidebar, linked views in the main area. `create_app()` builds one per session."""
from __future__ import annotations

import logging

import panel as pn
from panel.io.resources import CDN_DIST, LOCAL_DIST
from panel.theme.fast import Fast

from explorer.clusters import Clusters
from explorer.comparison import Comparison
from explorer.correlations import embedding_correlations
from explorer.data import ExplorerData, label, load_data, resolve_bundle_path
from explorer.gallery import Gallery, GalaxyDetail
from explorer.image_features import ImageFeatures
from explorer.labelling import LabelTools
from explorer.place_spectra import PlaceSpectra
from explorer.prototype_spectra import PrototypeSpectra
from explorer.ranking import WhatNext
from explorer.samp import samp_button
from explorer.scatter import GalaxyScatter, SpectraScatter
from explorer.selection_table import SelectionTable
from explorer.session import quiet_closed_pages, release_on_close
from explorer.som_grid import SomGrids
from explorer.state import SelectionState
from precompute import schema
from precompute.bundle import BundleError

TITLE = "Galaxy explorer"
FONT = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
ACCENT = "#1f4e79"
CSS = """
.gallery-card { border: 1px solid #e5e5e5; border-radius: 4px; }
.selection-count p { font-size: 15px; margin: 4px 0; }
"""


# The seed papers' figures on this bundle's embeddings: tab title → what it shows.
SEED_FIGURES = {
    "Clusters (seed 000 Fig. 7)": "k-means or GMM clusters of the active embedding: colour every view by cluster, "
                                  "select a cluster's galaxies, see each cluster's star-formation main sequence, "
                                  "WHAN diagram and morphology mix.",
    "Embedding × properties (seed 000 Fig. 10)": "Pearson r between the embedding's principal components and "
                                                 "every galaxy property; tap a cell to colour every view by it.",
    "Image-VAE features (seed 004)": "images decoded along each latent feature, the features × properties "
                                     "correlations, and the galaxies in the plane of the two features that best "
                                     "separate morphological types.",
}


class OfflineFast(Fast):
    """The Fast design without its Google web font: offline (clusters, CI) that font is a failed request and a
    console error on every page load. System fonts instead; Fast's own script from Panel's bundled copy."""

    _resources = {
        **{key: value for key, value in Fast._resources.items() if key != "font"},
        "js_modules": {**Fast._resources["js_modules"], "fast-design": f"{CDN_DIST}bundled/fast/js/fast_design.js"},
    }


def template(**params) -> pn.template.FastListTemplate:
    return pn.template.FastListTemplate(title=TITLE, accent=ACCENT, design=OfflineFast, font=FONT, font_url="",
                                        **params)


def colour_options(data: ExplorerData) -> dict[str, dict[str, str]]:
    """{group: {shown name: column}}: numeric properties, categories, then the clusters of every embedding."""
    kinds = data.colour_columns
    clusters = {label(c): c for c in kinds if data.is_cluster_column(c)}
    numeric = {label(c): c for c, kind in kinds.items() if kind == "numeric"}
    categorical = {f"{label(c)} (category)": c for c, kind in kinds.items()
                   if kind == "categorical" and c not in clusters.values()}
    return {"Properties": numeric, "Categories": categorical, **({"Clusters": clusters} if clusters else {})}


class Dashboard:
    """Every view of one session, wired to one SelectionState."""

    def __init__(self, data: ExplorerData):
        self.data = data
        self.state = SelectionState(data)
        state = self.state
        self.colour_by = pn.widgets.Select(label="Colour by", groups=colour_options(data), value=state.colour_by)
        self.colour_by.link(state, value="colour_by", bidirectional=True)  # views (clusters, correlations) set it too
        self.embedding = pn.widgets.Select(label="Embedding", options=list(data.embeddings), value=state.embedding,
                                           visible=bool(data.embeddings))
        self.embedding.link(state, value="embedding")
        self.clear = pn.widgets.Button(label="Clear selection", color="warning", variant="outline")
        self.clear.on_click(lambda _: state.clear())

        self.scatter = GalaxyScatter(data, state) if data.embeddings else None
        self.spectra = SpectraScatter(data, state) if data.numeric_bin_columns else None
        self.som = SomGrids(data, state) if data.desom1 or data.desom2 else None
        self.prototypes = PrototypeSpectra(data, state) if data.desom1 else None
        self.place = PlaceSpectra(data, state) if data.desom1 else None
        self.gallery = Gallery(data, state)
        self.detail = GalaxyDetail(data, state)
        self.table = SelectionTable(data, state)
        self.comparison = Comparison(data, state) if data.embeddings else None
        # The seed papers' figures are built when their tab is first opened: ~2.5 s of server time per page
        # (measured on the demo bundle) that most visits never look at
        self._seed_builders = {title: build for title, build, present in zip(SEED_FIGURES, (
            lambda: Clusters(data, state), lambda: embedding_correlations(data, state),
            lambda: ImageFeatures(data, state)), (bool(data.embeddings),) * 2 + (data.bundle.has("image_vae"),))
            if present}
        self._seed_views: dict = {}
        self.samp = samp_button(data, state)
        self.label_tools = LabelTools(data, state)
        self.what_next = WhatNext(data, state) if data.embeddings else None

    def seed_figure(self, title: str):
        """The view of one seed figure (SEED_FIGURES), built on first use; None when the bundle cannot show it."""
        if title not in self._seed_views:
            build = self._seed_builders.get(title)
            self._seed_views[title] = build() if build else None
        return self._seed_views[title]

    @property
    def clusters(self):
        return self.seed_figure("Clusters (seed 000 Fig. 7)")

    @property
    def correlations(self):
        return self.seed_figure("Embedding × properties (seed 000 Fig. 10)")

    @property
    def image_features(self):
        return self.seed_figure("Image-VAE features (seed 004)")

    def sidebar(self) -> list:
        items = [
            pn.pane.Markdown(f"**Bundle** `{self.data.path.name}`\n\n{self.data.description}",
                             styles={"font-size": "12px"}),
            self.embedding, self.colour_by, self.clear,
            pn.pane.Markdown(pn.bind(lambda galaxies, how: f"**{len(self.state.selected):,} galaxies** — {how}",
                                     self.state.param.galaxies, self.state.param.how)),
            pn.pane.Markdown("Box or lasso select galaxies on the scatter, tap or box-select SOM nodes, or pick "
                             "spectra in the spectra plane: every view follows the selection.",
                             styles={"font-size": "12px", "color": "#555"}),
        ]
        return items + ([self.samp] if self.samp else [])

    def main(self) -> list:
        maps = []
        if self.scatter:
            maps.append(("Galaxies", self.scatter.pane))
        if self.spectra:
            maps.append(("Binned spectra", self.spectra.view))
        top = [pn.Card(pn.Tabs(*maps, dynamic=True), title="Maps of the survey", collapsible=False,
                       sizing_mode="stretch_width", height=700, min_width=500)] if maps else []
        if self.som and self.som.view is not None:
            top.append(pn.Card(self.som.view, title="Self-organising maps", collapsible=False,
                               height=700, width=460, scroll=True))
        rows = [pn.Row(*top, sizing_mode="stretch_width")] if top else []
        if self.prototypes:
            rows.append(pn.Card(self.prototypes.view, title="Spectral types (DESOM-1 nodes)", collapsible=False,
                                sizing_mode="stretch_width"))
        if self.place:
            rows.append(pn.Card(self.place.view, title="Place new spectra on the maps (as precompute assign)",
                                collapsible=False, sizing_mode="stretch_width"))
        rows.append(pn.Row(
            pn.Card(pn.Tabs(("Gallery", self.gallery.view), ("Galaxy detail", self.detail.view), dynamic=True),
                    title="Galaxy images", collapsible=False, sizing_mode="stretch_width"),
            pn.Card(self.table.view, title="Selection", collapsible=False, width=560),
            sizing_mode="stretch_width",
        ))
        rows.append(pn.Card(pn.Row(self.label_tools.view, *([self.what_next.view] if self.what_next else []),
                                   sizing_mode="stretch_width"),
                            title="Discovery: labels and what to look at next", collapsible=False,
                            sizing_mode="stretch_width", css_classes=["discovery"]))
        if self.comparison:
            rows.append(pn.Card(self.comparison.view, title="Population comparison (10-NN distances, KS test)",
                                collapsible=False, sizing_mode="stretch_width"))
        if self._seed_builders:
            # The first tab is text; each figure (~300 Bokeh models for Fig. 7) is built and drawn when its tab is
            # first opened, not for every page that loads.
            about = pn.pane.Markdown("The figures of the seed papers on this bundle's embeddings, each drawn when "
                                     "its tab is opened:\n\n" + "\n".join(
                                         f"- **{title}**: {SEED_FIGURES[title]}" for title in self._seed_builders),
                                     sizing_mode="stretch_width")
            tabs = pn.Tabs(("About", about), *[(title, pn.Column(sizing_mode="stretch_width"))
                                               for title in self._seed_builders],
                           dynamic=True, css_classes=["seed-figures"])
            tabs.param.watch(self._open_seed_figure, "active")
            rows.append(pn.Card(tabs, title="Clusters, correlations and image features of the embeddings",
                                collapsible=False, sizing_mode="stretch_width"))
        return rows

    def _open_seed_figure(self, event) -> None:
        placeholder = event.obj[event.new]
        if event.new > 0 and not placeholder.objects:
            placeholder.objects = [self.seed_figure(list(self._seed_builders)[event.new - 1]).view]


def missing_bundle_page(path, error: str) -> pn.template.FastListTemplate:
    text = f"""
## No bundle to explore

The dashboard reads a **bundle** (see `docs/bundle-schema.md`), and none could be opened:

```
{error}
```

Build the demo bundle from the embedded mock survey (a few minutes on a laptop), then reload this page:

```
python -m precompute build --out {path}
```

or point the dashboard at another bundle: `panel serve app.py --args <bundle>` or
`GALAXY_EXPLORER_BUNDLE=<bundle> panel serve app.py`.
"""
    return template(main=[pn.pane.Markdown(text)])


def damaged_bundle_page(path, error: Exception) -> pn.template.FastListTemplate:
    """The bundle is there but a file in it cannot be used: the schema's own checks name the file and the problem
    (`python -m precompute validate`), with the error the dashboard met."""
    problems = schema.validate(path)
    listed = "\n".join(problems) if problems else "(every file passes `python -m precompute validate`)"
    text = f"""
## Cannot open this bundle

`{path}` is a bundle, but the dashboard could not read it:

```
{type(error).__name__}: {error}
```

What `python -m precompute validate {path}` finds:

```
{listed}
```

Rebuild it (`python -m precompute build --out {path}`) or point the dashboard at another bundle.
"""
    return template(main=[pn.pane.Markdown(text, css_classes=["bundle-error"])])


def serve_assets_locally() -> None:
    """Every stylesheet URL of this session from the server itself. Panel points a model's stylesheets at its CDN
    until the session's HTML page is rendered, and rewrites them then; a session Bokeh creates again when the
    page's websocket arrives after the session expired (pages slow to load on a busy server) never gets an HTML
    page, and its browser asked the CDN for ~10 stylesheets (the machine may be offline, as clusters are)."""
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        doc._template_variables.setdefault("dist_url", f"{pn.state.rel_path}/{LOCAL_DIST}" if pn.state.rel_path
                                           else LOCAL_DIST)


def create_app(path=None):
    """One page per browser session: the bundle is shared (loaded once per process), the selection is not."""
    pn.extension("tabulator", raw_css=[CSS], notifications=False)
    serve_assets_locally()
    path = resolve_bundle_path() if path is None else path
    try:
        data = load_data(str(path))
        dashboard = Dashboard(data)
    except BundleError as err:
        return missing_bundle_page(path, str(err))
    except Exception as err:  # a damaged file: say which and what, never a blank page
        logging.getLogger(__name__).exception("cannot open the bundle %s", path)
        return damaged_bundle_page(path, err)
    # One Bokeh root per card: the browser lays out (and repaints every plot of) the whole root of any element
    # whose text or size changes, so a selection that updates the gallery must not relayout the scatter's root.
    page = template(sidebar=[pn.Column(*dashboard.sidebar(), sizing_mode="stretch_width")],
                    main=dashboard.main(), sidebar_width=280, main_layout=None)
    page.dashboard = dashboard  # tests and the benchmark reach the session's state through it
    release_on_close(page, dashboard.state)
    quiet_closed_pages()
    return page
