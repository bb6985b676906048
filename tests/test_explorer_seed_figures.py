"""The seeds' figures as views of (bundle, state), without a browser: clusters as a colour-by and a selection with
the seed 000 Fig. 7 panel, the Fig. 10 correlation table, the image-VAE features (seed 004) and the twins switch of
the population comparison. On the tiny real build and the synthetic bundle (`data`), the image VAE on the real one.
"""
import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from panel.io.state import set_curdoc

from explorer import clusters, comparison, correlations, image_features
from explorer.data import ExplorerData, cluster_column
from explorer.layout import create_app
from explorer.state import SelectionState
from precompute import schema
from precompute.bundle import Bundle
from precompute.compare import compare as cli_compare


def render(view):
    """Render a Panel object into a fresh Document, as `panel serve` does for a session."""
    doc = Document()
    view.server_doc(doc)
    return doc


def bundle_clusters(data, embedding):
    return data.bundle.read(schema.EMBEDDING_CLUSTERS, embedding=embedding)


# -- clusters --------------------------------------------------------------------------------------------------------

def test_every_clustering_is_a_categorical_colour(data):
    for embedding in data.embeddings:
        table = bundle_clusters(data, embedding)
        assert data.clusterings(embedding) == list(table.columns)
        for clustering in table.columns:
            column = cluster_column(embedding, clustering)
            assert data.colour_columns[column] == "categorical" and data.is_cluster_column(column)
            assert (data.galaxies[column].astype(int).to_numpy() == table[clustering].to_numpy()).all()
    assert not data.is_cluster_column("morphology")


def test_colour_by_clusters_follows_the_clustering_and_embedding(data, state):
    assert state.clustering == data.clusterings(state.embedding)[0]
    state.colour_by_clusters()
    assert state.colour_by == cluster_column(state.embedding, state.clustering)
    state.clustering = "gmm_k3"
    assert state.colour_by == cluster_column(state.embedding, "gmm_k3")
    other = list(data.embeddings)[-1]
    state.embedding = other
    assert state.colour_by == cluster_column(other, "gmm_k3")
    state.colour_by = "log_mstar"
    state.clustering = "kmeans_k4"  # colouring by a property: the clustering does not take the colour over
    assert state.colour_by == "log_mstar"


def test_select_cluster_selects_exactly_its_members(data, state):
    state.clustering = "kmeans_k3"
    table = bundle_clusters(data, state.embedding)
    for label in range(3):
        state.select_cluster(str(label))
        assert state.galaxies.tolist() == np.flatnonzero(table["kmeans_k3"].to_numpy() == label).tolist()
        assert f"cluster {label}" in state.how and "k = 3" in state.how


def test_cluster_view_buttons_and_fig7_panel(data, state):
    view = clusters.Clusters(data, state)
    render(view.view)
    table = bundle_clusters(data, state.embedding)
    labels = table[state.clustering].to_numpy()
    counts = np.bincount(labels)
    assert [b.label for b in view.buttons.objects] == [f"cluster {c} · {n} galaxies" for c, n in enumerate(counts)]
    view.buttons.objects[1].clicks += 1
    assert state.galaxies.tolist() == np.flatnonzero(labels == 1).tolist()

    view.method.value, view.k.value = "gmm", 4
    assert state.clustering == "gmm_k4" and len(view.buttons.objects) == len(np.unique(table["gmm_k4"]))
    column = state.cluster_column
    for plot in (clusters.sfms_plot(data, column), clusters.whan_plot(data, column)):
        layers = [layer for layer in plot if layer.label.startswith("cluster ")]
        assert [len(layer) for layer in layers] == np.bincount(table["gmm_k4"], minlength=4).tolist()
    assert len(view.plots.objects) == 3  # SFMS, WHAN, morphology composition: both bundles have the columns


def test_morphology_composition_shares(data, state):
    column = state.cluster_column
    frame = clusters.composition(data, column, np.arange(data.n_galaxies))
    per_type = frame.groupby("morphology", observed=True)["share"].sum()
    present = set(data.galaxies["morphology"])
    assert np.allclose(per_type[list(present)], 1.0)
    assert np.allclose(per_type.drop(list(present)), 0.0)
    # each type's galaxies are counted in the cluster the bundle gives them
    kind = data.galaxies["morphology"].iat[0]
    members = (data.galaxies["morphology"] == kind).to_numpy()
    expected = np.bincount(data.galaxies[column][members].astype(int), minlength=len(data.categories(column)))
    assert frame[frame["morphology"] == kind]["galaxies"].tolist() == expected.tolist()


# -- correlations ------------------------------------------------------------------------------------------------

def test_correlation_table_is_the_bundle_table_and_a_tap_colours_by_its_property(data, state):
    view = correlations.embedding_correlations(data, state)
    render(view.view)
    table = data.bundle.read(schema.EMBEDDING_CORRELATION, embedding=state.embedding)
    properties = [c for c in table.columns if c not in correlations.ROW_COLUMNS]
    assert len(view.frame) == len(table) * len(properties)
    cell = view.frame[view.frame["column"] == "log_age_lw"].iloc[1]  # PC2
    assert cell["row"].startswith("PC2 · ") and np.isclose(cell["r"], table["log_age_lw"].iat[1])
    assert f"{100 * table['explained_variance'].iat[1]:.1f} %" in cell["row"]
    view.tap.event(x=cell["property"], y=cell["row"])
    assert state.colour_by == "log_age_lw"
    other = list(data.embeddings)[-1]
    state.embedding = other
    assert np.isclose(view.frame[view.frame["column"] == "log_age_lw"]["r"].iat[1],
                      data.bundle.read(schema.EMBEDDING_CORRELATION, embedding=other)["log_age_lw"].iat[1],
                      equal_nan=True)


def test_the_colour_by_widget_follows_the_state(data):
    dashboard = create_app(data.path).dashboard
    dashboard.state.colour_by = "log_age_lw"
    assert dashboard.colour_by.value == "log_age_lw"
    dashboard.state.colour_by_clusters()
    assert dashboard.colour_by.value == dashboard.state.cluster_column
    assert dashboard.clusters and dashboard.correlations


# -- image-VAE features (the tiny real build has the image VAE; the synthetic bundle has not) -----------------

def test_image_features_on_the_real_build(real_bundle):
    data = ExplorerData(real_bundle)
    state = SelectionState(data)
    view = image_features.ImageFeatures(data, state)
    doc = render(view.view)
    traversals = data.bundle.read(schema.IMAGE_VAE_TRAVERSALS)
    rows = [row for row in view.traversals.objects if "traversal-row" in row.css_classes]
    assert len(rows) == data.bundle.manifest["config"]["image_vae"]["latent_dim"] == traversals.shape[0]
    latent = data.bundle.read(schema.EMBEDDING_VECTORS, embedding="image_vae")
    # η² = 1 − within-type / total sum of squares, per feature: the plane shows the two largest
    by_type = pd.DataFrame(latent).groupby(data.galaxies["morphology"].to_numpy())
    eta2 = 1 - ((latent - by_type.transform("mean").to_numpy()) ** 2).sum(0) / ((latent - latent.mean(0)) ** 2).sum(0)
    a, b = view.plane.features
    assert (a, b) == tuple(np.argsort(-eta2)[:2])
    assert np.allclose(image_features.morphology_separation(latent, data.galaxies["morphology"]), eta2)
    points = view.plane.points()
    assert np.allclose(points.dimension_values(0), latent[:, a])
    assert np.allclose(points.dimension_values(1), latent[:, b])
    with set_curdoc(doc):
        view.plane.selection.event(index=[3, 1])  # a box selection on the latent plane
    assert state.galaxies.tolist() == [1, 3] and "image-VAE features" in state.how
    assert list(view.plane._sources[0].selected.indices) == [1, 3]
    table = data.bundle.read(schema.IMAGE_VAE_CORRELATION)
    cell = view.correlations.frame[view.correlations.frame["column"] == "bt"].iloc[2]
    assert cell["row"] == "feature 2" and np.isclose(cell["r"], table["bt"].iat[2], equal_nan=True)
    view.correlations.tap.event(x=cell["property"], y=cell["row"])
    assert state.colour_by == "bt"
    assert create_app(real_bundle).dashboard.image_features is not None


def test_image_features_hidden_without_the_section(synthetic_bundle, core_bundle):
    assert not Bundle(synthetic_bundle).has("image_vae")
    assert create_app(synthetic_bundle).dashboard.image_features is None
    dashboard = create_app(core_bundle).dashboard
    assert dashboard.clusters is None and dashboard.correlations is None and dashboard.image_features is None


# -- twins -------------------------------------------------------------------------------------------------------

def test_twins_switch_gives_what_compare_twins_prints(data, state):
    """A = the whole survey, B = the quenched galaxies: overlapping populations, so every B galaxy is its own twin
    and A keeps the galaxies with a quenched twin (a tiny survey has few twins between disjoint populations)."""
    embedding = state.embedding
    quenched = data.galaxies["quenched"].to_numpy(bool)
    view = comparison.Comparison(data, state)
    state.pin()
    state.select_galaxies(np.flatnonzero(quenched), how="quenched")
    everyone, plain = "n_bins > 0", cli_compare(data.bundle, "n_bins > 0", "quenched", embedding)
    assert f"{plain['n_a']} galaxies (whole survey)" in view.summary.object
    assert f"p = {plain['p_value']:.3g}" in view.summary.object
    view.twins.value = True
    expected = cli_compare(data.bundle, everyone, "quenched", embedding, twin=True)
    result = comparison.compare(data, embedding, state.pinned, state.selected, only_twins=True)
    assert (len(result["a"]), len(result["b"])) == (expected["n_a"], expected["n_b"])
    assert result["pvalue"] == pytest.approx(expected["p_value"])
    assert result["statistic"] == pytest.approx(expected["ks"])
    assert (f"{expected['n_a']} with a twin in B" in view.summary.object
            and f"{expected['n_b']} with a twin in A" in view.summary.object)
    assert f"p = {expected['p_value']:.3g}" in view.summary.object
    assert expected["n_b"] == quenched.sum() and expected["n_a"] < plain["n_a"]
