"""The seeds' figures in headless Chromium on the tiny real build: clusters as a colour-by and a selection with
the Fig. 7 panel, the Fig. 10 correlation table, the image-VAE traversals and latent plane, and the twins switch of
the population comparison against what `python -m precompute compare --twins` prints.

Each test also saves a screenshot of its view (the README's pictures come from these).
"""
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from dashboard_page import box_select, count_text, figure, wait_for_change

from explorer.colours import category_colours
from explorer.correlations import component_rows
from explorer.data import cluster_column, label
from explorer.image_features import plane_features
from precompute import schema
from precompute.compare import twins

pytestmark = pytest.mark.browser

# Each glyph renderer of a figure found by the start of its title: glyph type, fill colour, number of points.
# Only figures on the page: a redrawn plot's replaced view can linger in Bokeh's index with the same title.
RENDERERS_JS = """(prefix) => {
  for (const view of Bokeh.index.all_views()) {
    const title = view.model.title;
    if (!view.frame || !view.el.isConnected || !title || typeof title.text !== "string"
        || !title.text.startsWith(prefix)) continue;
    return view.model.renderers.filter(r => r.data_source).map(r => ({
      glyph: r.glyph.type, n: r.data_source.get_length(),
      fill: (r.glyph.fill_color && typeof r.glyph.fill_color.value === "string") ? r.glyph.fill_color.value : null,
      fill_alpha: r.glyph.fill_alpha ? r.glyph.fill_alpha.value : null}));
  }
  return null;
}"""
# Page coordinates of a cell of a figure with categorical axes (factors x, y).
CELL_JS = """([prefix, x, y]) => {
  for (const view of Bokeh.index.all_views()) {
    const title = view.model.title;
    if (!view.frame || !title || typeof title.text !== "string" || !title.text.startsWith(prefix)) continue;
    const rect = view.canvas_view.events_el.getBoundingClientRect();
    return [rect.left + view.frame.x_scale.compute(x), rect.top + view.frame.y_scale.compute(y)];
  }
  return null;
}"""


def open_tab(page, name):
    page.locator(".seed-figures").get_by_text(name).first.click()
    page.locator(".seed-figures").first.scroll_into_view_if_needed()


def renderers(page, prefix):
    for _ in range(120):  # the tab's plots draw after the click
        found = page.evaluate(RENDERERS_JS, prefix)
        if found:
            return found
        page.wait_for_timeout(250)
    raise AssertionError(f"no plot titled {prefix!r} on the page")


def cluster_point_sets(page, prefix, colours):
    """{cluster colour: points} of the plot's point sets in a cluster colour."""
    return {r["fill"]: r["n"] for r in renderers(page, prefix)
            if r["glyph"] == "Scatter" and r["fill"] in colours.values() and r["fill_alpha"] != 0}


def clusters_of(bundle, embedding, clustering):
    return bundle.bundle.read(schema.EMBEDDING_CLUSTERS, embedding=embedding)[clustering].to_numpy()


def test_colour_by_a_kmeans_cluster_and_select_one(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    labels = clusters_of(bundle, embedding, "kmeans_k3")
    open_tab(dashboard, "Clusters")
    dashboard.locator(".seed-figures").get_by_role("button", name="3", exact=True).click()
    cluster = int(np.argmax(np.bincount(labels)))  # the biggest, so the table has rows to show
    members = np.flatnonzero(labels == cluster)
    button = dashboard.get_by_role("button", name=f"cluster {cluster} · {len(members)} galaxies")
    button.wait_for(timeout=30_000)

    before = figure(dashboard, "Galaxies in")["title"]
    dashboard.get_by_role("button", name="Colour by these clusters").click()
    title = wait_for_change(dashboard, lambda: figure(dashboard, "Galaxies in")["title"], before)
    column = cluster_column(embedding, "kmeans_k3")
    assert title.endswith(f"coloured by {label(column)}")
    assert figure(dashboard, "Galaxies in")["mappers"][0] == "CategoricalColorMapper"
    colour_by = dashboard.locator("select", has=dashboard.locator("option", has_text="Specific SFR"))
    assert colour_by.locator("option:checked").inner_text() == label(column)  # the sidebar's colour-by follows

    before = count_text(dashboard)
    button.click()
    after = wait_for_change(dashboard, lambda: count_text(dashboard), before)
    assert after.startswith(f"{len(members)} galaxies selected — cluster {cluster} of {label(column)}")
    ids = bundle.galaxies["galaxy_id"].iloc[members].tolist()
    rows = dashboard.locator(".tabulator-row .tabulator-cell[tabulator-field='galaxy_id']")
    wait_for_change(dashboard, lambda: rows.all_inner_texts()[:1], [])
    assert rows.all_inner_texts() == ids[:10]  # the table's first page: the cluster's members, in survey order
    with dashboard.expect_download() as download:
        dashboard.get_by_role("button", name="Download CSV").click()
    path = artifacts / "seed-cluster-selection.csv"
    download.value.save_as(path)
    assert sorted(pd.read_csv(path, comment="#")["galaxy_id"]) == sorted(ids)  # exactly its members
    dashboard.locator(".seed-figures").first.screenshot(path=artifacts / "seed-clusters.png")


def test_fig7_panel_has_one_point_set_per_cluster(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    counts = np.bincount(clusters_of(bundle, embedding, "gmm_k4"), minlength=4)
    column = cluster_column(embedding, "gmm_k4")
    colours = category_colours(column, bundle.galaxies[column])
    expected = {colours[str(c)]: int(n) for c, n in enumerate(counts)}
    assert len(expected) == 4  # four distinct colours
    open_tab(dashboard, "Clusters")
    figures = dashboard.locator(".seed-figures")
    figures.get_by_role("button", name="GMM", exact=True).click()
    # every button of the new clustering is on the page before the next click (the k buttons are redrawn too)
    figures.get_by_text(re.compile(r"GMM, k = \d")).first.wait_for(timeout=30_000)
    figures.get_by_role("button", name="4", exact=True).click()
    for c, n in enumerate(counts):
        dashboard.get_by_role("button", name=f"cluster {c} · {n} galaxies").wait_for(timeout=30_000)
    for prefix in ("Star-formation main sequence", "WHAN diagram"):
        wait_for_change(dashboard, lambda: cluster_point_sets(dashboard, prefix, colours) == expected, False)
    assert any(r["glyph"] == "VBar" for r in renderers(dashboard, "Morphology composition"))
    # the selection is drawn on both diagrams: one ring per selected galaxy
    biggest = int(np.argmax(counts))
    before = count_text(dashboard)
    dashboard.get_by_role("button", name=f"cluster {biggest} · {counts[biggest]} galaxies").click()
    wait_for_change(dashboard, lambda: count_text(dashboard), before)
    for prefix in ("Star-formation main sequence", "WHAN diagram"):
        rings = lambda: [r["n"] for r in renderers(dashboard, prefix) if r["glyph"] == "Scatter" and r["fill_alpha"] == 0]
        wait_for_change(dashboard, lambda: counts[biggest] in rings(), False)
    dashboard.wait_for_timeout(500)
    figures.first.screenshot(path=artifacts / "seed-clusters-gmm.png")


def test_clicking_a_correlation_cell_colours_the_scatter(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    table = bundle.bundle.read(schema.EMBEDDING_CORRELATION, embedding=embedding)
    open_tab(dashboard, "Embedding × properties")
    prefix = f"Principal components of the {embedding} embedding"
    renderers(dashboard, prefix)
    dashboard.wait_for_timeout(500)
    before = figure(dashboard, "Galaxies in")["title"]
    for column in ("log_age_lw", "ew_halpha"):
        x, y = dashboard.evaluate(CELL_JS, [prefix, label(column), component_rows(table)[1]])
        dashboard.mouse.click(x, y)
        before = wait_for_change(dashboard, lambda: figure(dashboard, "Galaxies in")["title"], before)
        assert before.endswith(f"coloured by {label(column)}")
    dashboard.mouse.move(1, 1)
    dashboard.locator(".seed-figures").first.screenshot(path=artifacts / "seed-correlations.png")


def test_traversal_strips_and_latent_plane(dashboard, bundle, artifacts):
    open_tab(dashboard, "Image-VAE features")
    rows = dashboard.locator(".traversal-row")
    rows.first.wait_for(timeout=60_000)
    latent_dim = bundle.bundle.manifest["config"]["image_vae"]["latent_dim"]
    assert rows.count() == latent_dim == bundle.bundle.read(schema.IMAGE_VAE_TRAVERSALS).shape[0]
    assert all(rows.nth(j).locator("img").count() == 1 for j in range(latent_dim))

    # a box on the latent plane selects the galaxies inside it
    latent = np.asarray(bundle.bundle.read(schema.EMBEDDING_VECTORS, embedding="image_vae"), float)
    a, b = plane_features(bundle, latent)
    xy = latent[:, [a, b]]
    lo, hi = xy.min(axis=0) - 1e-4, np.median(xy, axis=0)
    expected = np.flatnonzero(((xy >= lo) & (xy <= hi)).all(axis=1))
    renderers(dashboard, "Image-VAE latent plane")
    dashboard.locator(".latent-plane").scroll_into_view_if_needed()
    dashboard.wait_for_timeout(500)
    before = count_text(dashboard)
    box_select(dashboard, figure(dashboard, "Image-VAE latent plane", [(lo[0], hi[1]), (hi[0], lo[1])])["points"])
    after = wait_for_change(dashboard, lambda: count_text(dashboard), before)
    assert after.startswith(f"{len(expected)} galaxies selected — box/lasso on image-VAE features {a} and {b}")
    dashboard.mouse.move(1, 1)
    dashboard.wait_for_timeout(500)
    dashboard.locator(".seed-figures").first.screenshot(path=artifacts / "seed-image-features.png")


SUMMARY = re.compile(r"A: (\d+) galaxies .*?(?:, (\d+) with a twin in B)? · B: (\d+) galaxies .*?"
                     r"(?:, (\d+) with a twin in A)? · KS D = ([\d.]+), p = ([\d.e+-]+)")


def summary(page):
    text = page.get_by_text(SUMMARY).first.inner_text()
    match = SUMMARY.search(text)
    assert match, text
    return match.groups()


def twins_example(bundle, embedding):
    """(k, cluster, members) of the k-means cluster with the most twins outside it in the whole survey: with A = the
    whole survey and B = the cluster, every B galaxy is its own twin and A keeps those with a twin in B."""
    everyone, best = np.ones(bundle.n_galaxies, bool), None
    for k in bundle.bundle.manifest["config"]["projections"]["cluster_ks"]:
        labels = clusters_of(bundle, embedding, f"kmeans_k{k}")
        for cluster in np.unique(labels):
            members = labels == cluster
            outside = twins(bundle.galaxies, everyone, members)[0].sum() - members.sum()
            if members.sum() >= 2 and (best is None or outside > best[0]):
                best = (outside, k, int(cluster), np.flatnonzero(members))
    return best[1:]


def test_twins_switch_gives_what_compare_twins_prints(dashboard, bundle, artifacts):
    embedding = next(iter(bundle.embeddings))
    k, cluster, members = twins_example(bundle, embedding)
    dashboard.get_by_role("button", name="Pin selection as A").click()
    open_tab(dashboard, "Clusters")
    dashboard.locator(".seed-figures").get_by_role("button", name=str(k), exact=True).click()
    before = count_text(dashboard)
    dashboard.get_by_role("button", name=f"cluster {cluster} · {len(members)} galaxies").click()
    wait_for_change(dashboard, lambda: count_text(dashboard), before)
    dashboard.get_by_text(SUMMARY).first.wait_for(timeout=30_000)
    plain = summary(dashboard)
    dashboard.locator(".twins-switch").click()
    twins = wait_for_change(dashboard, lambda: summary(dashboard), plain)

    ids = bundle.galaxies["galaxy_id"].iloc[members].tolist()
    printed = subprocess.run(
        [sys.executable, "-m", "precompute", "compare", "--bundle", str(bundle.path), "--a", "n_bins > 0",
         "--b", f"galaxy_id in {ids!r}", "--embedding", embedding, "--twins"],
        capture_output=True, text=True, check=True).stdout
    cli = json.loads(printed)
    n_a, n_a_twins, n_b, n_b_twins, ks, p = twins
    assert (int(n_a), int(n_b)) == (bundle.n_galaxies, len(members))
    assert (int(n_a_twins), int(n_b_twins)) == (cli["n_a"], cli["n_b"])
    assert ks == f"{cli['ks']:.3f}" and p == f"{cli['p_value']:.3g}"
    assert cli["n_a"] < bundle.n_galaxies  # the switch kept only A's galaxies with a twin in B
    card = dashboard.locator(".card", has=dashboard.locator(".comparison-summary")).last
    card.scroll_into_view_if_needed()
    dashboard.wait_for_timeout(500)
    card.screenshot(path=artifacts / "seed-twins.png")
