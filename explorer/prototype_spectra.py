"""Decoded prototype spectra of DESOM-1 nodes with their members' 16–84 % band and median, spectral line
markers, and the nodes' empirical property distributions (seed 001, Fig. 6).

The nodes shown are the selected nodes, or else the most populated nodes of the current selection. Both plots
have a fixed set of slots (one per node shown), so when the nodes change only the slots' data go to the browser.
"""
from __future__ import annotations

from functools import partial

import holoviews as hv
import numpy as np
import panel as pn
import param

from explorer.data import ExplorerData, label
from explorer.session import weak_hook
from explorer.state import SelectionState
from precompute import schema
from precompute.node_statistics import density, histogram_edges, histogram_fractions

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


def node_spectra(data: ExplorerData, k: int | None) -> dict[str, np.ndarray]:
    """Members' 16th, 50th, 84th percentile and decoded prototype of node k (NaN for no node / no members)."""
    n_wave = data.bundle.wave.size
    if k is None:
        return {key: np.full(n_wave, np.nan) for key in ("p16", "p50", "p84", "prototype")}
    members = data.bundle.read(schema.DESOM1_MEMBER_SPECTRA)
    out = {key: np.asarray(members[i, k], float) for i, key in ((1, "p16"), (2, "p50"), (3, "p84"))}
    out["prototype"] = np.asarray(data.bundle.read(schema.DESOM1_PROTOTYPE_SPECTRA)[k], float)
    return out


def slot_sources(wave: np.ndarray, spectra: dict[str, np.ndarray]) -> dict[str, dict]:
    """Bokeh source columns of one slot, as HoloViews lays them out (an Area is one closed patch)."""
    return {
        "Band": {"x": np.concatenate([wave, wave[::-1]]), "y": np.concatenate([spectra["p84"], spectra["p16"][::-1]])},
        "Median": {"wave": wave, "flux": spectra["p50"]},
        "Prototype": {"wave": wave, "flux": spectra["prototype"]},
    }


def spectra_title(data: ExplorerData, nodes: list[int]) -> str:
    return ("Prototype spectra of " + ", ".join(node_name(data, k) for k in nodes)) if nodes else "No spectra selected"


def spectra_top(data: ExplorerData, nodes: list[int]) -> float:
    tops = [1.0] + [_robust_top(v) for k in nodes for key, v in node_spectra(data, k).items() if key != "p16"]
    return max(tops)


def prototype_plot(data: ExplorerData, nodes: list[int], hook=None) -> hv.Overlay:
    """Decoded prototype (solid), members' median (dashed) and 16–84 % band of each node (one colour per slot),
    with line markers. `hook(slot, role, plot, element)` receives each rendered layer (role "figure" for the
    whole plot, "labels" for the line names)."""
    wave = np.asarray(data.bundle.wave)
    kx = hv.Dimension("wave", label="Rest-frame wavelength [Å]")
    ky = hv.Dimension("flux", label="Normalised flux (mean 4050–4150 Å = 1)")
    top = spectra_top(data, nodes)
    hooks = (lambda slot, role: [partial(hook, slot, role)]) if hook else (lambda slot, role: [])
    overlay = hv.Overlay()
    for slot, colour in enumerate(NODE_COLOURS):
        spectra = node_spectra(data, nodes[slot] if slot < len(nodes) else None)
        overlay *= hv.Area((wave, spectra["p16"], spectra["p84"]), kdims=[kx], vdims=[ky, "flux_84"], group="Band",
                           label=f"slot{slot}").opts(color=colour, alpha=0.18, line_alpha=0,
                                                     hooks=hooks(slot, "Band"))
        overlay *= hv.Curve((wave, spectra["p50"]), kx, ky, group="Median", label=f"slot{slot}").opts(
            color=colour, line_dash="dashed", line_width=1, hooks=hooks(slot, "Median"))
        overlay *= hv.Curve((wave, spectra["prototype"]), kx, ky, group="Prototype", label=f"slot{slot}").opts(
            color=colour, line_width=2, hooks=hooks(slot, "Prototype"))
    markers = line_markers((wave[0], wave[-1]), top * 1.02)
    markers = markers.map(lambda el: el.opts(hooks=hooks(None, "labels")), hv.Labels)
    return (overlay * markers).opts(hv.opts.Overlay(
        title=spectra_title(data, nodes), show_legend=False, responsive=True, min_height=330, ylim=(0, top * 1.25),
        show_grid=True, hooks=hooks(None, "figure")))


def spectra_key(data: ExplorerData, nodes: list[int]) -> str:
    """HTML key: the colour of each node shown, and what the line styles mean."""
    swatches = " ".join(f'<span style="color:{c}">■</span> {node_name(data, k)}' for k, c in zip(nodes, NODE_COLOURS))
    return (f'<div style="font-size:12px">{swatches} &nbsp;·&nbsp; solid: decoded prototype · dashed: members\' '
            f'median · band: members\' 16–84 % · <span style="color:{LINE_COLOURS["emission"]}">emission</span> / '
            f'<span style="color:{LINE_COLOURS["absorption"]}">absorption</span> lines</div>')


def node_distribution(data: ExplorerData, k: int | None, column: str, edges: np.ndarray | None = None):
    """Distribution of `column` among node k's member spectra: (bin centres, probability density) for a numeric
    column on `edges`, (categories, fractions) for a categorical one. All NaN for no node. The bundle's stored
    fractions and the ones computed here share one definition (precompute.node_statistics)."""
    if data.colour_columns.get(column) == "categorical":
        categories = data.categories(column)
        if k is None:
            return categories, np.full(len(categories), np.nan)
        members = data.bin_categories(column)[data.bin_node == k]
        counts = np.array([(members == c).sum() for c in categories], float)
        return categories, counts / max(len(members), 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    if k is None:
        return centres, np.full(len(centres), np.nan)
    histograms = data.bundle.read(schema.DESOM1_NODE_HISTOGRAMS)
    key = histogram_key(data, column)
    if key and np.array_equal(histograms[f"{key}__edges"], edges):
        return centres, density(histograms[key][k], edges)
    values = data.bin_values(column).astype(float)[data.bin_node == k]
    return centres, density(histogram_fractions(values, edges), edges)


def histogram_key(data: ExplorerData, column: str) -> str | None:
    """Key of a galaxy column in desom1/node_histograms.npz: galaxy properties joined to the bins are stored as
    `galaxy.<column>` (plain `<column>` is the bins' own property of that name), or None when absent."""
    histograms = data.bundle.read(schema.DESOM1_NODE_HISTOGRAMS)
    return next((key for key in (f"galaxy.{column}", column) if key in histograms and key not in data.bins), None)


def distribution_edges(data: ExplorerData, column: str) -> np.ndarray:
    key = histogram_key(data, column)
    if key:
        return data.bundle.read(schema.DESOM1_NODE_HISTOGRAMS)[f"{key}__edges"]
    values = data.bin_values(column).astype(float)
    return histogram_edges(values[np.isfinite(values)], data.bundle.config["desom1"]["histogram_bins"])


def distribution_plot(data: ExplorerData, nodes: list[int], column: str, hook=None) -> hv.Overlay:
    """Empirical distribution of `column` among each node's member spectra (seed 001 Fig. 6), against all
    spectra (grey). `hook(slot, plot, element)` receives each rendered slot."""
    categorical = data.colour_columns.get(column) == "categorical"
    edges = None if categorical else distribution_edges(data, column)
    kx = hv.Dimension(column, label=label(column))
    hooks = (lambda slot: [partial(hook, slot)]) if hook else (lambda slot: [])
    if categorical:
        categories = data.categories(column)
        everyone = data.bin_categories(column)
        overall = np.array([(everyone == c).mean() for c in categories])
        overlay = hv.Scatter((categories, overall), kx, "fraction", label="all spectra").opts(
            color="#bbbbbb", size=12, marker="square")
        element = hv.Scatter
    else:
        overlay = hv.Histogram((edges, data.survey_histogram(column, edges)), kdims=[kx], vdims=["density"],
                               label="all spectra").opts(fill_color="#cccccc", line_color="#999999", alpha=0.6)
        element = hv.Curve
    for slot, colour in enumerate(NODE_COLOURS):
        x, y = node_distribution(data, nodes[slot] if slot < len(nodes) else None, column, edges)
        layer = element((x, y), kx, "fraction" if categorical else "density", label=f"slot{slot}")
        overlay *= layer.opts(color=colour, hooks=hooks(slot), **({"size": 8} if categorical else {"line_width": 2}))
    return overlay.opts(hv.opts.Overlay(title=f"{label(column)} of the nodes' members", responsive=True,
                                        min_height=330, show_legend=False, hooks=hooks(None),
                                        **({"xrotation": 30} if categorical else {})))


class ShownNodes(param.Parameterized):
    nodes = param.List(default=[], item_type=int)


class PrototypeSpectra:
    """Prototype spectra and property distributions for the selected (or most populated) DESOM-1 nodes.
    The plots follow the nodes shown, not the selection, and a change of nodes only refills their slots."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.shown = ShownNodes(nodes=self.shown_nodes())
        self._spectra_models: dict = {}
        self._distribution_models: dict = {}
        self.key = pn.pane.HTML(spectra_key(data, self.shown.nodes), sizing_mode="stretch_width", margin=(0, 10))
        self.spectra_pane = pn.pane.HoloViews(prototype_plot(data, self.shown.nodes, weak_hook(self._remember_spectra)),
                                              sizing_mode="stretch_width", min_height=330,
                                              css_classes=["prototype-spectra"])
        self.distribution_pane = pn.pane.HoloViews(sizing_mode="stretch_width", min_height=330)
        self._rebuild_distribution()
        self.view = pn.Row(pn.Column(self.key, self.spectra_pane, sizing_mode="stretch_width"),
                           pn.Column(self.distribution_pane, sizing_mode="stretch_width", max_width=480),
                           sizing_mode="stretch_width")
        state.param.watch(self._follow, ["nodes", "galaxies", "spectra"])
        state.param.watch(self._rebuild_distribution, ["colour_by"])
        self.shown.param.watch(self._refill, ["nodes"])

    def shown_nodes(self) -> list[int]:
        return nodes_to_show(self.state.nodes, self.state.node_hits)

    def _follow(self, *_):
        nodes = self.shown_nodes()
        if nodes != self.shown.nodes:
            self.shown.nodes = nodes

    def _remember_spectra(self, slot, role, plot, element) -> None:
        self._spectra_models[(slot, role)] = plot.handles["plot"] if role == "figure" else plot.handles["source"]

    def _remember_distribution(self, slot, plot, element) -> None:
        self._distribution_models[slot] = plot.handles["plot"] if slot is None else plot.handles["source"]

    def _rebuild_distribution(self, *_):
        self._distribution_models = {}
        self.distribution_pane.object = distribution_plot(self.data, self.shown.nodes, self.state.colour_by,
                                                          weak_hook(self._remember_distribution))

    def _refill(self, *_):
        nodes, data = self.shown.nodes, self.data
        self.key.object = spectra_key(data, nodes)
        if not self._spectra_models:  # not rendered yet: the next render builds from scratch
            self.spectra_pane.object = prototype_plot(data, nodes, weak_hook(self._remember_spectra))
        else:
            wave = np.asarray(data.bundle.wave)
            for slot in range(len(NODE_COLOURS)):
                columns = slot_sources(wave, node_spectra(data, nodes[slot] if slot < len(nodes) else None))
                for role, values in columns.items():
                    source = self._spectra_models[(slot, role)]
                    y = "y" if role == "Band" else "flux"
                    if len(source.data[y]) == len(values[y]):  # one key sends one column, not the wavelengths again
                        source.data[y] = values[y].astype(np.float32)
                    else:  # HoloViews drew an empty slot with no points at all
                        source.data = values
            top = spectra_top(data, nodes)
            figure = self._spectra_models[(None, "figure")]
            figure.title.text = spectra_title(data, nodes)
            figure.y_range.end = top * 1.25
            labels = self._spectra_models[(None, "labels")]
            labels.data["y"] = np.full(len(labels.data["y"]), top * 1.02)
        if not self._distribution_models:
            self._rebuild_distribution()
            return
        edges = None if self.data.colour_columns.get(self.state.colour_by) == "categorical" else \
            distribution_edges(data, self.state.colour_by)
        column = "fraction" if edges is None else "density"
        top = 0.0
        for slot, source in self._distribution_models.items():
            if slot is None:
                continue
            _, y = node_distribution(data, nodes[slot] if slot < len(nodes) else None, self.state.colour_by, edges)
            source.data[column] = y
            top = max(top, float(np.nanmax(y, initial=0.0)))
        if edges is None:
            top = 1.0  # fractions
        else:
            top = max(top, float(data.survey_histogram(self.state.colour_by, edges).max()))
        self._distribution_models[None].y_range.end = 1.1 * max(top, 1e-9)
