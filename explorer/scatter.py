"""Galaxy scatter (UMAP of an embedding) and spectra scatter (one point per binned spectrum, datashaded when many).

The base plot is rebuilt only when the embedding or the colour changes; the selection is a separate overlay
that follows the state, so a selection change ships only the selected points to the browser.
"""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import HoverTool
from holoviews.operation.datashader import dynspread, rasterize

from explorer.colours import (
    PROPERTY_CMAP,
    SELECTION_COLOUR,
    add_placed_dots,
    as_categories,
    category_colours,
    finite_range,
)
from explorer.data import KEY_COLUMNS, ExplorerData, label
from explorer.session import weak_hook
from explorer.state import SelectionState
from precompute import schema

MARKERS = {"train": "circle", "val": "star"}  # seed 000: training circles, validation stars
DATASHADE_ABOVE = 20_000  # spectra scatter: plain points up to this many, datashader beyond


def placed_positions(placed: pd.DataFrame | None, embedding: str) -> dict[str, np.ndarray]:
    """The dots of galaxies the session placed (`assign`'s table: one position per galaxy, on each of its rows)
    on `embedding`'s UMAP; none when the table has no position there (single spectra, a bundle without projector)."""
    x_column, y_column = schema.umap_columns(embedding)
    if placed is None or x_column not in placed:
        return {"x": np.zeros(0), "y": np.zeros(0), "name": np.zeros(0, object)}
    rows = placed.dropna(subset=[x_column]).drop_duplicates(["source", "galaxy_id"])
    return {"x": rows[x_column].to_numpy(float), "y": rows[y_column].to_numpy(float),
            "name": rows["galaxy_id"].astype(str).to_numpy(object)}


def galaxy_frame(data: ExplorerData, embedding: str, colour_by: str) -> pd.DataFrame:
    """One row per galaxy (row g): UMAP coordinates, the colour column, hover columns."""
    xy = np.asarray(data.umap(embedding))
    galaxies = data.galaxies
    frame = pd.DataFrame({"umap_1": xy[:, 0], "umap_2": xy[:, 1], "galaxy_id": galaxies["galaxy_id"].to_numpy(),
                          "split": galaxies["split"].astype(str).to_numpy()})
    for column in KEY_COLUMNS:
        if column in galaxies:
            frame[column] = galaxies[column].to_numpy()
    kind = data.colour_columns.get(colour_by)
    if kind == "categorical":
        frame["colour"] = as_categories(galaxies[colour_by]).to_numpy()
    elif kind == "numeric":
        frame["colour"] = galaxies[colour_by].to_numpy(float)
    else:
        raise KeyError(f"cannot colour by {colour_by!r}: not a galaxy property of {data.path}")
    if data.hover_thumbnails is not None:
        frame["thumb"] = data.hover_thumbnails
    # plain object arrays: HoloViews scans string columns on every update, and Arrow-backed strings iterate slowly
    return frame.astype({c: object for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])})


def _tooltip(frame: pd.DataFrame, colour_by: str) -> HoverTool:
    image = '<img src="@thumb" width="80" height="80" style="float:left;margin:0 8px 4px 0">' if "thumb" in frame else ""
    rows = "".join(f"<div>{label(c)}: <b>@{{{c}}}{{0.00}}</b></div>" if pd.api.types.is_float_dtype(frame[c])
                   else f"<div>{label(c)}: <b>@{{{c}}}</b></div>" for c in KEY_COLUMNS if c in frame)
    colour = f"<div>{label(colour_by)}: <b>@colour</b></div>" if colour_by not in KEY_COLUMNS else ""
    html = (f'<div class="galaxy-tooltip" style="max-width:300px">{image}'
            f'<div style="font-size:13px"><b>@galaxy_id</b> <span style="color:#777">(@split)</span></div>'
            f'<div style="font-size:11px">{rows}{colour}</div></div>')
    return HoverTool(tooltips=html)


def galaxy_points(data: ExplorerData, embedding: str, colour_by: str) -> hv.Points:
    """The scatter of every galaxy in `embedding`'s UMAP, coloured by `colour_by`; row g is galaxy g."""
    frame = galaxy_frame(data, embedding, colour_by)
    vdims = [c for c in frame.columns if c not in ("umap_1", "umap_2")]
    vdims[vdims.index("colour")] = hv.Dimension("colour", label=label(colour_by))
    points = hv.Points(frame, kdims=["umap_1", "umap_2"], vdims=vdims)
    if data.colour_columns[colour_by] == "categorical":
        colour_opts = dict(cmap=category_colours(colour_by, data.galaxies[colour_by]), show_legend=True,
                           legend_position="right", colorbar=False)
    else:
        colour_opts = dict(cmap=PROPERTY_CMAP, colorbar=True, clim=finite_range(frame["colour"]),
                           colorbar_opts={"title": label(colour_by)})
    size = max(3.0, min(9.0, 900 / np.sqrt(len(frame))))  # smaller points for bigger surveys
    return points.opts(
        color="colour", marker=hv.dim("split").categorize(MARKERS, default="circle"),
        size=hv.dim("split").categorize({"train": size, "val": size * 1.6}, default=size),
        line_color="white", line_width=0.3, alpha=0.9,
        selection_alpha=1.0, selection_line_color="black", nonselection_alpha=0.12,
        tools=[_tooltip(frame, colour_by), "box_select", "lasso_select"], active_tools=["box_select"],
        xlabel=f"UMAP 1 ({embedding})   ○ training  ☆ validation", ylabel=f"UMAP 2 ({embedding})",
        title=f"Galaxies in the {embedding} UMAP, coloured by {label(colour_by)}",
        responsive=True, height=600, show_grid=True, **colour_opts,
    )


def selected_rows(galaxies: np.ndarray | None):
    """Rows of the galaxy scatter to draw as selected ([] = no selection: every point drawn normally).
    The state keeps galaxies sorted; an integer array validates faster in Bokeh than a list."""
    return [] if galaxies is None else np.asarray(galaxies, dtype=np.int64)


class GalaxyScatter:
    """The linked galaxy scatter: box / lasso selections go to the state, and the state's selection is drawn by
    Bokeh itself (selected points opaque, the others faded). A selection change only sets the rendered
    sources' selected indices: the plot is not rebuilt, so its cost does not grow with the survey.
    Other planes of galaxies (the image-VAE latent plane) subclass it with their own `points` and `how`."""

    css_class = "galaxy-scatter"
    shows_placed = True  # galaxies placed by the session are dotted where the UMAP's fitted transform puts them

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.pane = pn.pane.HoloViews(sizing_mode="stretch_width", height=600, css_classes=[self.css_class])
        self._sources: list = []  # Bokeh ColumnDataSources of the rendered plot(s) of this session
        self._marks: list = []  # the placed galaxies' dots of the rendered plot(s)
        self._rebuild()
        state.param.watch(self._rebuild, ["embedding", "colour_by"])
        state.param.watch(self._show_selection, ["galaxies"])
        if self.shows_placed:
            state.param.watch(self._show_placed, ["placed"])

    def _rebuild(self, *_):
        self._sources, self._marks = [], []
        points = self.points().opts(hooks=[weak_hook(self._remember)])
        self.selection = hv.streams.Selection1D(source=points)
        self.selection.param.watch(self._on_select, "index")
        self.pane.object = points

    def points(self) -> hv.Points:
        return galaxy_points(self.data, self.state.embedding, self.state.colour_by)

    @property
    def how(self) -> str:
        return f"box/lasso on the {self.state.embedding} UMAP"

    def _remember(self, plot, element) -> None:
        """HoloViews hook, run when the plot is rendered: keep its source to draw selections on."""
        source = plot.handles["source"]
        if source not in self._sources:
            self._sources.append(source)
        source.selected.indices = selected_rows(self.state.galaxies)
        if self.shows_placed:
            marks = add_placed_dots(plot.handles["plot"], placed_positions(self.state.placed, self.state.embedding),
                                    [("placed", "@name")])
            if marks is not None:
                self._marks.append(marks)

    def _show_placed(self, *_):
        positions = placed_positions(self.state.placed, self.state.embedding)
        for marks in self._marks:
            marks.data = positions

    def _show_selection(self, *_):
        rows = selected_rows(self.state.galaxies)
        for source in self._sources:
            source.selected.indices = rows

    def _on_select(self, event) -> None:
        if event.new:
            self.state.select_galaxies(event.new, how=self.how)
        else:  # an empty box or lasso clears Bokeh's selection but not the state's (Clear does that): redraw it.
            # HoloViews runs this outside the session's document lock; a hold sends the change itself, where a
            # bare model write raises in Bokeh's server session and leaves the page ignoring every later brush
            with pn.io.hold():
                self._show_selection()


def spectra_points(data: ExplorerData, x: str, y: str, spectra: np.ndarray | None = None) -> hv.Points:
    """Binned spectra (all, or the indices `spectra`) in the plane of two numeric bin properties."""
    for column in (x, y):
        if column not in data.numeric_bin_columns:
            raise KeyError(f"{column!r} is not a numeric column of {data.path}/bins.parquet")
    kdims = [hv.Dimension(x, label=label(x)), hv.Dimension(y, label=label(y))]
    frame = data.bins[[x, y]] if spectra is None else data.bins[[x, y]].iloc[spectra]
    return hv.Points(frame, kdims=kdims)


def spectra_base(data: ExplorerData, x: str, y: str):
    """Every binned spectrum in grey: datashaded (re-aggregated on zoom) when there are many."""
    points = spectra_points(data, x, y)
    if data.n_bins > DATASHADE_ABOVE:
        return rasterize(points).opts(cmap=["#d9d9d9", "#525252"], cnorm="eq_hist", tools=["box_select"],
                                      colorbar=False)
    return points.opts(color="#969696", size=3, alpha=0.4, tools=["box_select"])


def highlight(data: ExplorerData, picked):
    """The selected spectra in the selection colour (datashaded when the survey is big)."""
    if data.n_bins > DATASHADE_ABOVE:
        return dynspread(rasterize(picked).opts(cmap=[SELECTION_COLOUR], cnorm="eq_hist", colorbar=False))
    return picked.opts(color=SELECTION_COLOUR, size=3, alpha=0.8)


def spectra_plot(data: ExplorerData, x: str, y: str, spectra: np.ndarray | None):
    """All binned spectra in the (x, y) plane of two bin properties, with `spectra` highlighted."""
    picked = spectra_points(data, x, y, np.zeros(0, np.int64) if spectra is None else spectra)
    return (spectra_base(data, x, y) * highlight(data, picked)).opts(
        hv.opts.Overlay(title=f"{data.n_bins:,} binned spectra — selection in red"))


class SpectraScatter:
    """Binned spectra in a plane of two properties; box-selecting spectra selects them and their galaxies.
    The grey layer of all spectra is built when the axes change; only the red selection layer follows the state."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        columns = data.numeric_bin_columns
        x = "radius_re" if "radius_re" in columns else columns[0]
        y = "log_age_lw" if "log_age_lw" in columns else columns[min(1, len(columns) - 1)]
        self.x = pn.widgets.Select(label="x", options=columns, value=x, width=180)
        self.y = pn.widgets.Select(label="y", options=columns, value=y, width=180)
        self.pane = pn.pane.HoloViews(sizing_mode="stretch_width", height=420)
        self._rebuild()
        self.x.param.watch(self._rebuild, "value")
        self.y.param.watch(self._rebuild, "value")
        self.view = pn.Column(pn.Row(self.x, self.y), self.pane, sizing_mode="stretch_width")

    def _picked(self, x, y, galaxies, spectra):
        nothing = galaxies is None and spectra is None  # whole survey: no highlight
        return spectra_points(self.data, x, y, np.zeros(0, np.int64) if nothing else self.state.selected_spectra)

    def _rebuild(self, *_):
        x, y = self.x.value, self.y.value
        picked = hv.DynamicMap(pn.bind(self._picked, x=x, y=y, galaxies=self.state.param.galaxies,
                                       spectra=self.state.param.spectra))
        plot = (spectra_base(self.data, x, y) * highlight(self.data, picked)).opts(hv.opts.Overlay(
            title=f"{self.data.n_bins:,} binned spectra — selection in red", responsive=True, height=420,
            active_tools=["box_select"]))
        self.bounds = hv.streams.BoundsXY(source=plot)  # Selection1D does not fire on datashaded plots (holoviews #6436)
        self.bounds.param.watch(self._on_bounds, "bounds")
        self.pane.object = plot

    def _on_bounds(self, event) -> None:
        if event.new is None:
            return
        x0, y0, x1, y1 = event.new
        xs, ys = self.data.bins[self.x.value].to_numpy(), self.data.bins[self.y.value].to_numpy()
        inside = np.flatnonzero((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))
        if inside.size:
            self.state.select_spectra(inside, how=f"box on spectra: {self.x.value} ∈ [{x0:.3g}, {x1:.3g}], "
                                                  f"{self.y.value} ∈ [{y0:.3g}, {y1:.3g}]")
