"""Galaxy images: a paged gallery of the selection, and the detail view of one galaxy — gri image, the DESOM-1
node of every Voronoi bin (where in the galaxy each spectral type sits), its fingerprint and its nearest
neighbours in the chosen embedding.
"""
from __future__ import annotations

import json

import holoviews as hv
import numpy as np
import panel as pn
import param
from panel.reactive import ReactiveHTML

from explorer.anomaly_explained import anomaly_explained
from explorer.data import KEY_COLUMNS, ExplorerData, label, thumbnail_uri
from explorer.labelling import FocusLabels
from explorer.state import SelectionState
from precompute import schema

PER_PAGE = 12
N_NEIGHBOURS = 6
# Corners of the 2-D colour key of SOM nodes: neighbouring nodes get similar colours on the galaxy map.
CORNERS = np.array([[0.85, 0.15, 0.15], [0.95, 0.75, 0.1], [0.15, 0.35, 0.85], [0.1, 0.7, 0.45]])


def gallery_page(galaxies: np.ndarray, page: int, per_page: int = PER_PAGE) -> np.ndarray:
    """Galaxies on `page` (0-based), clipped to the last page."""
    n_pages = max(1, -(-len(galaxies) // per_page))
    page = min(max(page, 0), n_pages - 1)
    return galaxies[page * per_page: (page + 1) * per_page]


def node_colours(grid: dict) -> np.ndarray:
    """RGB in [0, 1] for every node k: bilinear blend of four corner colours over (row, col)."""
    row, col = np.divmod(np.arange(grid["rows"] * grid["cols"]), grid["cols"])
    u = (row / max(grid["rows"] - 1, 1))[:, None]
    v = (col / max(grid["cols"] - 1, 1))[:, None]
    return (1 - u) * (1 - v) * CORNERS[0] + (1 - u) * v * CORNERS[1] + u * (1 - v) * CORNERS[2] + u * v * CORNERS[3]


def bin_node_image(data: ExplorerData, g: int, highlight=()) -> np.ndarray:
    """[ny, nx, 3] image: each spaxel in the colour of its bin's DESOM-1 node, white outside the bins.
    Bins in `highlight` nodes keep full colour while the others fade, so a brushed node lights up its bins."""
    spaxel_bins = data.bundle.read(schema.SPAXEL_BINS)[data.galaxies["galaxy_id"].iat[g]]
    spectra = data.spectra_of(np.array([g]))
    lookup = np.full(int(data.bins["bin_id"].to_numpy()[spectra].max()) + 2 if spectra.size else 1, -1)
    lookup[data.bins["bin_id"].to_numpy()[spectra]] = data.bin_node[spectra]
    nodes = np.where(spaxel_bins >= 0, lookup[np.clip(spaxel_bins, 0, None)], -1)
    colours = node_colours(data.desom1)
    image = np.where((nodes >= 0)[..., None], colours[np.clip(nodes, 0, None)], 1.0)
    if len(highlight):
        faded = (nodes >= 0) & ~np.isin(nodes, list(highlight))
        image[faded] = 0.2 * image[faded] + 0.8
    return image


def bin_map_plot(data: ExplorerData, g: int, highlight=()) -> hv.RGB:
    image = bin_node_image(data, g, highlight)
    ny, nx = image.shape[:2]
    pixel = 0.5  # arcsec per spaxel as in MaNGA; the bins' own centroids carry the real scale
    bounds = (-nx * pixel / 2, -ny * pixel / 2, nx * pixel / 2, ny * pixel / 2)
    extra = " (brushed lit)" if len(highlight) else ""
    return hv.RGB(image[::-1], bounds=bounds, kdims=["x [arcsec]", "y [arcsec]"]).opts(
        title=f"Node of each bin{extra}", frame_width=180, frame_height=180, tools=["hover"])


def som_colour_key(grid: dict) -> hv.RGB:
    colours = node_colours(grid).reshape(grid["rows"], grid["cols"], 3)
    return hv.RGB(colours[::-1], bounds=(0, 0, grid["cols"], grid["rows"]), kdims=["SOM column", "SOM row"]).opts(
        title="key", frame_width=70, frame_height=70, xaxis=None, yaxis=None, toolbar=None)


def fingerprint_plot(data: ExplorerData, g: int) -> hv.Image:
    fingerprint = np.asarray(data.bundle.read(schema.FINGERPRINTS)[g], float)
    rows, cols = fingerprint.shape
    return hv.Image(fingerprint[::-1], bounds=(0, 0, cols, rows), kdims=["SOM column", "SOM row"],
                    vdims=[hv.Dimension("f", label="fingerprint (0–1)")]).opts(
        cmap="viridis", title="Fingerprint", frame_width=130, frame_height=130, colorbar=False,
        xaxis=None, yaxis=None, tools=["hover"])


def neighbours(data: ExplorerData, embedding: str, g: int, k: int = N_NEIGHBOURS) -> list[tuple[int, float]]:
    """The k nearest training galaxies of g in `embedding` (indices g and distances), nearest first."""
    return [(int(j), float(d)) for j, d in zip(data.knn(embedding)[g, :k], data.knn_distance(embedding)[g, :k])]


def galaxy_summary(data: ExplorerData, g: int) -> str:
    row = data.galaxies.iloc[g]
    parts = []
    for column in KEY_COLUMNS:
        if column in row:
            value = row[column]
            parts.append(f"{label(column)}: **{value:.2f}**" if isinstance(value, float) else f"{label(column)}: **{value}**")
    return f"### {row['galaxy_id']} ({row['split']})\n" + " · ".join(parts)


class ThumbnailGrid(ReactiveHTML):
    """Thumbnails, each with its galaxy id as a button (opens it in the detail view) and a caption under it.

    One Bokeh model for the whole grid: a new selection changes one property, so the browser lays the page out
    once. As one pane, button and caption per card it changed ~36 models, and the browser relaid out (and
    repainted every plot of) the gallery's root for each: ~1 s of the brush-to-redraw time on the demo bundle."""

    cards = param.List(default=[], precedence=-1, doc="[{'uri', 'name', 'caption'}] in the order shown")
    # What the browser gets: the cards as JSON text. Panel cannot send a list of dicts that becomes empty
    # (it takes an empty list for a list of models and fails on the old dicts: TypeError, unhashable 'dict').
    cards_json = param.String(default="[]")
    size = param.Integer(default=84, doc="thumbnail size in pixels")
    clicked = param.List(default=[], doc="[card index, click time]: set by the browser when a button is pressed")

    _template = '<div id="grid" class="thumbnail-grid" style="display:flex;flex-wrap:wrap"></div>'
    _scripts = {
        "render": """
          grid.replaceChildren(...JSON.parse(data.cards_json).map((card, i) => {
            const cell = document.createElement("div");
            cell.className = "gallery-card";
            cell.style.cssText = `margin:4px;width:${data.size + 4}px`;
            const img = document.createElement("img");
            Object.assign(img, {src: card.uri, width: data.size, height: data.size});
            img.style.margin = "2px";
            const button = document.createElement("button");
            button.className = "gallery-id";
            button.textContent = card.name;
            button.style.cssText = `width:${data.size}px;margin:2px;font-size:11px;cursor:pointer;border:1px solid #ccc;border-radius:3px;background:#f7f7f7`;
            button.onclick = () => { data.clicked = [i, Date.now()] };
            const caption = document.createElement("pre");
            caption.textContent = card.caption;
            caption.style.cssText = "font-size:10px;color:#666;margin:0;white-space:pre-wrap";
            cell.append(img, button, caption);
            return cell;
          }))""",
        "cards_json": "self.render()",
    }

    def __init__(self, state: SelectionState, size: int = 84, **params):
        super().__init__(size=size, sizing_mode="stretch_width", **params)
        self.selection, self.galaxies = state, []
        self.param.watch(self._open, ["clicked"])

    def show(self, data: ExplorerData, galaxies, captions=None) -> None:
        galaxies = [int(g) for g in galaxies]
        captions = list(captions) if captions is not None else [""] * len(galaxies)
        cards = [{"uri": thumbnail_uri(data.thumbnail_path(g)), "name": str(data.galaxies["galaxy_id"].iat[g]),
                  "caption": caption} for g, caption in zip(galaxies, captions)]
        self.galaxies = galaxies
        if cards != self.cards:  # unchanged: send nothing
            self.cards = cards
            self.cards_json = json.dumps(cards)

    def _open(self, event) -> None:
        if event.new and 0 <= event.new[0] < len(self.galaxies):
            self.selection.focus = self.galaxies[event.new[0]]


class Gallery:
    """Paged thumbnails of the selection; clicking one opens it in the galaxy detail view."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state, self.page = data, state, 0
        self.grid = ThumbnailGrid(state)
        self.header = pn.pane.Markdown("", margin=(0, 8), css_classes=["gallery-header"])
        self.previous = pn.widgets.Button(label="◀", width=40, color="light")
        self.next = pn.widgets.Button(label="▶", width=40, color="light")
        self.previous.on_click(lambda _: self.turn(-1))
        self.next.on_click(lambda _: self.turn(+1))
        self.view = pn.Column(pn.Row(self.previous, self.next, self.header),
                              self.grid, sizing_mode="stretch_width")
        state.param.watch(self._reset, ["galaxies"])
        self.render()

    def _reset(self, *_):
        self.page = 0
        self.render()

    def turn(self, step: int) -> None:
        self.page += step
        self.render()

    def render(self) -> None:
        chosen = self.state.selected
        n_pages = max(1, -(-len(chosen) // PER_PAGE))
        self.page = min(max(self.page, 0), n_pages - 1)
        self.grid.show(self.data, gallery_page(chosen, self.page))
        self.header.object = f"**{len(chosen):,} galaxies** in the selection — page {self.page + 1} of {n_pages}"


class GalaxyDetail:
    """One galaxy in depth: image, bin → node map (lit up by brushed nodes), fingerprint, nearest neighbours."""

    def __init__(self, data: ExplorerData, state: SelectionState):
        self.data, self.state = data, state
        self.summary = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["galaxy-summary"])
        self.image = pn.pane.PNG(None, width=170, height=170)
        plots = []
        if data.desom1:
            plots.append(hv.DynamicMap(pn.bind(self._bin_map, focus=state.param.focus, nodes=state.param.nodes)))
            plots.append(som_colour_key(data.desom1))
        if data.bundle.has("fingerprints"):
            plots.append(hv.DynamicMap(pn.bind(self._fingerprint, focus=state.param.focus)))
        self.maps = pn.pane.HoloViews(hv.Layout(plots).opts(shared_axes=False, toolbar=None) if plots else None)
        self.neighbours = ThumbnailGrid(state)
        self.neighbour_title = pn.pane.Markdown("")
        self.labels = FocusLabels(data, state)
        self.anomaly = anomaly_explained(data, state)
        self.view = pn.Column(
            self.summary,
            self.labels.view,
            pn.FlexBox(self.image, self.maps),
            self.neighbour_title,
            self.neighbours,
            *([self.anomaly.view] if self.anomaly else []),
            sizing_mode="stretch_width",
        )
        state.param.watch(self.render, ["focus", "embedding"])
        self.render()

    @property
    def galaxy(self) -> int:
        return self.state.focus if self.state.focus is not None else 0

    def _bin_map(self, focus, nodes):
        return bin_map_plot(self.data, self.galaxy, nodes)

    def _fingerprint(self, focus):
        return fingerprint_plot(self.data, self.galaxy)

    def render(self, *_) -> None:
        g, data = self.galaxy, self.data
        self.summary.object = galaxy_summary(data, g)
        self.image.object = str(data.thumbnail_path(g))
        embedding = self.state.embedding
        near = neighbours(data, embedding, g) if embedding else []
        self.neighbour_title.object = (f"**Nearest neighbours in the {embedding} embedding** (distance)"
                                       if near else "")
        self.neighbours.show(data, [j for j, _ in near], [f"d = {d:.3f}" for _, d in near])
