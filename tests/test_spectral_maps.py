"""Science checks of the spectral maps on the mock survey (seed 001): DESOM-1, fingerprints, DESOM-2.

They run on `survey_bundle` (tests/conftest.py): a small mock survey streamed through preparation once, then the
spectral-map stage with the build's default architecture (latent width, channels, grid) and short training.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from tiny_builds import SURVEY_GALAXIES

from precompute import schema
from precompute.bundle import Bundle
from precompute.config import load_config
from precompute.models.desom import DESOM
from precompute.spectral_maps import (
    node_map_smoothness,
    node_properties,
    same_label_distance_ratio,
)

N_GALAXIES = SURVEY_GALAXIES  # survey_bundle (tests/conftest.py)


def held_out_spectra(bundle: Bundle):
    bins, galaxies = bundle.bins, bundle.galaxies
    val = galaxies["split"].to_numpy()[bins["galaxy_index"].to_numpy()] == "val"
    assert val.sum() > 100, "the held-out galaxies must give a fair number of spectra"
    return np.asarray(bundle.read(schema.FLUX))[val], np.asarray(bundle.read(schema.IVAR))[val]


def load_model(bundle: Bundle, name: str = "desom1") -> DESOM:
    return DESOM.load(io.BytesIO(bundle.read({"desom1": schema.DESOM1_MODEL, "desom2": schema.DESOM2_MODEL}[name])))


def test_sections_follow_the_schema(survey_bundle):
    b = survey_bundle
    assert {"desom1", "fingerprints", "desom2"} <= set(b.manifest["sections"])
    grid = b.read(schema.DESOM1_GRID)
    rows, cols, n_wave = grid["rows"], grid["cols"], b.wave.size
    k = rows * cols
    n_bins, n_galaxies = len(b.bins), len(b.galaxies)
    assert b.read(schema.DESOM1_PROTOTYPES_LATENT).shape == (k, grid["latent_dim"])
    assert b.read(schema.DESOM1_PROTOTYPE_SPECTRA).shape == (k, n_wave)
    members = b.read(schema.DESOM1_MEMBER_SPECTRA)
    assert members.shape == (4, k, n_wave)
    hits = b.read(schema.DESOM1_HITS)
    assert hits.sum() == n_bins and hits.dtype == np.int64
    np.testing.assert_array_equal(hits, np.bincount(b.bins["desom1_node"], minlength=k))
    # Empty nodes have no member spectra; populated ones have ordered percentiles.
    assert np.isnan(members[:, hits == 0]).all()
    filled = members[:, hits > 5]
    finite = np.isfinite(filled).all(0)
    assert finite.mean() > 0.95
    assert (filled[1][finite] <= filled[2][finite]).all() and (filled[2][finite] <= filled[3][finite]).all()
    assert b.read(schema.DESOM1_UMATRIX).shape == (rows, cols)
    assert b.bins["desom1_node"].dtype == np.int32 and (b.bins["desom1_qe"] >= 0).all()

    table = b.read(schema.DESOM1_NODE_PROPERTIES)
    assert list(table.columns) == ["node", "property", "n", "mean", "median", "p16", "p84"]
    properties = set(table["property"])
    assert {"log_age_lw", "logz_lw", "log_ssfr", "ew_halpha", "snr"} <= properties
    assert {"galaxy.log_mstar", "galaxy.quenched", "galaxy.redshift"} <= properties
    ages = table[table["property"] == "log_age_lw"].set_index("node")
    np.testing.assert_array_equal(ages["n"].to_numpy(), hits)
    histograms = b.read(schema.DESOM1_NODE_HISTOGRAMS)
    pdf = histograms["log_age_lw"]
    assert pdf.shape == (k, histograms["log_age_lw__edges"].size - 1)
    np.testing.assert_allclose(pdf[hits > 0].sum(1), 1.0, rtol=1e-5)
    assert histograms["galaxy.quenched"].shape == (k, 2)

    counts = b.read(schema.FINGERPRINT_COUNTS)
    assert counts.shape == (n_galaxies, k)
    np.testing.assert_array_equal(counts.sum(1), b.galaxies["n_bins"])
    fingerprints = b.read(schema.FINGERPRINTS)
    assert fingerprints.shape == (n_galaxies, rows, cols)
    np.testing.assert_allclose(fingerprints.reshape(n_galaxies, -1).max(1), 1.0)

    grid2 = b.read(schema.DESOM2_GRID)
    k2 = grid2["rows"] * grid2["cols"]
    assert b.read(schema.DESOM2_PROTOTYPES).shape == (k2, rows, cols)
    assert b.read(schema.DESOM2_HITS).sum() == n_galaxies
    assert b.galaxies["desom2_node"].between(0, k2 - 1).all()
    metrics = b.metrics["desom1"]
    for key in ("topographic_error", "quantization_error", "val_mse_autoencoder", "val_mse_pca",
                "improvement_over_pca", "epochs", "seconds"):
        assert np.isfinite(metrics[key]), key


def test_map_is_ordered_on_held_out_spectra(survey_bundle):
    model = load_model(survey_bundle)
    flux, ivar = held_out_spectra(survey_bundle)
    te = model.topographic_error(flux, ivar > 0)
    assert te <= 0.05
    assert survey_bundle.metrics["desom1"]["val_topographic_error"] == pytest.approx(te, abs=1e-6)
    # The bundle's BMUs are the model's.
    nodes = model.transform(np.asarray(survey_bundle.read(schema.FLUX)), np.asarray(survey_bundle.read(schema.IVAR)) > 0)
    np.testing.assert_array_equal(nodes, survey_bundle.bins["desom1_node"])


def test_autoencoder_beats_pca_at_the_build_width(survey_bundle):
    """Seed 001 reports ~20 % lower MSE than PCA; this fails if the autoencoder is worse at the build's width."""
    metrics = survey_bundle.metrics["desom1"]
    assert metrics["pca_components"] == load_config()["desom1"]["latent_dim"]
    assert metrics["val_mse_autoencoder"] < metrics["val_mse_pca"], metrics
    assert metrics["improvement_over_pca"] > 0


@pytest.mark.parametrize("prop", ["log_age_lw", "logz_lw", "log_ssfr", "ew_halpha"])
def test_property_maps_are_smooth(survey_bundle, prop):
    grid = survey_bundle.read(schema.DESOM1_GRID)
    table = survey_bundle.read(schema.DESOM1_NODE_PROPERTIES)
    medians = table[table["property"] == prop].sort_values("node")["median"].to_numpy()
    # Nodes with a single member are noise; judge the map on nodes with a few members.
    medians = np.where(table[table["property"] == prop].sort_values("node")["n"].to_numpy() >= 3, medians, np.nan)
    assert node_map_smoothness(medians, grid["rows"], grid["cols"], grid["topology"]) >= 0.8


def test_quenched_and_star_forming_spectra_occupy_separate_regions(survey_bundle):
    bins = survey_bundle.bins
    quenched = (bins["log_ssfr"] < -11).to_numpy()
    assert 0.1 < quenched.mean() < 0.9
    per_node = pd.DataFrame({"node": bins["desom1_node"], "quenched": quenched}).groupby("node")["quenched"].mean()
    hits = bins["desom1_node"].value_counts().reindex(per_node.index)
    purity = float((np.maximum(per_node, 1 - per_node) * hits).sum() / hits.sum())
    assert purity >= 0.9, f"node purity {purity:.3f}"
    # The same holds for node properties computed for any table (the function the bundle uses).
    table, _ = node_properties(pd.DataFrame({"q": quenched.astype(float)}), bins["desom1_node"].to_numpy(), 225)
    assert table["mean"].dropna().between(0, 1).all()


def test_galaxies_of_a_morphology_share_desom2_neighbourhoods(survey_bundle):
    galaxies = survey_bundle.galaxies
    grid = survey_bundle.read(schema.DESOM2_GRID)
    nodes, morphology = galaxies["desom2_node"].to_numpy(), galaxies["morphology"].to_numpy()
    shape = grid["rows"], grid["cols"], grid["topology"]
    observed = same_label_distance_ratio(nodes, morphology, *shape)
    rng = np.random.default_rng(0)
    shuffled = np.array([same_label_distance_ratio(nodes, rng.permutation(morphology), *shape) for _ in range(300)])
    # Galaxies of one morphology sit closer together on the map than randomly relabelled ones (p < 0.05).
    assert observed < 1.0 and np.mean(shuffled <= observed) < 0.05, (observed, np.median(shuffled))
    assert survey_bundle.metrics["desom2"]["morphology_distance_ratio"] == pytest.approx(observed)
    assert np.unique(nodes).size >= len(nodes) // 4, "DESOM-2 collapsed onto a few nodes"


def test_member_percentiles_match_numpy():
    from precompute.node_statistics import member_spectra

    rng = np.random.default_rng(1)
    flux = rng.normal(size=(60, 7)).astype(np.float32)
    ivar = (rng.random((60, 7)) > 0.3).astype(np.float32)
    ivar[:, 6] = 0  # a pixel bad for every member
    nodes = rng.integers(0, 4, 60)
    nodes[nodes == 3] = 2  # node 3 stays empty
    out = member_spectra(flux, ivar, nodes, 4)
    for k in range(3):
        values = np.where(ivar[nodes == k] > 0, flux[nodes == k], np.nan)[:, :6]
        np.testing.assert_allclose(out[0, k, :6], np.nanmean(values, 0), rtol=1e-5)
        np.testing.assert_allclose(out[1:, k, :6], np.nanpercentile(values, [16, 50, 84], axis=0), rtol=1e-5)
    assert np.isnan(out[:, :, 6]).all() and np.isnan(out[:, 3]).all()


class RecordingWriter:
    """Stands in for BundleWriter: keeps what a stage writes."""

    def __init__(self):
        self.files, self.metrics, self.sections = {}, {}, []

    def write(self, spec, value, **names):
        self.files[spec.at(**names)] = value

    def section(self, name):
        self.sections.append(name)


@pytest.mark.parametrize("backend", ["desom", "minisom"])
def test_desom2_backends_separate_two_kinds_of_fingerprint(backend):
    from precompute.spectral_maps import build_desom2

    rng = np.random.default_rng(0)
    n = 60
    kind = np.arange(n) % 2
    # Kind 0 fills the top-left of the 15x15 DESOM-1 map, kind 1 the bottom-right.
    fingerprints = rng.random((n, 15, 15)).astype(np.float32) * 0.1
    for g in range(n):
        corner = (slice(0, 6), slice(0, 6)) if kind[g] == 0 else (slice(9, 15), slice(9, 15))
        fingerprints[g][corner] += rng.random((6, 6)).astype(np.float32)
    galaxies = pd.DataFrame({"split": np.where(np.arange(n) < 50, "train", "val"), "morphology": kind.astype(str)})
    config = load_config(seed=1, device="cpu", desom2={"backend": backend, "rows": 5, "cols": 5, "epochs": 20,
                                                       "pretrain_epochs": 5})
    writer = RecordingWriter()
    nodes = build_desom2(writer, galaxies, fingerprints, config)
    assert writer.sections == ["desom2"] and ("desom2/model.pt" in writer.files) == (backend == "desom")
    assert writer.files["desom2/prototypes.npy"].shape == (25, 15, 15)
    assert writer.files["desom2/hits.npy"].sum() == n and nodes.dtype == np.int32
    assert not set(nodes[kind == 0]) & set(nodes[kind == 1]), "the two kinds share nodes"
    assert writer.metrics["desom2"]["morphology_distance_ratio"] < 0.8


def test_desom1_streams_every_training_spectrum_from_the_bundle_files(survey_bundle, tmp_path, monkeypatch):
    """max_train_spectra null (the GPU default): every training spectrum, read from the bundle's flux and ivar
    files a mini-batch at a time once there are more than FIT_SAMPLE of them."""
    from precompute import spectral_maps
    from precompute.bundle import BundleWriter
    from precompute.rows import NpyRows

    monkeypatch.setattr(spectral_maps, "FIT_SAMPLE", 500)
    given = []
    fit = DESOM.fit
    monkeypatch.setattr(DESOM, "fit", lambda self, *inputs: given.append(inputs) or fit(self, *inputs))
    config = load_config(**{**survey_bundle.config, "desom1": {**survey_bundle.config["desom1"], "epochs": 1,
                                                              "pretrain_epochs": 0, "max_train_spectra": None}})
    bins, galaxies = survey_bundle.bins, survey_bundle.galaxies
    flux = NpyRows(survey_bundle.path / schema.FLUX.path)
    ivar = NpyRows(survey_bundle.path / schema.IVAR.path)

    class Measured(Exception):
        """Leaves the writer without a bundle: only the stage's results are looked at."""

    with pytest.raises(Measured), BundleWriter(tmp_path / "streamed", config, seed=1) as writer:
        placed, latent = spectral_maps.build_desom1(writer, galaxies, bins, survey_bundle.wave, flux, ivar, config)
        metrics = writer.metrics["desom1"]
        raise Measured
    training = (galaxies["split"].to_numpy()[bins["galaxy_index"].to_numpy()] == "train").sum()
    (inputs,) = given
    assert len(inputs) == 1 and isinstance(inputs[0], spectral_maps.StreamedRows) and len(inputs[0]) == training
    assert metrics["train_spectra"] == training > 500
    assert np.isfinite(latent).all() and placed["desom1_node"].nunique() > 20
