"""Decoded prototype spectra of DESOM-1 nodes with their members' 16–84 % band and median, spectral line
markers, and the nodes' empirical property distributions (seed 001, Fig. 6).

The nodes shown are the selected nodes, or else the most populated nodes of the current selection. Both plots
have a fixed set of slots (one per node shown), so when the nodes change only the slots' data go to the browser.
"""
from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, FactorRange, LabelSet, Range1d, Span
from bokeh.plotting import figure

from explorer.data import ExplorerData, label
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
LABEL_GAP = 0.02  # line labels closer than this share of the plotted wavelength range go one row up
LABEL_ROW_PX = 40  # rows of line labels, screen pixels apart (each label hangs below its anchor)
NODE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")
MAX_NODES = len(NODE_COLOURS)
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
PLOT_HEIGHT = 360


def nodes_to_show(nodes: list[int], hits: np.ndarray, max_nodes: int = 3) -> list[int]:
    """The selected nodes (up to MAX_NODES), else the `max_nodes` nodes holding most of the selected spectra
    (`hits` = selected spectra per node)."""
    if nodes:
        return list(nodes)[:MAX_NODES]
    top = np.argsort(hits, kind="stable")[::-1][:max_nodes]
    return [int(k) for k in top if hits[k] > 0]


def node_name(data: ExplorerData, k: int) -> str:
    return f"node ({k // data.desom1['cols']}, {k % data.desom1['cols']})"


def label_rows(waves, min_gap: float) -> list[int]:
    """Row of each line label (wavelengths ascending): the first row in which it stands at least ``min_gap`` Å from
    the label before it, so that close pairs (Ca K and H, Hα and [N II]) stay legible."""
    last: list[float] = []  # wavelength of the last label of each row
    rows = []
    for wave in waves:
        row = next((r for r, previous in enumerate(last) if wave - previous >= min_gap), len(last))
        last[row:row + 1] = [wave]
        rows.append(row)
    return rows


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


def spectra_title(data: ExplorerData, nodes: list[int]) -> str:
    return ("Prototype spectra of " + ", ".join(node_name(data, k) for k in nodes)) if nodes else "No spectra selected"


def spectra_top(data: ExplorerData, nodes: list[int]) -> float:
    tops = [1.0] + [_robust_top(v) for k in nodes for key, v in node_spectra(data, k).items() if key != "p16"]
    return max(tops)


class PrototypeFigure:
    """Decoded prototype (solid), members' median (dashed) and 16–84 % band of each node shown, one colour per
    slot, with the spectral lines marked. A Bokeh figure with a fixed set of slots (one source each), so showing
    other nodes sends only their flux columns to the browser. Plain Bokeh: a HoloViews overlay of these 15 layers
    cost ~0.9 s of every page's start-up."""

    def __init__(self, data: ExplorerData, nodes: list[int]):
        self.data = data
        wave = np.asarray(data.bundle.wave, float)
        self.figure = figure(tools=TOOLS, sizing_mode="stretch_width", height=PLOT_HEIGHT, min_width=300,
                             x_range=(wave[0], wave[-1]), y_range=Range1d(0, 1),
                             x_axis_label="Rest-frame wavelength [Å]",
                             y_axis_label="Normalised flux (mean 4050–4150 Å = 1)")
        self.slots = [ColumnDataSource({"wave": wave, **node_spectra(data, None)}) for _ in NODE_COLOURS]
        for source, colour in zip(self.slots, NODE_COLOURS):
            self.figure.varea("wave", "p16", "p84", source=source, fill_color=colour, fill_alpha=0.18)
            self.figure.line("wave", "p50", source=source, color=colour, line_dash="dashed", line_width=1)
            self.figure.line("wave", "prototype", source=source, color=colour, line_width=2)
        inside = [(name, w, kind) for name, w, kind in LINES if wave[0] <= w <= wave[-1]]
        for _, w, kind in inside:
            self.figure.add_layout(Span(location=w, dimension="height", line_color=LINE_COLOURS[kind],
                                        line_dash="dotted", line_width=1, line_alpha=0.7))
        rows = label_rows([w for _, w, _ in inside], LABEL_GAP * (wave[-1] - wave[0]))
        self.line_names = ColumnDataSource({"wave": [w for _, w, _ in inside], "flux": np.ones(len(inside)),
                                            "text": [name for name, _, _ in inside],
                                            "offset": [LABEL_ROW_PX * row for row in rows]})
        self.figure.add_layout(LabelSet(x="wave", y="flux", text="text", source=self.line_names, angle=90,
                                        angle_units="deg", text_font_size="8pt", text_color="#555555",
                                        text_baseline="bottom", text_align="right", y_offset="offset"))
        self.show(nodes)

    def show(self, nodes: list[int]) -> None:
        for slot, source in enumerate(self.slots):
            spectra = node_spectra(self.data, nodes[slot] if slot < len(nodes) else None)
            source.data.update({key: values.astype(np.float32) for key, values in spectra.items()})
        top = spectra_top(self.data, nodes)
        self.figure.title.text = spectra_title(self.data, nodes)
        self.figure.y_range.end = top * 1.25
        self.line_names.data.update(flux=np.full(len(self.line_names.data["flux"]), top * 1.02))


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


class DistributionFigure:
    """Empirical distribution of a property among each shown node's member spectra (seed 001 Fig. 6), against all
    spectra (grey): densities on the bundle's histogram edges for a numeric property, fractions per category for a
    categorical one. Fixed slots like PrototypeFigure; a new property needs a new figure (other axes)."""

    def __init__(self, data: ExplorerData, column: str, nodes: list[int]):
        self.data, self.column = data, column
        self.categorical = data.colour_columns.get(column) == "categorical"
        self.edges = None if self.categorical else distribution_edges(data, column)
        self.y = "fraction" if self.categorical else "density"
        common = dict(tools=TOOLS, sizing_mode="stretch_width", height=PLOT_HEIGHT, min_width=250,
                      title=f"{label(column)} of the nodes' members", x_axis_label=label(column), y_axis_label=self.y,
                      y_range=Range1d(0, 1))
        if self.categorical:
            categories = self.data.categories(column)
            everyone = data.bin_categories(column)
            self.figure = figure(x_range=FactorRange(*categories), **common)
            self.figure.xaxis.major_label_orientation = np.pi / 6
            self.figure.scatter(categories, [float((everyone == c).mean()) for c in categories], color="#bbbbbb",
                                size=12, marker="square")
            x = categories
        else:
            self.figure = figure(**common)
            self.figure.quad(left=self.edges[:-1], right=self.edges[1:], bottom=0,
                             top=data.survey_histogram(column, self.edges), fill_color="#cccccc", line_color="#999999",
                             alpha=0.6)
            x = 0.5 * (self.edges[1:] + self.edges[:-1])
        self.slots = [ColumnDataSource({"x": x, self.y: np.full(len(x), np.nan)}) for _ in NODE_COLOURS]
        for source, colour in zip(self.slots, NODE_COLOURS):
            if self.categorical:
                self.figure.scatter("x", self.y, source=source, color=colour, size=8)
            else:
                self.figure.line("x", self.y, source=source, color=colour, line_width=2)
        self.show(nodes)

    def show(self, nodes: list[int]) -> None:
        top = 1.0 if self.categorical else float(self.data.survey_histogram(self.column, self.edges).max())
        for slot, source in enumerate(self.slots):
            _, y = node_distribution(self.data, nodes[slot] if slot < len(nodes) else None, self.column, self.edges)
            source.data.update({self.y: y})
            top = max(top, float(np.nanmax(y, initial=0.0)))
        self.figure.y_range.end = 1.1 * max(top, 1e-9)


class ShownNodes(param.Parameterized):
    nodes = param.List(default=[], item_type=int)


class PrototypeSpectra:
    """Prototype spectra and property distributions for the selected (or most populated) DESOM-1 nodes.
    The plots follow the nodes shown, not the selection, and a change of nodes only refills their slots."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.shown = ShownNodes(nodes=self.shown_nodes())
        self.key = pn.pane.HTML(spectra_key(data, self.shown.nodes), sizing_mode="stretch_width", margin=(0, 10))
        self.spectra = PrototypeFigure(data, self.shown.nodes)
        self.distribution = DistributionFigure(data, state.colour_by, self.shown.nodes)
        self.distribution_pane = pn.pane.Bokeh(self.distribution.figure, sizing_mode="stretch_width")
        self.view = pn.Row(pn.Column(self.key, pn.pane.Bokeh(self.spectra.figure, sizing_mode="stretch_width",
                                                             css_classes=["prototype-spectra"]),
                                     sizing_mode="stretch_width"),
                           pn.Column(self.distribution_pane, sizing_mode="stretch_width", max_width=480),
                           sizing_mode="stretch_width")
        state.param.watch(self._follow, ["nodes", "galaxies", "spectra"])
        state.param.watch(self._new_distribution, ["colour_by"])
        self.shown.param.watch(self._refill, ["nodes"])

    def shown_nodes(self) -> list[int]:
        return nodes_to_show(self.state.nodes, self.state.node_hits)

    def _follow(self, *_):
        nodes = self.shown_nodes()
        if nodes != self.shown.nodes:
            self.shown.nodes = nodes

    def _new_distribution(self, *_):
        self.distribution = DistributionFigure(self.data, self.state.colour_by, self.shown.nodes)
        self.distribution_pane.object = self.distribution.figure

    def _refill(self, *_):
        self.key.object = spectra_key(self.data, self.shown.nodes)
        self.spectra.show(self.shown.nodes)
        self.distribution.show(self.shown.nodes)
