"""SOM grids: DESOM-1 (binned spectra) and DESOM-2 (galaxy fingerprints).

Each node is one square (hexagon on hexagonal maps) coloured by the hits of the current selection, the median
of the colour-by property, or the U-matrix. Tapping or box-selecting nodes selects their spectra / galaxies.
Spectra the session placed on the frozen maps (explorer.place_spectra, `state.placed`) are marked by a white dot
on their node.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource

from explorer.colours import (
    EMPTY_COLOUR,
    HITS_CMAP,
    PICKED_NODE_COLOUR,
    PROPERTY_CMAP,
    UMATRIX_CMAP,
    add_placed_dots,
    category_colours,
    finite_range,
)
from explorer.data import ExplorerData, label
from explorer.session import weak_hook
from explorer.state import SelectionState
from precompute import schema

MODES = ("Hits of selection", "Median of colour-by", "U-matrix")
CELL = 20  # screen pixels per node, so markers tile the frame
OUTLINE = 2  # screen pixels of a picked node's outline, half inside the 19-pixel marker: 17 × 17 keep the hit colour
# Placed spectra: one dot per node holding any, drawn over the map by a renderer of this name


def node_xy(grid: dict) -> tuple[np.ndarray, np.ndarray]:
    """Plot coordinates of nodes k = row * cols + col (hexagonal maps shift odd rows by half a node)."""
    row, col = np.divmod(np.arange(grid["rows"] * grid["cols"]), grid["cols"])
    shift = 0.5 * (row % 2) if grid.get("topology") == "hexagonal" else 0.0
    return col + shift, row.astype(float)


def som_points(grid: dict, values, title: str, value_label: str, cmap, hits=None, categorical=None,
               clim=None) -> hv.Points:
    """One marker per node coloured by `values` (NaN / None = empty node, drawn light grey).
    Coordinates are named after the map (grid["name"]) so Panel does not link the axes of different maps."""
    x, y = node_xy(grid)
    k = grid["rows"] * grid["cols"]
    row, col = np.divmod(np.arange(k), grid["cols"])
    kx, ky = _kdims(grid)
    frame = pd.DataFrame({kx.name: x, ky.name: y, "node": np.arange(k), "row": row, "col": col,
                          "value": values, "hits": np.zeros(k, int) if hits is None else hits})
    vdims = [hv.Dimension("value", label=value_label), "node", "row", "col", "hits"]
    points = hv.Points(frame, kdims=_kdims(grid), vdims=vdims)
    if categorical:
        colour = dict(cmap={**categorical, "n/a": EMPTY_COLOUR}, show_legend=False, colorbar=False)
    else:
        colour = dict(cmap=cmap, colorbar=True, clim=clim or finite_range(frame["value"]),
                      clipping_colors={"NaN": EMPTY_COLOUR},
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


def _kdims(grid: dict) -> list[hv.Dimension]:
    name = grid.get("name", "som")
    return [hv.Dimension(f"{name}_col", label="SOM column"), hv.Dimension(f"{name}_row", label="SOM row")]


def selection_hits(data: ExplorerData, level: str, state: SelectionState) -> np.ndarray:
    """Selected members per node: binned spectra on DESOM-1, galaxies on DESOM-2."""
    if level == "desom1":
        return state.node_hits
    return np.bincount(data.galaxy_node2[state.selected], minlength=data.desom2["rows"] * data.desom2["cols"])


def hits_colouring(level: str, hits: np.ndarray, name: str) -> tuple[np.ndarray, str, tuple[float, float]]:
    """Node values (NaN = no selected member, drawn grey), title and colour range (from 0) of the hit map."""
    what = "binned spectra" if level == "desom1" else "galaxies"
    title = f"{name}: {hits.sum():,} selected {what} per node"
    return np.where(hits > 0, hits, np.nan), title, (0.0, float(max(hits.max(), 1)))


def map_name(data: ExplorerData, level: str) -> str:
    """DESOM-1, or the title of the bundle's map of galaxies (DESOM-2, or the seed-002 MiniSom map)."""
    return "DESOM-1" if level == "desom1" else data.desom2["title"]


def placed_nodes(placed: pd.DataFrame | None, level: str, grid: dict) -> np.ndarray:
    """Nodes of what the session placed (rows of `assign`'s table): on DESOM-1 one per spectrum placed, on the map
    of galaxies one per galaxy (a cube's rows all carry its `desom2_node`; a seed-002 object's its `sed_node`)."""
    column = "node" if level == "desom1" else grid["node_column"]
    if placed is None or column not in placed:
        return np.zeros(0, np.int64)
    if level == "desom2":
        placed = placed.drop_duplicates([c for c in ("source", "galaxy_id") if c in placed])
    nodes = pd.to_numeric(placed[column], errors="coerce").dropna().to_numpy(np.int64)
    return nodes[nodes >= 0]


def placed_marks(grid: dict, nodes: np.ndarray) -> dict[str, np.ndarray]:
    """The marks' data source: one dot per node holding placed spectra (galaxies on DESOM-2), with how many."""
    counts = np.bincount(nodes, minlength=grid["rows"] * grid["cols"])
    where = np.flatnonzero(counts)
    x, y = node_xy(grid)
    return {"x": x[where], "y": y[where], "node": where, "placed": counts[where]}


def som_map(data: ExplorerData, level: str, mode: str, hits: np.ndarray, colour_by: str) -> hv.Points:
    """DESOM-1 (`level="desom1"`, spectra) or DESOM-2 (galaxies) coloured by `mode`; `hits` = selected members
    per node."""
    grid = getattr(data, level)
    all_hits = data.bundle.read(schema.DESOM1_HITS if level == "desom1" else grid["hits"])
    name = map_name(data, level)
    if mode == MODES[0]:
        values, title, clim = hits_colouring(level, hits, name)
        return som_points(grid, values, title, "selected " + ("spectra" if level == "desom1" else "galaxies"),
                          HITS_CMAP, hits=all_hits, clim=clim)
    if mode == MODES[1]:
        values = data.node_statistic(colour_by, level)
        categorical = (category_colours(colour_by, data.galaxies[colour_by])
                       if data.colour_columns[colour_by] == "categorical" else None)
        title = f"{name} · {'most common' if categorical else 'median'} {label(colour_by)}"
        return som_points(grid, values, title, label(colour_by), PROPERTY_CMAP, hits=all_hits, categorical=categorical)
    if mode == MODES[2]:
        values = np.asarray(data.bundle.read(schema.DESOM1_UMATRIX if level == "desom1" else grid["umatrix"]),
                            float).ravel()
        return som_points(grid, values, f"{name} · U-matrix (latent distance to neighbours)",
                          "U-matrix distance", UMATRIX_CMAP, hits=all_hits)
    raise ValueError(f"unknown SOM colouring {mode!r}; choose one of {MODES}")


def recolour(handles: dict, values: np.ndarray) -> None:
    """New node values for a rendered map. HoloViews fills the markers from its own copy of the value column (a
    column named after the style option, "color"), so that copy is what recolours the map; "value" is the hover."""
    handles["source"].data.update({"value": values, handles["glyph"].fill_color.field: values})


class SomMap:
    """One SOM grid linked to the state. The plot is rebuilt only when the colouring or the colour-by property
    changes; on a selection change only the node colours (hit map) and the outlined nodes go to the browser."""

    def __init__(self, data: ExplorerData, state: SelectionState, level: str, mode: pn.widgets.Widget):
        self.data, self.state, self.level, self.mode = data, state, level, mode
        self.pane = pn.pane.HoloViews(linked_axes=False, css_classes=[f"{level}-map"])
        self._handles: list[dict] = []  # Bokeh models of the rendered plot(s): source, colour mapper, figure
        self._marks: list[ColumnDataSource] = []  # the placed-spectra dots of the rendered plot(s)
        self._rebuild()
        mode.param.watch(self._rebuild, "value")
        state.param.watch(self._rebuild, ["colour_by"])
        state.param.watch(self._update, ["galaxies", "spectra", "nodes", "nodes2"])
        state.param.watch(self._show_placed, ["placed"])

    @property
    def selected_nodes(self) -> list[int]:
        return self.state.nodes if self.level == "desom1" else self.state.nodes2

    def _rebuild(self, *_):
        self._handles, self._marks = [], []
        element = som_map(self.data, self.level, self.mode.value, selection_hits(self.data, self.level, self.state),
                          self.state.colour_by)
        # Bokeh outlines the source's selected indices, which are only ever the nodes picked on this map
        element = element.opts(hooks=[weak_hook(self._remember)], selection_line_color=PICKED_NODE_COLOUR,
                               selection_line_width=OUTLINE)
        self.tap = hv.streams.Selection1D(source=element)
        self.tap.param.watch(self._on_tap, "index")
        self.pane.object = element

    def _remember(self, plot, element) -> None:
        """HoloViews hook, run when the plot is rendered: keep the models that selection changes update."""
        self._handles.append(plot.handles)
        plot.handles["source"].selected.indices = list(self.selected_nodes)
        figure = plot.handles["plot"]
        # the frame's width and height fix the size; HoloViews' sizing_mode "fixed" without a width and height made
        # Bokeh log a W-1005 warning for each map of every page
        figure.sizing_mode = None
        what = "placed spectra" if self.level == "desom1" else "placed galaxies"
        source = add_placed_dots(figure, self._placed_marks(), [(what, "@placed"), ("node", "@node")])
        if source is not None:
            self._marks.append(source)

    def _placed_marks(self) -> dict[str, np.ndarray]:
        grid = getattr(self.data, self.level)
        return placed_marks(grid, placed_nodes(self.state.placed, self.level, grid))

    def _show_placed(self, *_):
        marks = self._placed_marks()
        for source in self._marks:
            source.data = marks

    def _update(self, *_):
        hits_mode = self.mode.value == MODES[0]
        if hits_mode:
            values, title, (low, high) = hits_colouring(self.level, selection_hits(self.data, self.level, self.state),
                                                        map_name(self.data, self.level))
        for handles in self._handles:
            source = handles["source"]
            if hits_mode:
                recolour(handles, values)
                handles["color_color_mapper"].update(low=low, high=high)
                handles["plot"].title.text = title
            source.selected.indices = list(self.selected_nodes)

    def _on_tap(self, event) -> None:
        if not event.new:  # a tap beside the nodes clears Bokeh's selection, not the state's
            with pn.io.hold():  # outside the document lock (see GalaxyScatter._on_select): the hold sends it
                self._update()
        elif self.level == "desom1":
            self.state.select_nodes(event.new)
        else:
            self.state.select_nodes2(event.new)


class SomGrids:
    """DESOM-1 and DESOM-2 maps with one colouring switch (either map may be absent from a bundle)."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.mode = pn.widgets.RadioButtonGroup(label="SOM colouring", options=list(MODES), value=MODES[0],
                                                color="light", variant="outline")
        self.maps = {level: SomMap(data, state, level, self.mode) for level in ("desom1", "desom2")
                     if getattr(data, level)}
        panes = [m.pane for m in self.maps.values()]
        self.view = pn.Column(self.mode, pn.FlexBox(*panes), sizing_mode="stretch_width") if panes else None
