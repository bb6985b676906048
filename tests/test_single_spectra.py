"""Seed 002 in the build: a survey of single spectra (the mock SED library through data/configs/sed.json) gives a
bundle whose objects are the spectra, with DESOM-1, k-means and a MiniSom map of their latent codes, and the
dashboard shows what applies to it."""
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_builds import SED_BUILD, SED_SPECTRA, write_bundle_spectra

from explorer.data import ExplorerData
from explorer.layout import create_app
from explorer.som_grid import placed_nodes
from precompute import assign, schema
from precompute.bundle import Bundle
from precompute.formats import read_observation
from precompute.images import SPECTRUM_THUMBNAIL
from precompute.mock.cli import main as mock_main
from precompute.mock.sed_library import sed_observation
from precompute.prepare import split_spectra
from precompute.sed_map import purity
from precompute.spectral_maps import node_map_smoothness


@pytest.fixture(scope="module")
def sed(sed_bundle) -> Bundle:
    return Bundle(sed_bundle)


def test_sed_config_builds_a_valid_bundle_of_single_spectra(sed):
    assert schema.validate(sed.path) == []
    assert set(sed.manifest["sections"]) == {"desom1", "sed_map", "embeddings"}  # no cube or image model
    galaxies, bins = sed.galaxies, sed.bins
    assert len(galaxies) == len(bins) == SED_SPECTRA and (galaxies["n_bins"] == 1).all()
    assert sed.read(schema.EMBEDDING_INDEX).keys() == {schema.LATENT_EMBEDDING}
    grid = sed.read(schema.SED_GRID)
    assert (grid["rows"], grid["cols"], grid["kmeans_k"]) == (10, 10, 6)  # seed 002's settings
    assert np.unique(galaxies["sed_kmeans"]).size == 6
    assert sed.read(schema.SED_HITS).sum() == len(galaxies)
    # an object with one spectrum and no image: its thumbnail is the spectrum, not a 1-pixel colour swatch
    thumbnail = Image.open(io.BytesIO((sed.path / galaxies["thumbnail"].iat[0]).read_bytes()))
    assert thumbnail.size == SPECTRUM_THUMBNAIL


def test_groupings_recover_the_library_truth(sed):
    """Purity against star-forming vs quenched (log sSFR < -11) of k-means, MiniSom and DESOM-1 nodes, as the
    seed-002 notebook measures it; ages vary smoothly across the MiniSom map."""
    galaxies, bins, metrics = sed.galaxies, sed.bins, sed.metrics["sed_map"]
    quenched = galaxies["log_ssfr"].to_numpy() < -11
    desom1_nodes = bins.sort_values("galaxy_index")["desom1_node"].to_numpy()
    purities = {name: purity(labels, quenched) for name, labels in
                (("kmeans", galaxies["sed_kmeans"]), ("minisom", galaxies["sed_node"]), ("desom1", desom1_nodes))}
    print("purity star-forming vs quenched:", purities, "| sfh kind:", metrics["kmeans_purity_sfh"],
          metrics["minisom_purity_sfh"])
    assert min(purities.values()) > 0.85, purities
    assert metrics["kmeans_purity_quenched"] == pytest.approx(purities["kmeans"])
    assert metrics["minisom_purity_quenched"] == pytest.approx(purities["minisom"])
    # the star-formation history kind (5 kinds, one being the majority 'declining') is harder: far above chance
    chance = galaxies["sfh"].value_counts(normalize=True).iat[0]
    assert metrics["minisom_purity_sfh"] > chance + 0.15, (metrics["minisom_purity_sfh"], chance)
    ages = galaxies["log_age_lw"].groupby(galaxies["sed_node"]).median().reindex(range(100)).to_numpy()
    assert node_map_smoothness(ages, 10, 10) >= 0.8


def test_library_file_holds_the_same_spectra_as_the_mock_build(tmp_path):
    """`python -m precompute mock --sed-library N` writes the spectra a build with mock.format = "sed" makes, so a
    build of the file and of the config see the same objects."""
    seed = SED_BUILD["seed"]
    assert mock_main(["--sed-library", "4", "--seed", str(seed), "--out", str(tmp_path)]) == 0
    written = split_spectra(read_observation(tmp_path / "sed_library.fits"))
    truth = pd.read_parquet(tmp_path / "sed_truth.parquet")
    for index, obs in enumerate(written):
        made, made_truth = sed_observation(seed, index)
        assert np.allclose(obs.flux, made.flux, rtol=1e-6)
        assert truth["spectrum_id"].iat[index] == made.id and truth["log_ssfr"].iat[index] == made_truth["log_ssfr"]


def test_dashboard_shows_what_applies_to_single_spectra(sed_bundle):
    page = create_app(sed_bundle)
    dashboard = page.dashboard
    assert dashboard.image_features is None  # no images, no image-VAE figure
    assert set(dashboard.som.maps) == {"desom1", "desom2"}
    assert dashboard.data.desom2["title"] == "MiniSom of the latent"
    assert dashboard.data.colour_columns["sed_kmeans"] == "categorical"
    data: ExplorerData = dashboard.data
    nodes = data.galaxies["sed_node"].to_numpy()
    busiest = int(np.bincount(nodes).argmax())
    dashboard.state.select_nodes2([busiest])
    assert np.array_equal(dashboard.state.selected, np.flatnonzero(nodes == busiest))
    assert dashboard.state.how.startswith("MiniSom of the latent node")


def test_a_new_spectrum_is_placed_among_the_objects(sed_bundle, tmp_path):
    """assign on a seed-002 bundle gives a spectrum the objects' MiniSom node, k-means group and a latent-UMAP
    position; the bundle's own spectra land on their own node and group, and the dashboard dots that node."""
    data = ExplorerData(sed_bundle)
    objects = data.galaxies.sort_values("sed_node").drop_duplicates("sed_node").head(5).index.to_numpy()
    rows = [int(np.flatnonzero(data.bins["galaxy_index"].to_numpy() == g)[0]) for g in objects]
    placed = assign.assign_files(sed_bundle, [write_bundle_spectra(data.bundle, rows, tmp_path / "five.fits")])
    assert (placed["error"] == "").all()
    assert placed["sed_node"].tolist() == data.galaxies["sed_node"].iloc[objects].tolist()
    assert placed["sed_kmeans"].tolist() == data.galaxies["sed_kmeans"].iloc[objects].tolist()
    xy = placed[list(schema.umap_columns(schema.LATENT_EMBEDDING))].to_numpy(float)
    assert np.isfinite(xy).all()
    assert sorted(placed_nodes(placed, "desom2", data.desom2)) == sorted(data.galaxies["sed_node"].iloc[objects])
