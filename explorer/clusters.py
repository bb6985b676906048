"""Clusters of the active embedding (seed 000 Fig. 7): pick the method (k-means / GMM) and k; colour every view by
cluster, select a cluster's galaxies, and see per cluster the star-formation main sequence, the WHAN diagram and
how each morphological type divides among the clusters.

The clusters are the bundle's (`embeddings/<E>/clusters.parquet`, fitted on the training galaxies); the selection
is drawn on top (black rings); the morphology composition is the whole survey's, as in the paper.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from explorer.colours import as_categories, category_colours
from explorer.data import CLUSTER_METHODS, ExplorerData, clustering_label, label, parse_clustering
from explorer.session import weak_hook
from explorer.state import SelectionState

SFMS = ("log_mstar", "log_sfr")  # x, y
WHAN = ("log_nii_ha", "ew_halpha")
MORPHOLOGY = "morphology"
# Renzini & Peng (2015) star-formation main sequence, log SFR = 0.76 log M★ − 7.64, drawn for reference.
MAIN_SEQUENCE = (0.76, -7.64)
# WHAN class boundaries (Cid Fernandes et al. 2011): star-forming left of log [NII]/Hα = −0.4 above 3 Å; to the
# right, strong AGN above 6 Å and weak AGN between 3 and 6 Å; retired below 3 Å; passive below 0.5 Å.
WHAN_NII_HA = -0.4
WHAN_EW = {"retired": 3.0, "strong AGN": 6.0, "passive": 0.5}
EW_FLOOR = 0.1  # Å: EW(Hα) is drawn on a log axis; weaker (or absorption) values sit on this floor
# Fixed sizes, two plots side by side; no legends: the cluster buttons above show each cluster's colour and size.
PLOT = dict(width=560, height=340, show_grid=True, show_legend=False)


def cluster_members(data: ExplorerData, column: str) -> dict[str, np.ndarray]:
    """{cluster: indices g of its galaxies} in legend order."""
    values = data.galaxies[column].to_numpy()
    return {c: np.flatnonzero(values == c) for c in data.categories(column)}


def plane_values(data: ExplorerData, x: str, y: str) -> pd.DataFrame:
    frame = pd.DataFrame({x: data.galaxies[x].to_numpy(float), y: data.galaxies[y].to_numpy(float),
                          "galaxy_id": data.galaxies["galaxy_id"].to_numpy(object)})
    if y == WHAN[1]:
        frame[y] = frame[y].clip(lower=EW_FLOOR)
    return frame


def plane_dims(x: str, y: str) -> list[hv.Dimension]:
    return [hv.Dimension(x, label=label(x)), hv.Dimension(y, label=label(y))]


def cluster_plane(data: ExplorerData, column: str, x: str, y: str) -> list[hv.Points]:
    """One point set per cluster (in its colour) in the plane of two galaxy properties."""
    frame = plane_values(data, x, y)
    colours = category_colours(column, data.galaxies[column])
    return [hv.Points(frame.iloc[members], kdims=plane_dims(x, y), vdims=["galaxy_id"], label=f"cluster {c}")
            .opts(color=colours[c], size=7, line_color="white", line_width=0.5, alpha=0.9, tools=["hover"])
            for c, members in cluster_members(data, column).items()]


def selection_rings(data: ExplorerData, x: str, y: str, galaxies=None) -> hv.Points:
    """The selected galaxies (indices g, None = nothing selected) as black rings, drawn over the point sets."""
    frame = plane_values(data, x, y)
    return hv.Points(frame.iloc[np.zeros(0, np.int64) if galaxies is None else galaxies], kdims=plane_dims(x, y),
                     vdims=["galaxy_id"]).opts(fill_alpha=0, line_color="black", line_width=1.5, size=11)


def sfms_plot(data: ExplorerData, column: str, rings=None) -> hv.Overlay:
    """The point sets of the clusters on the SFMS, `rings` (selection_rings) on top."""
    x = data.galaxies[SFMS[0]].to_numpy(float)
    masses = np.linspace(np.nanmin(x), np.nanmax(x), 2) if np.isfinite(x).any() else np.array([9.0, 11.5])
    slope, intercept = MAIN_SEQUENCE
    reference = hv.Curve((masses, slope * masses + intercept), SFMS[0], SFMS[1]).opts(color="#777",
                                                                                      line_dash="dashed")
    title = "Star-formation main sequence (dashed: Renzini & Peng 2015)"  # one colour per cluster
    rings = selection_rings(data, *SFMS) if rings is None else rings
    return (hv.Overlay([*cluster_plane(data, column, *SFMS), reference]) * rings).opts(
        hv.opts.Overlay(title=title, **PLOT))


def whan_plot(data: ExplorerData, column: str, rings=None) -> hv.Overlay:
    """The point sets of the clusters on the WHAN diagram with its class boundaries; `rings` as in sfms_plot."""
    frame = plane_values(data, *WHAN)
    x_low, x_high = np.nanmin(frame[WHAN[0]]) - 0.1, np.nanmax(frame[WHAN[0]]) + 0.1
    x_low, x_high = min(x_low, WHAN_NII_HA - 0.5), max(x_high, WHAN_NII_HA + 0.5)
    line = dict(color="#555", line_width=1)
    boundaries = [
        hv.Curve(([WHAN_NII_HA, WHAN_NII_HA], [WHAN_EW["retired"], 1e3]), *WHAN).opts(**line),
        hv.Curve(([x_low, x_high], [WHAN_EW["retired"]] * 2), *WHAN).opts(**line),
        hv.Curve(([WHAN_NII_HA, x_high], [WHAN_EW["strong AGN"]] * 2), *WHAN).opts(**line),
        hv.Curve(([x_low, x_high], [WHAN_EW["passive"]] * 2), *WHAN).opts(line_dash="dotted", **line),
    ]
    texts = [hv.Text(x, y, text).opts(text_color="#555", text_font_size="9pt", text_align=align)
                        for x, y, text, align in ((x_low + 0.05, 300, "SF", "left"),
                                                  (x_high - 0.05, 300, "sAGN", "right"),
                                                  (x_high - 0.05, 4.2, "wAGN", "right"),
                                                  (x_high - 0.05, 1.2, "retired", "right"),
                                                  (x_high - 0.05, 0.2, "passive", "right"))]
    title = "WHAN diagram per cluster (Cid Fernandes et al. 2011)"
    # a log axis is an option of every layer (the overlay takes its axes from them)
    rings = selection_rings(data, *WHAN) if rings is None else rings
    return (hv.Overlay([*cluster_plane(data, column, *WHAN), *boundaries, *texts]) * rings).opts(
        hv.opts.Points(logy=True), hv.opts.Curve(logy=True), hv.opts.Text(logy=True),
        hv.opts.Overlay(title=title, logy=True, xlim=(x_low, x_high), ylim=(EW_FLOOR / 1.5, None),
                        ylabel=f"{label(WHAN[1])} (≥ {EW_FLOOR} Å)", **PLOT))


def composition(data: ExplorerData, column: str, galaxies: np.ndarray) -> pd.DataFrame:
    """Seed 000 Fig. 7: for each morphological type, the share of its galaxies (among `galaxies`) in each cluster."""
    morphology = as_categories(data.galaxies[MORPHOLOGY]).to_numpy(object)[galaxies]
    clusters = data.galaxies[column].to_numpy(object)[galaxies]
    counts = pd.crosstab(pd.Categorical(morphology, data.categories(MORPHOLOGY)),
                         pd.Categorical(clusters, data.categories(column)), dropna=False)
    shares = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    long = shares.stack().rename("share").reset_index()
    long.columns = [MORPHOLOGY, "cluster", "share"]
    long["galaxies"] = counts.stack().to_numpy()
    return long


def composition_plot(data: ExplorerData, column: str, galaxies: np.ndarray) -> hv.Bars:
    frame = composition(data, column, galaxies)
    return hv.Bars(frame, kdims=[hv.Dimension(MORPHOLOGY, label="Morphology"), "cluster"],
                   vdims=[hv.Dimension("share", label="Share of the type in each cluster"), "galaxies"]).opts(
        stacked=True, cmap=category_colours(column, data.galaxies[column]), tools=["hover"],
        title=f"Morphology composition of {len(galaxies):,} galaxies", **PLOT)


class Clusters:
    """Method and k, the cluster buttons (click: select the cluster), "colour by clusters", and the Fig. 7 panel."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        method, k = parse_clustering(state.clustering)
        self.method = pn.widgets.RadioButtonGroup(label="Method", options={v: m for m, v in CLUSTER_METHODS.items()},
                                                  value=method, color="light", variant="outline")
        self.k = pn.widgets.RadioButtonGroup(label="k", options=[], value=None, color="light", variant="outline")
        self.colour = pn.widgets.Button(label="Colour by these clusters", color="primary", variant="outline")
        self.colour.on_click(lambda _: state.colour_by_clusters())
        self.buttons = pn.FlexBox(css_classes=["cluster-buttons"])
        self.summary = pn.pane.Markdown("")
        self._ring_sources: dict = {}  # (x, y) → Bokeh source of the selection rings on that plane
        state.param.watch(self._show_selection, ["galaxies"])
        self.plots = pn.GridBox(*self._plots(), ncols=2)
        self.view = pn.Column(pn.Row(pn.pane.HTML("<b>Method</b>", align="center"), self.method,
                                     pn.pane.HTML("<b>k</b>", align="center", margin=(5, 5, 5, 20)), self.k,
                                     self.colour),
                              self.summary, self.buttons, self.plots, sizing_mode="stretch_width")
        self._set_k_options(k)
        self.method.param.watch(self._choose, "value")
        self.k.param.watch(self._choose, "value")
        state.param.watch(self._on_embedding, ["embedding"])
        state.param.watch(self._rebuild, ["clustering"])
        self._rebuild()

    def _set_k_options(self, k) -> None:
        ks = sorted(parse_clustering(c)[1] for c in self.data.clusterings(self.state.embedding)
                    if parse_clustering(c)[0] == self.method.value)
        self.k.param.update(options=ks, value=k if k in ks else (ks[0] if ks else None))

    def _choose(self, *_) -> None:
        self._set_k_options(self.k.value)
        if self.k.value is not None:
            self.state.clustering = f"{self.method.value}_k{self.k.value}"

    def _on_embedding(self, *_) -> None:
        self._choose()
        self._rebuild()

    def _rebuild(self, *_) -> None:
        data, state = self.data, self.state
        column = state.cluster_column
        if not column:
            self.summary.object = f"No clustering {state.clustering!r} for the {state.embedding} embedding."
            self.buttons.objects = []
            return
        members = cluster_members(data, column)
        colours = category_colours(column, data.galaxies[column])
        method = clustering_label(state.clustering, data.embeddings[state.embedding])
        self.summary.object = (f"**{state.embedding}**, {method} (fitted on the training galaxies) — click a cluster "
                               "to select its galaxies:")
        self.buttons.objects = [self._cluster_button(c, len(g), colours[c]) for c, g in members.items()]

    def _cluster_button(self, cluster: str, n: int, colour: str) -> pn.widgets.Button:
        button = pn.widgets.Button(label=f"cluster {cluster} · {n} galaxies", variant="outline",
                                   styles={"border-left": f"14px solid {colour}", "border-radius": "4px"})
        button.on_click(lambda _: self.state.select_cluster(cluster))
        return button

    def _plots(self) -> list:
        """The Fig. 7 plots. A clustering or embedding change draws new figures (one renderer per cluster: a pane
        whose object is replaced keeps its first figure's renderers, so a change of k would draw the old point
        sets); a selection change only refills the rings' sources (a redrawn overlay costs ~0.2 s per plot)."""
        data, state = self.data, self.state

        def drawn(plot):
            def render(clustering, embedding):
                column = state.cluster_column
                return pn.pane.HoloViews(plot(column), linked_axes=False) if column else None
            return pn.panel(pn.bind(render, clustering=state.param.clustering, embedding=state.param.embedding))

        def rings(x, y):
            return selection_rings(data, x, y, state.galaxies).opts(hooks=[weak_hook(self._remember_rings)])

        plots = [drawn(lambda column, plot=plot, columns=columns: plot(data, column, rings(*columns)))
                 for columns, plot in ((SFMS, sfms_plot), (WHAN, whan_plot))
                 if all(c in data.colour_columns for c in columns)]
        if MORPHOLOGY in data.colour_columns:
            plots.append(drawn(lambda column: composition_plot(data, column, np.arange(data.n_galaxies))))
        return plots

    def _remember_rings(self, plot, element) -> None:
        """HoloViews hook on a rings layer: keep its source (per plane), so a selection refills only that."""
        self._ring_sources[tuple(d.name for d in element.kdims)] = plot.handles["source"]

    def _show_selection(self, event) -> None:
        for (x, y), source in self._ring_sources.items():
            source.data = dict(selection_rings(self.data, x, y, event.new).columns())
