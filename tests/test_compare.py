"""Population comparison: typicality (10th-neighbour distance), KS test, mass/morphology twins, the CLI, and the
dashboard giving the same figures as the CLI."""
import json

import numpy as np
import pandas as pd
import pytest

from explorer import comparison
from explorer.data import ExplorerData
from precompute import schema
from precompute.__main__ import main as precompute_main
from precompute.bundle import BundleWriter
from precompute.compare import compare_distances, select, twins
from precompute.config import DEFAULT_CONFIG
from precompute.embeddings import write_embedding

N = 120


def population():
    """A dense population (quenched, in one tight direction) and a diffuse one (star-forming, spread out)."""
    rng = np.random.default_rng(0)
    quenched = np.arange(N) % 2 == 0
    vectors = rng.normal(size=(N, 8))
    vectors[quenched] = np.array([5.0, 0, 0, 0, 0, 0, 0, 0]) + 0.3 * rng.normal(size=(quenched.sum(), 8))
    galaxies = pd.DataFrame({
        "galaxy_id": [f"g{i:03d}" for i in range(N)],
        "split": np.where(rng.random(N) < 0.2, "val", "train"),
        "quenched": quenched,
        "morphology": np.where(quenched, "E", rng.choice(["E", "Sb"], N)),
        "log_mstar": np.where(quenched, 10.8, 9.8) + 0.3 * rng.normal(size=N),
    })
    return vectors, galaxies


@pytest.fixture(scope="module")
def planted_bundle(tmp_path_factory):
    """A minimal bundle: placeholder core files plus a planted contrastive embedding, projected by the build's
    own `write_embedding` (neighbours, UMAP, clusters)."""
    vectors, galaxies = population()
    path = tmp_path_factory.mktemp("compare") / "bundle"
    with BundleWriter(path, DEFAULT_CONFIG, seed=0) as writer:
        writer.write(schema.GALAXIES, galaxies)
        writer.write(schema.BINS, pd.DataFrame({"galaxy_id": galaxies["galaxy_id"], "galaxy_index": np.arange(N, dtype=np.int32),
                                           "bin_id": np.zeros(N, np.int32)}))
        writer.write(schema.WAVE, np.linspace(3650, 7000, 5))
        writer.write(schema.FLUX, np.ones((N, 5), np.float32))
        writer.write(schema.IVAR, np.ones((N, 5), np.float32))
        writer.write(schema.SPAXEL_BINS, {g: np.zeros((1, 1), np.int32) for g in galaxies["galaxy_id"]})
        writer.write(schema.IMAGES, np.zeros((N, 3, 4, 4), np.float32))
        write_embedding(writer, "contrastive", vectors, galaxies, "cosine", DEFAULT_CONFIG)
        writer.write(schema.EMBEDDING_INDEX, {"contrastive": {"dim": 8, "metric": "cosine", "description": "test"}})
        writer.section("embeddings")
    return path


def run_cli(capsys, *args):
    code = precompute_main(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_finds_quenched_and_star_forming_differ(planted_bundle, capsys):
    code, out, _ = run_cli(capsys, "--bundle", str(planted_bundle), "--a", "quenched", "--b", "not quenched")
    assert code == 0
    result = json.loads(out)
    assert result["n_a"] == N // 2 and result["n_b"] == N // 2
    assert result["p_value"] < 1e-6 and result["ks"] > 0.8
    assert result["median_a"] < result["median_b"]  # the tight population has closer neighbours


def test_cli_train_vs_val_same_distribution(planted_bundle, capsys):
    code, out, _ = run_cli(capsys, "--bundle", str(planted_bundle), "--a", "split == 'train' and quenched",
                           "--b", "split == 'val' and quenched")
    result = json.loads(out)
    assert code == 0 and result["p_value"] > 0.05


def test_cli_twins_restricts_to_same_morphology_and_mass(planted_bundle, capsys):
    _, out_all, _ = run_cli(capsys, "--bundle", str(planted_bundle), "--a", "quenched", "--b", "not quenched")
    code, out, _ = run_cli(capsys, "--bundle", str(planted_bundle), "--a", "quenched", "--b", "not quenched", "--twins")
    every, result = json.loads(out_all), json.loads(out)
    assert code == 0 and result["twins"] is True
    # star-forming Sb galaxies have no E twin: the B sample shrinks; so does A (mass offset of 1 dex)
    assert 0 < result["n_b"] < every["n_b"] and 0 < result["n_a"] < every["n_a"]


def test_cli_errors_are_one_clear_line(planted_bundle, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--bundle", str(planted_bundle), "--a", "no_such_column > 1", "--b", "quenched")
    assert code == 1 and "no_such_column" in err and "columns:" in err
    code, _, err = run_cli(capsys, "--bundle", str(planted_bundle), "--a", "quenched", "--b", "quenched",
                           "--embedding", "nope")
    assert code == 1 and "available: contrastive" in err
    code, _, err = run_cli(capsys, "--bundle", str(planted_bundle), "--a", "log_mstar > 99", "--b", "quenched")
    assert code == 1 and "both populations need galaxies" in err
    code, _, err = run_cli(capsys, "--bundle", str(tmp_path / "missing"), "--a", "quenched", "--b", "quenched")
    assert code == 1 and "manifest.json missing" in err


def test_twins_pairs_by_mass_and_morphology():
    galaxies = pd.DataFrame({"log_mstar": [10.0, 10.1, 10.5, 10.15, 9.0], "morphology": ["E", "E", "E", "Sb", "E"]})
    a = np.array([True, False, False, False, False])
    b = np.array([False, True, True, True, True])
    a_twin, b_twin = twins(galaxies, a, b)
    assert a_twin.tolist() == [True, False, False, False, False]
    assert b_twin.tolist() == [False, True, False, False, False]  # 10.5 too heavy, Sb wrong type, 9.0 too light
    with pytest.raises(ValueError, match="log_mstar"):
        twins(galaxies.drop(columns="log_mstar"), a, b)


def test_select_and_compare_distances():
    galaxies = pd.DataFrame({"x": [1, 2, 3]})
    assert select(galaxies, "x >= 2").tolist() == [False, True, True]
    with pytest.raises(ValueError, match="true/false"):
        select(galaxies, "x + 1")
    rng = np.random.default_rng(3)
    same = compare_distances(rng.normal(size=200), rng.normal(size=200))
    shifted = compare_distances(rng.normal(size=200), rng.normal(1.0, 1, size=200))
    assert same["p_value"] > 0.01 and shifted["p_value"] < 1e-6 and shifted["ks"] > same["ks"]


def test_every_embedding_file_is_declared_per_embedding():
    assert {spec.at(embedding="x") for spec in schema.EMBEDDING_FILES} == {
        f"embeddings/x/{f}" for f in ("vectors.npy", "umap.npy", "knn.npy", "knn_distance.npy", "clusters.parquet",
                                      "property_correlation.parquet", "projector.pkl")}


def test_dashboard_and_cli_give_the_same_statistic_and_p_value(real_bundle, capsys):
    data = ExplorerData(real_bundle)
    quenched = data.galaxies["quenched"].to_numpy(bool)
    assert 2 <= quenched.sum() <= len(quenched) - 2, "the tiny build needs both populations"
    for embedding in data.embeddings:
        page = comparison.compare(data, embedding, np.flatnonzero(quenched), np.flatnonzero(~quenched))
        code, out, err = run_cli(capsys, "--bundle", str(real_bundle), "--a", "quenched", "--b", "not quenched",
                                 "--embedding", embedding)
        cli = json.loads(out)
        assert code == 0, err
        assert page["statistic"] == cli["ks"] and page["pvalue"] == cli["p_value"], embedding
