"""Population comparison: 10th-neighbour distances, KS test, mass/morphology twins, and the CLI."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from precompute.__main__ import main as precompute_main
from precompute.bundle import BundleWriter
from precompute.compare import compare_distances, select, twins
from precompute.config import DEFAULT_CONFIG
from precompute.bundle import EMBEDDING_FILES, embedding_files

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


def knn_distance(vectors, train, k=10):
    """Cosine distance to the k nearest training galaxies, self excluded (as the bundle stores it)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = 1 - unit @ unit[train].T
    cos[np.flatnonzero(train), np.arange(train.sum())] = np.inf
    return np.sort(cos, axis=1)[:, :k].astype(np.float32)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    """A minimal bundle: core files plus an `embeddings` section with the contrastive files."""
    vectors, galaxies = population()
    train = (galaxies["split"] == "train").to_numpy()
    path = tmp_path_factory.mktemp("compare") / "bundle"
    with BundleWriter(path, DEFAULT_CONFIG, seed=0) as writer:
        writer.table("galaxies", galaxies)
        writer.table("bins", pd.DataFrame({"galaxy_id": galaxies["galaxy_id"], "galaxy_index": np.arange(N, dtype=np.int32),
                                           "bin_id": np.zeros(N, np.int32)}))
        writer.array("spectra/wave", np.linspace(3650, 7000, 5))
        writer.array("spectra/flux", np.ones((N, 5), np.float32))
        writer.array("spectra/ivar", np.ones((N, 5), np.float32))
        writer.arrays("spaxel_bins", {g: np.zeros((1, 1), np.int32) for g in galaxies["galaxy_id"]})
        writer.array("images/gri", np.zeros((N, 3, 4, 4), np.float32))
        distance = knn_distance(vectors, train)
        nearest = NearestNeighbors(n_neighbors=10).fit(vectors[train]).kneighbors(vectors)[1]
        files = {"vectors": vectors.astype(np.float32), "umap": vectors[:, :2].astype(np.float32),
                 "knn": np.flatnonzero(train)[nearest].astype(np.int32), "knn_distance": distance}
        for name, values in files.items():
            writer.array(f"embeddings/contrastive/{name}", values)
        writer.table("embeddings/contrastive/clusters", pd.DataFrame({"kmeans_k2": np.zeros(N, np.int32)}))
        writer.table("embeddings/contrastive/property_correlation", pd.DataFrame({"component": [0]}))
        writer.json("embeddings/index.json", {"contrastive": {"dim": 8, "metric": "cosine", "description": "test"}})
        writer.section("embeddings")
    return path


def run_cli(capsys, *args):
    code = precompute_main(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_finds_quenched_and_star_forming_differ(bundle_path, capsys):
    code, out, _ = run_cli(capsys, "--bundle", str(bundle_path), "--a", "quenched", "--b", "not quenched")
    assert code == 0
    result = json.loads(out)
    assert result["n_a"] == N // 2 and result["n_b"] == N // 2
    assert result["p_value"] < 1e-6 and result["ks"] > 0.8
    assert result["median_a"] < result["median_b"]  # the tight population has closer neighbours


def test_cli_train_vs_val_same_distribution(bundle_path, capsys):
    code, out, _ = run_cli(capsys, "--bundle", str(bundle_path), "--a", "split == 'train' and quenched",
                           "--b", "split == 'val' and quenched")
    result = json.loads(out)
    assert code == 0 and result["p_value"] > 0.05


def test_cli_twins_restricts_to_same_morphology_and_mass(bundle_path, capsys):
    _, out_all, _ = run_cli(capsys, "--bundle", str(bundle_path), "--a", "quenched", "--b", "not quenched")
    code, out, _ = run_cli(capsys, "--bundle", str(bundle_path), "--a", "quenched", "--b", "not quenched", "--twins")
    every, result = json.loads(out_all), json.loads(out)
    assert code == 0 and result["twins"] is True
    # star-forming Sb galaxies have no E twin: the B sample shrinks; so does A (mass offset of 1 dex)
    assert 0 < result["n_b"] < every["n_b"] and 0 < result["n_a"] < every["n_a"]


def test_cli_errors_are_one_clear_line(bundle_path, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--bundle", str(bundle_path), "--a", "no_such_column > 1", "--b", "quenched")
    assert code == 1 and "no_such_column" in err and "columns:" in err
    code, _, err = run_cli(capsys, "--bundle", str(bundle_path), "--a", "quenched", "--b", "quenched",
                           "--embedding", "nope")
    assert code == 1 and "available: contrastive" in err
    code, _, err = run_cli(capsys, "--bundle", str(bundle_path), "--a", "log_mstar > 99", "--b", "quenched")
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


def test_section_declares_the_documented_embedding_files():
    assert embedding_files("x") == tuple(f"embeddings/x/{f}" for f in EMBEDDING_FILES)
