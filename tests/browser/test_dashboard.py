"""The dashboard in headless Chromium: linked selection, hover, SOM taps, colour-by and CSV export.

Plot positions come from BokehJS itself (each figure's frame and scales), so brushes and taps land on known
data coordinates, and the expected galaxies are computed from the bundle the server is showing.
"""
import io
import re
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urljoin
from urllib.request import urlopen

import numpy as np
import pandas as pd
import pytest
from dashboard_page import (
    box_select,
    brushed_galaxies,
    count_text,
    figure,
    wait_for_change,
)
from PIL import Image

from explorer.colours import (
    EMPTY_COLOUR,
    HITS_CMAP,
    PICKED_NODE_COLOUR,
    SELECTION_COLOUR,
)
from explorer.som_grid import CELL, OUTLINE, node_xy
from precompute import schema

pytestmark = pytest.mark.browser

@pytest.mark.parametrize("test_bundle", ["real", "synthetic"], indirect=True)
def test_page_loads_without_console_errors(dashboard, test_bundle, artifacts):
    assert "whole survey" in count_text(dashboard)
    for title in ("Galaxies in", "DESOM-1", "DESOM-2", "Prototype spectra of"):
        figure(dashboard, title)
    dashboard.screenshot(path=artifacts / "01-loaded.png", full_page=True)
    assert not dashboard.errors
    # nor in the server's log: Bokeh's model checks (W-1xxx / E-1xxx) run on every page a server builds
    server_log = (artifacts / f"server-{Path(test_bundle).name}.log").read_text()
    assert not re.findall(r"[WE]-1\d{3} \(\w+\).*", server_log)


@pytest.mark.parametrize("test_bundle", ["sed"], indirect=True)
def test_bundle_of_single_spectra_loads_with_its_maps(dashboard, bundle, artifacts):
    """Seed 002 (data/configs/sed.json): the objects are spectra; the page shows DESOM-1, the MiniSom map of the
    latent codes and the spectra as thumbnails, and no figure that needs images."""
    assert f"{bundle.n_galaxies:,} galaxies" in count_text(dashboard)
    for title in ("Galaxies in", "DESOM-1", "MiniSom of the latent", "Prototype spectra of"):
        figure(dashboard, title)
    assert dashboard.get_by_text("Image-VAE").count() == 0
    dashboard.screenshot(path=artifacts / "sed-loaded.png", full_page=True)
    assert not dashboard.errors


@pytest.mark.parametrize("test_bundle", ["real", "synthetic"], indirect=True)
def test_box_selection_updates_table_and_hit_map(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    xy = np.asarray(bundle.umap(embedding))
    lo, hi = xy.min(axis=0) - 0.01, np.median(xy, axis=0)
    expected = brushed_galaxies(bundle, embedding, lo, hi)
    assert 0 < len(expected) < bundle.n_galaxies
    som = dashboard.locator(".desom1-map")
    som_before = som.screenshot()
    before, som_title = count_text(dashboard), figure(dashboard, "DESOM-1")["title"]
    box_select(dashboard, figure(dashboard, "Galaxies in", [(lo[0], hi[1]), (hi[0], lo[1])])["points"])
    after = wait_for_change(dashboard, lambda: count_text(dashboard), before)
    assert after.startswith(f"{len(expected)} galaxies selected")
    title = wait_for_change(dashboard, lambda: figure(dashboard, "DESOM-1")["title"], som_title)
    n_spectra = int(bundle.galaxies["n_bins"].iloc[expected].sum())
    assert title == f"DESOM-1: {n_spectra:,} selected binned spectra per node"
    assert som.screenshot() != som_before  # the hit map was recoloured
    dashboard.screenshot(path=artifacts / "02-box-selection.png", full_page=True)


def test_tapping_a_som_node_updates_spectra_and_gallery(dashboard, bundle, artifacts):
    grid = bundle.desom1
    busiest = int(np.argmax(bundle.bundle.read(schema.DESOM1_HITS)))
    row, col = divmod(busiest, grid["cols"])
    spectra_title = figure(dashboard, "Prototype spectra of")["title"]
    gallery_before = dashboard.get_by_text(re.compile("in the selection — page")).first.inner_text()
    (x, y), = figure(dashboard, "DESOM-1", [(col, row)])["points"]
    dashboard.mouse.click(x, y)
    new_title = wait_for_change(dashboard, lambda: figure(dashboard, "Prototype spectra of")["title"], spectra_title)
    assert new_title == f"Prototype spectra of node ({row}, {col})"
    members = np.unique(bundle.bin_galaxy[bundle.bin_node == busiest])
    gallery = wait_for_change(
        dashboard, lambda: dashboard.get_by_text(re.compile("in the selection — page")).first.inner_text(),
        gallery_before)
    assert gallery.startswith(f"{len(members)} galaxies in the selection")
    first_id = bundle.galaxies["galaxy_id"].iat[members[0]]
    assert dashboard.get_by_role("button", name=first_id).first.is_visible()
    dashboard.screenshot(path=artifacts / "03-som-tap.png", full_page=True)


def test_hover_shows_the_galaxy_id(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    xy = np.asarray(bundle.umap(embedding))
    # the most isolated galaxy, so the tooltip is about it alone
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 1e9
    g = int(np.argmax(distance.min(axis=1)))
    (x, y), = figure(dashboard, "Galaxies in", [xy[g]])["points"]
    dashboard.mouse.move(x - 3, y - 3)
    dashboard.mouse.move(x, y, steps=3)
    tooltip = dashboard.locator(".galaxy-tooltip").first
    tooltip.wait_for(timeout=15_000)
    assert bundle.galaxies["galaxy_id"].iat[g] in tooltip.inner_text()
    # the thumbnail is a file the server serves (explorer.serve_thumbnails), not an image inlined in the page
    image = tooltip.locator("img")
    assert image.get_attribute("src").startswith("thumbnails/")
    dashboard.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                                timeout=15_000)
    dashboard.screenshot(path=artifacts / "04-hover.png")
    # and the route serves thumbnails only: a path climbing out of the thumbnails folder is refused
    key = image.get_attribute("src").split("/")[1]
    outside = urljoin(dashboard.url, f"thumbnails/{key}/%2E%2E/manifest.json")
    with pytest.raises(HTTPError) as refused:
        urlopen(outside, timeout=10)
    assert refused.value.code in (403, 404)


def test_csv_download_has_exactly_the_selection(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    xy = np.asarray(bundle.umap(embedding))
    lo, hi = np.median(xy, axis=0), xy.max(axis=0) + 0.01
    expected = brushed_galaxies(bundle, embedding, lo, hi)
    before = count_text(dashboard)
    box_select(dashboard, figure(dashboard, "Galaxies in", [(lo[0], hi[1]), (hi[0], lo[1])])["points"])
    wait_for_change(dashboard, lambda: count_text(dashboard), before)
    with dashboard.expect_download() as download:
        dashboard.get_by_role("button", name="Download CSV").click()
    path = artifacts / "selection.csv"
    download.value.save_as(path)
    table = pd.read_csv(path, comment="#")
    assert sorted(table["galaxy_id"]) == sorted(bundle.galaxies["galaxy_id"].iloc[expected])
    truth = bundle.galaxies.set_index("galaxy_id").loc[table["galaxy_id"]]
    assert np.allclose(table["log_mstar"], truth["log_mstar"]) and list(table["morphology"]) == list(truth["morphology"])
    assert bundle.bundle.id in path.read_text()


def test_colour_by_recolours_the_scatter(dashboard, artifacts):
    before = figure(dashboard, "Galaxies in")
    assert before["mappers"][0] == "LinearColorMapper"
    scatter = dashboard.locator(".galaxy-scatter")
    image_before = scatter.screenshot()
    dashboard.locator("select", has=dashboard.locator("option", has_text="Specific SFR")).select_option(
        label="morphology (category)")
    after = wait_for_change(dashboard, lambda: figure(dashboard, "Galaxies in")["title"], before["title"])
    assert "coloured by morphology" in after
    assert figure(dashboard, "Galaxies in")["mappers"][0] == "CategoricalColorMapper"
    assert scatter.screenshot() != image_before
    dashboard.screenshot(path=artifacts / "05-colour-by.png", full_page=True)


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


def hit_map_colours(hits: np.ndarray) -> np.ndarray:
    """RGB of each node as the hit map must draw it: HITS_CMAP over 0..max hits, as BokehJS's linear colour mapper
    indexes a palette, and EMPTY_COLOUR where the selection has no member."""
    palette = np.array([rgb(c) for c in HITS_CMAP])
    index = np.minimum((hits / max(hits.max(), 1) * len(palette)).astype(int), len(palette) - 1)
    return np.where(hits[:, None] > 0, palette[index], rgb(EMPTY_COLOUR))


def som_pixels(page, grid):
    """The DESOM-1 map's rendered pixels (RGB), each node's centre pixel in them (node k = row * cols + col) and
    the node spacing in pixels."""
    som = page.locator(".desom1-map")
    x, y = node_xy(grid)
    centres = np.asarray(figure(page, "DESOM-1", np.column_stack([x, y]))["points"])
    box = som.bounding_box()
    image = np.asarray(Image.open(io.BytesIO(som.screenshot())).convert("RGB"), dtype=int)
    return image, np.rint(centres - [box["x"], box["y"]]).astype(int), centres[1, 0] - centres[0, 0]


def outline_pixels(image, centres, step, tolerance=25) -> np.ndarray:
    """(x, y) of the map-frame pixels in an outline colour: picked nodes' cyan, or the red of galaxy selections."""
    x0, y0 = (centres.min(axis=0) - step / 2).astype(int)
    x1, y1 = (centres.max(axis=0) + step / 2).astype(int)
    frame = image[y0:y1, x0:x1]
    near = [np.abs(frame - rgb(c)).max(axis=2) <= tolerance for c in (PICKED_NODE_COLOUR, SELECTION_COLOUR)]
    ys, xs = np.nonzero(np.logical_or(*near))
    return np.column_stack([xs + x0, ys + y0])


def test_box_selection_hit_map_shows_hit_colours_not_outlines(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    xy = np.asarray(bundle.umap(embedding))
    lo, hi = xy.min(axis=0) - 0.01, np.median(xy, axis=0)
    grid = bundle.desom1
    brushed = np.isin(bundle.bin_galaxy, brushed_galaxies(bundle, embedding, lo, hi))
    hits = np.bincount(bundle.bin_node[brushed], minlength=grid["rows"] * grid["cols"])
    title = figure(dashboard, "DESOM-1")["title"]
    box_select(dashboard, figure(dashboard, "Galaxies in", [(lo[0], hi[1]), (hi[0], lo[1])])["points"])
    title = wait_for_change(dashboard, lambda: figure(dashboard, "DESOM-1")["title"], title)
    dashboard.wait_for_timeout(1000)  # let the recoloured map draw
    image, centres, step = som_pixels(dashboard, grid)
    at_centres = image[centres[:, 1], centres[:, 0]]
    Image.fromarray(image.astype(np.uint8)).save(artifacts / "06-hit-map-after-box-selection.png")
    assert len({tuple(colour) for colour in at_centres}) > 2
    # every node in the colour of the selection's hits (not the whole survey's), and not one outline pixel
    wrong = np.flatnonzero(np.abs(at_centres - hit_map_colours(hits)).max(axis=1) > 12)
    assert wrong.size == 0, f"{wrong.size} of {len(hits)} nodes not in the colour of their hits, e.g. {wrong[:5]}"
    assert len(outline_pixels(image, centres, step)) == 0

    # a node picked on the map, and only it, is outlined (so the outline detector above does see outlines)
    busiest = int(np.argmax(hits))
    x, y = node_xy(grid)
    (px, py), = figure(dashboard, "DESOM-1", [(x[busiest], y[busiest])])["points"]
    dashboard.mouse.click(px, py)
    wait_for_change(dashboard, lambda: figure(dashboard, "DESOM-1")["title"], title)
    dashboard.mouse.move(1, 1)  # no tooltip over the map
    dashboard.wait_for_timeout(1000)
    image, centres, step = som_pixels(dashboard, grid)
    Image.fromarray(image.astype(np.uint8)).save(artifacts / "07-hit-map-node-picked.png")
    outline = outline_pixels(image, centres, step)
    assert len(outline) > 0
    low, high = outline.min(axis=0), outline.max(axis=0)  # one ring around the picked node, none elsewhere
    assert (np.abs((low + high) / 2 - centres[busiest]) <= 1.5).all() and (high - low <= CELL + OUTLINE + 1).all()
