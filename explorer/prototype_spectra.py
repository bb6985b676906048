"""Decoded prototype spectra of DESOM-1 nodes with their members' 16–84 % band and median, spectral line
markers, and the nodes' empirical property distributions (seed 001, Fig. 6).

The nodes shown are the selected nodes, or else the most populated nodes of the current selection.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import param

from explorer.colours import as_categories
from explorer.data import ExplorerData, label
from explorer.state import SelectionState

# Rest-frame vacuum wavelengths (Å) of the features astronomers look for first.
LINES = (
    ("[OII]", 3728.5, "emission"),
    ("Ca K", 3934.8, "absorption"),
    ("Ca H", 3969.6, "absorption"),
    ("Hδ", 4102.9, "absorption"),
    ("G band", 4305.6, "absorption"),
    ("Hβ", 4862.7, "emission"),
    ("[OIII]", 5008.2, "emission"),
    ("Mg b", 5176.7, "absorption"),
    ("Na D", 5894.6, "absorption"),
    ("Hα", 6564.6, "emission"),
    ("[NII]", 6585.3, "emission"),
    ("[SII]", 6725.0, "emission"),
)
LINE_COLOURS = {"emission": "#2166ac", "absorption": "#8c510a"}
NODE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")
MAX_NODES = len(NODE_COLOURS)


def nodes_to_show(nodes: list[int], hits: np.ndarray, max_nodes: int = 3) -> list[int]:
    """The selected nodes (up to MAX_NODES), else the `max_nodes` nodes holding most of the selected spectra
    (`hits` = selected spectra per node)."""
    if nodes:
        return list(nodes)[:MAX_NODES]
    top = np.argsort(hits, kind="stable")[::-1][:max_nodes]
    return [int(k) for k in top if hits[k] > 0]


def node_name(data: ExplorerData, k: int) -> str:
    return f"node ({k // data.desom1['cols']}, {k % data.desom1['cols']})"


def line_markers(wave_range: tuple[float, float], top: float) -> hv.Overlay:
    """Dashed vertical lines and names of the spectral features inside `wave_range`."""
    inside = [(name, w, kind) for name, w, kind in LINES if wave_range[0] <= w <= wave_range[1]]
    overlay = hv.Overlay()
    for kind, colour in LINE_COLOURS.items():
        xs = [w for _, w, k in inside if k == kind]
        if xs:
            overlay *= hv.VLines(xs, label=f"{kind} lines").opts(color=colour, line_dash="dotted", line_width=1,
                                                                  alpha=0.7)
    names = hv.Labels([(w, top, name) for name, w, _ in inside], vdims="text")
    return overlay * names.opts(text_font_size="8pt", text_color="#555555", text_baseline="bottom", angle=90,
                                text_align="right", yoffset=0)


def _robust_top(flux: np.ndarray) -> float:
    """Upper flux limit that shows the continuum: the strongest emission-line peaks may go off the top."""
    return float(np.nanpercentile(flux, 99.7)) if np.isfinite(flux).any() else 1.0


def prototype_plot(data: ExplorerData, nodes: list[int]) -> hv.Overlay:
    """Decoded prototype (solid), members' median (dashed) and 16–84 % band of each node, with line markers."""
    wave = np.asarray(data.bundle.wave)
    prototypes = data.bundle.array("desom1/prototype_spectra")
    members = data.bundle.array("desom1/member_spectra")
    overlay, top = hv.Overlay(), 1.0
    kx = hv.Dimension("wave", label="Rest-frame wavelength [Å]")
    ky = hv.Dimension("flux", label="Normalised flux (mean 4050–4150 Å = 1)")
    for k, colour in zip(nodes, NODE_COLOURS):
        name = node_name(data, k)
        p16, p50, p84 = (np.asarray(members[i, k], float) for i in (1, 2, 3))
        if np.isfinite(p50).any():
            overlay *= hv.Area((wave, p16, p84), kdims=[kx], vdims=[ky, "flux_84"]).opts(
                color=colour, alpha=0.18, line_alpha=0)
            overlay *= hv.Curve((wave, p50), kx, ky, label=f"{name} members' median").opts(
                color=colour, line_dash="dashed", line_width=1)
            top = max(top, _robust_top(p84))
        proto = np.asarray(prototypes[k], float)
        overlay *= hv.Curve((wave, proto), kx, ky, label=f"{name} decoded prototype").opts(color=colour, line_width=2)
        top = max(top, _robust_top(proto))
    overlay *= line_markers((wave[0], wave[-1]), top * 1.02)
    title = ("Prototype spectra of " + ", ".join(node_name(data, k) for k in nodes)) if nodes else "No spectra selected"
    return overlay.opts(hv.opts.Overlay(title=title, legend_position="right", responsive=True, min_height=330,
                                        ylim=(0, top * 1.25), show_grid=True,
                                        legend_opts={"label_text_font_size": "8pt", "spacing": 0}))


def distribution_plot(data: ExplorerData, nodes: list[int], column: str) -> hv.Overlay:
    """Empirical distribution of `column` among each node's member spectra, against the whole survey (grey)."""
    bins_values = data.bin_values(column)
    title = f"{label(column)} of the nodes' members"
    if data.colour_columns.get(column) == "categorical":
        categories = as_categories(data.galaxies[column]).to_numpy()[data.bin_galaxy]
        rows = []
        for k in nodes:
            members = categories[data.bin_node == k]
            names, counts = np.unique(members, return_counts=True)
            rows += [(node_name(data, k), n, c / max(len(members), 1)) for n, c in zip(names, counts)]
        bars = hv.Bars(rows, kdims=["node", hv.Dimension("category", label=label(column))], vdims=["fraction"])
        return bars.opts(title=title, responsive=True, min_height=330, xrotation=30, ylabel="fraction of members",
                         multi_level=False, color=hv.dim("node").categorize(
                             {node_name(data, k): c for k, c in zip(nodes, NODE_COLOURS)}))
    histograms = data.bundle.arrays("desom1/node_histograms")
    if column in histograms:
        edges, pdfs = histograms[f"{column}__edges"], histograms[column]
    else:  # a property the build did not histogram: count it here
        finite = bins_values[np.isfinite(bins_values.astype(float))]
        edges = np.histogram_bin_edges(finite, bins=24)
        pdfs = None
    kx = hv.Dimension(column, label=label(column))
    survey = data.survey_histogram(column, edges)
    overlay = hv.Histogram((edges, survey), kdims=[kx], vdims=["density"], label="all spectra").opts(
        fill_color="#cccccc", line_color="#999999", alpha=0.6)
    for k, colour in zip(nodes, NODE_COLOURS):
        pdf = pdfs[k] if pdfs is not None else np.histogram(bins_values[data.bin_node == k].astype(float),
                                                             bins=edges, density=True)[0]
        overlay *= hv.Histogram((edges, np.nan_to_num(pdf)), kdims=[kx], vdims=["density"], label=node_name(data, k)).opts(
            fill_alpha=0.25, fill_color=colour, line_color=colour, line_width=1.5)
    return overlay.opts(hv.opts.Overlay(title=title, responsive=True, min_height=330, legend_position="top_right"))


class ShownNodes(param.Parameterized):
    nodes = param.List(default=[], item_type=int)


class PrototypeSpectra:
    """Prototype spectra and property distributions for the selected (or most populated) DESOM-1 nodes.
    The plots follow the nodes shown, not the selection: most selection changes leave them untouched."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.shown = ShownNodes(nodes=self.shown_nodes())
        state.param.watch(self._follow, ["nodes", "galaxies", "spectra"])
        spectra = hv.DynamicMap(pn.bind(self._spectra, nodes=self.shown.param.nodes))
        self.spectra_pane = pn.pane.HoloViews(spectra, sizing_mode="stretch_width", min_height=330,
                                              name="prototype-spectra")
        distribution = hv.DynamicMap(pn.bind(self._distribution, nodes=self.shown.param.nodes,
                                             column=state.param.colour_by))
        self.distribution_pane = pn.pane.HoloViews(distribution, sizing_mode="stretch_width", min_height=330)
        self.view = pn.Row(pn.Column(self.spectra_pane, sizing_mode="stretch_width"),
                           pn.Column(self.distribution_pane, sizing_mode="stretch_width", max_width=480),
                           sizing_mode="stretch_width")

    def shown_nodes(self) -> list[int]:
        return nodes_to_show(self.state.nodes, self.state.node_hits)

    def _follow(self, *_):
        nodes = self.shown_nodes()
        if nodes != self.shown.nodes:
            self.shown.nodes = nodes

    def _spectra(self, nodes):
        return prototype_plot(self.data, nodes)

    def _distribution(self, nodes, column):
        return distribution_plot(self.data, nodes, column)
