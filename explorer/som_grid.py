"""SOM grids: DESOM-1 (binned spectra) and DESOM-2 (galaxy fingerprints).

Each node is one square (hexagon on hexagonal maps) coloured by the hits of the current selection, the median
of the colour-by property, or the U-matrix. Tapping or box-selecting nodes selects their spectra / galaxies.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from explorer.colours import (EMPTY_COLOUR, HITS_CMAP, PROPERTY_CMAP, SELECTION_COLOUR, UMATRIX_CMAP,
                              category_colours, finite_range)
from explorer.data import ExplorerData, label
from explorer.state import SelectionState

MODES = ("Hits of selection", "Median of colour-by", "U-matrix")
CELL = 24  # screen pixels per node, so markers tile the frame


def node_xy(grid: dict) -> tuple[np.ndarray, np.ndarray]:
    """Plot coordinates of nodes k = row * cols + col (hexagonal maps shift odd rows by half a node)."""
    row, col = np.divmod(np.arange(grid["rows"] * grid["cols"]), grid["cols"])
    shift = 0.5 * (row % 2) if grid.get("topology") == "hexagonal" else 0.0
    return col + shift, row.astype(float)


def som_points(grid: dict, values, title: str, value_label: str, cmap, hits=None, categorical=None) -> hv.Points:
    """One marker per node coloured by `values` (NaN / None = empty node, drawn light grey)."""
    x, y = node_xy(grid)
    k = grid["rows"] * grid["cols"]
    row, col = np.divmod(np.arange(k), grid["cols"])
    frame = pd.DataFrame({"x": x, "y": y, "node": np.arange(k), "row": row, "col": col,
                          "value": values, "hits": np.zeros(k, int) if hits is None else hits})
    vdims = [hv.Dimension("value", label=value_label), "node", "row", "col", "hits"]
    points = hv.Points(frame, kdims=["x", "y"], vdims=vdims)
    if categorical:
        colour = dict(cmap={**categorical, "n/a": EMPTY_COLOUR}, show_legend=False, colorbar=False)
    else:
        colour = dict(cmap=cmap, colorbar=True, clim=finite_range(frame["value"]), clipping_colors={"NaN": EMPTY_COLOUR},
                      colorbar_opts={"title": value_label})
    marker = "hex" if grid.get("topology") == "hexagonal" else "square"
    return points.opts(
        color="value", marker=marker, size=CELL - 1, line_color="white", line_width=0.5,
        tools=["hover", "tap", "box_select"], active_tools=["tap"], nonselection_alpha=1.0, selection_alpha=1.0,
        hover_tooltips=[("node (row, col)", "@node (@row, @col)"), (value_label, "@value"), ("members", "@hits")],
        invert_yaxis=True, xaxis=None, yaxis=None, title=title,
        frame_width=CELL * grid["cols"], frame_height=CELL * grid["rows"],
        xlim=(-0.6, grid["cols"] + 0.1), ylim=(-0.6, grid["rows"] - 0.4), **colour,
    )


def node_rings(grid: dict, nodes) -> hv.Points:
    x, y = node_xy(grid)
    nodes = list(nodes)
    return hv.Points((x[nodes], y[nodes]), kdims=["x", "y"]).opts(
        marker="square", size=CELL - 1, fill_alpha=0, line_color=SELECTION_COLOUR, line_width=2.5, tools=[])


def desom1_map(data: ExplorerData, mode: str, spectra: np.ndarray, colour_by: str) -> hv.Points:
    """DESOM-1 coloured by `mode` for the selected `spectra`."""
    grid = data.desom1
    all_hits = data.bundle.array("desom1/hits")
    if mode == MODES[0]:
        hits = data.node_hits(spectra)
        values = np.where(hits > 0, hits, np.nan)
        return som_points(grid, values, f"DESOM-1: {hits.sum():,} selected binned spectra per node",
                          "selected spectra", HITS_CMAP, hits=all_hits)
    if mode == MODES[1]:
        values = data.node_statistic(colour_by, "desom1")
        categorical = (category_colours(colour_by, data.galaxies[colour_by])
                       if data.colour_columns[colour_by] == "categorical" else None)
        word = "most common" if categorical else "median"
        return som_points(grid, values, f"DESOM-1: {word} {label(colour_by)} of member spectra", label(colour_by),
                          PROPERTY_CMAP, hits=all_hits, categorical=categorical)
    if mode == MODES[2]:
        values = np.asarray(data.bundle.array("desom1/umatrix"), float).ravel()
        return som_points(grid, values, "DESOM-1: U-matrix (mean latent distance to neighbours)",
                          "U-matrix distance", UMATRIX_CMAP, hits=all_hits)
    raise ValueError(f"unknown SOM colouring {mode!r}; choose one of {MODES}")


def desom2_map(data: ExplorerData, mode: str, galaxies: np.ndarray, colour_by: str) -> hv.Points:
    """DESOM-2 (fingerprints) coloured by `mode` for the selected `galaxies`."""
    grid = data.desom2
    k = grid["rows"] * grid["cols"]
    all_hits = data.bundle.array("desom2/hits")
    if mode == MODES[0]:
        hits = np.bincount(data.galaxy_node2[galaxies], minlength=k)
        return som_points(grid, np.where(hits > 0, hits, np.nan), f"DESOM-2: {len(galaxies):,} selected galaxies per node",
                          "selected galaxies", HITS_CMAP, hits=all_hits)
    if mode == MODES[1]:
        values = data.node_statistic(colour_by, "desom2")
        categorical = (category_colours(colour_by, data.galaxies[colour_by])
                       if data.colour_columns[colour_by] == "categorical" else None)
        return som_points(grid, values, f"DESOM-2: {'most common' if categorical else 'median'} {label(colour_by)}",
                          label(colour_by), PROPERTY_CMAP, hits=all_hits, categorical=categorical)
    if mode == MODES[2]:
        values = np.asarray(data.bundle.array("desom2/umatrix"), float).ravel()
        return som_points(grid, values, "DESOM-2: U-matrix", "U-matrix distance", UMATRIX_CMAP, hits=all_hits)
    raise ValueError(f"unknown SOM colouring {mode!r}; choose one of {MODES}")


class SomGrids:
    """DESOM-1 and DESOM-2 maps linked to the state (either may be absent from a bundle)."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.mode = pn.widgets.RadioButtonGroup(name="SOM colouring", options=list(MODES), value=MODES[0],
                                                button_type="light", button_style="outline")
        panes = []
        if data.desom1:
            map1 = hv.DynamicMap(pn.bind(self._map1, mode=self.mode, galaxies=state.param.galaxies,
                                         spectra=state.param.spectra, colour_by=state.param.colour_by))
            self.tap1 = hv.streams.Selection1D(source=map1)
            self.tap1.param.watch(lambda e: e.new and state.select_nodes(e.new), "index")
            rings1 = hv.DynamicMap(pn.bind(lambda nodes: node_rings(data.desom1, nodes), nodes=state.param.nodes))
            panes.append(pn.pane.HoloViews(map1 * rings1, name="desom1-map"))
        if data.desom2:
            map2 = hv.DynamicMap(pn.bind(self._map2, mode=self.mode, galaxies=state.param.galaxies,
                                         colour_by=state.param.colour_by))
            self.tap2 = hv.streams.Selection1D(source=map2)
            self.tap2.param.watch(lambda e: e.new and state.select_nodes2(e.new), "index")
            rings2 = hv.DynamicMap(pn.bind(lambda nodes: node_rings(data.desom2, nodes), nodes=state.param.nodes2))
            panes.append(pn.pane.HoloViews(map2 * rings2, name="desom2-map"))
        self.view = pn.Column(self.mode, pn.FlexBox(*panes), sizing_mode="stretch_width") if panes else None

    def _map1(self, mode, galaxies, spectra, colour_by):
        return desom1_map(self.data, mode, self.state.selected_spectra, colour_by)

    def _map2(self, mode, galaxies, colour_by):
        return desom2_map(self.data, mode, self.state.selected, colour_by)
