"""Projections of an embedding: UMAP fitted on train, cosine k-means / GMM, k-NN without self, Fig. 10 table."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from precompute.config import DEFAULT_CONFIG
from precompute.projections import (
    EmbeddingProjector,
    knn_regression_r2,
    metric_space,
    numeric_properties,
    pearson,
    project_embedding,
    property_correlation,
    truth_figures,
)

N_PER_GROUP, DIM = 30, 24


def grouped_embedding(seed=0):
    """Three groups of galaxies pointing in different directions (cosine), with group-dependent mass."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(3, DIM))
    group = np.repeat(np.arange(3), N_PER_GROUP)
    # Lengths vary wildly: a cosine embedding must not care
    vectors = (directions[group] + 0.15 * rng.normal(size=(len(group), DIM))) * rng.uniform(0.5, 5, (len(group), 1))
    log_mstar = 9.0 + group + 0.1 * rng.normal(size=len(group))
    split = np.where(rng.random(len(group)) < 0.25, "val", "train")
    galaxies = pd.DataFrame({
        "galaxy_id": [f"g{i}" for i in range(len(group))], "split": split, "morphology": np.array(["E", "Sb", "Irr"])[group],
        "log_mstar": log_mstar, "quenched": group == 0, "ra": rng.uniform(0, 360, len(group)),
    })
    return vectors.astype(np.float32), galaxies, group


@pytest.fixture(scope="module")
def projected():
    vectors, galaxies, group = grouped_embedding()
    out = project_embedding(vectors, galaxies, "cosine", DEFAULT_CONFIG["projections"], seed=0)
    return vectors, galaxies, group, out


def test_projection_shapes_and_types(projected):
    vectors, galaxies, _, out = projected
    n, k = len(vectors), DEFAULT_CONFIG["projections"]["n_neighbours"]
    assert out["umap"].shape == (n, 2) and out["umap"].dtype == np.float32 and np.isfinite(out["umap"]).all()
    assert out["knn"].shape == (n, k) and out["knn"].dtype == np.int32
    assert out["knn_distance"].shape == (n, k) and out["knn_distance"].dtype == np.float32
    assert list(out["clusters"].columns) == [f"kmeans_k{j}" for j in (2, 3, 4, 5)] + [f"gmm_k{j}" for j in (2, 3, 4, 5)]
    assert (out["clusters"].dtypes == np.int32).all()
    for j in (2, 3, 4, 5):
        assert set(out["clusters"][f"kmeans_k{j}"]) <= set(range(j))


def test_neighbours_are_training_galaxies_never_self_nearest_first(projected):
    vectors, galaxies, _, out = projected
    train = np.flatnonzero(galaxies["split"] == "train")
    assert np.isin(out["knn"], train).all()
    assert (out["knn"] != np.arange(len(vectors))[:, None]).all()
    assert (np.diff(out["knn_distance"], axis=1) >= -1e-6).all()
    # Distances are cosine distances 1 - cos, recomputed directly
    unit = metric_space(vectors, "cosine")
    expected = 1 - np.sum(unit[:, None, :] * unit[out["knn"]], axis=2)
    np.testing.assert_allclose(out["knn_distance"], expected, atol=1e-5)
    # ... and they are the nearest: no training galaxy outside the list is closer
    cos = 1 - unit @ unit[train].T
    cos[train, np.arange(len(train))] = np.inf  # self excluded
    np.testing.assert_allclose(out["knn_distance"], np.sort(cos, axis=1)[:, : out["knn"].shape[1]], atol=1e-5)


def test_cosine_kmeans_and_gmm_find_the_groups(projected):
    _, _, group, out = projected
    for column in ("kmeans_k3", "gmm_k3"):
        labels = out["clusters"][column].to_numpy()
        # each group maps to one label, and different groups to different labels
        mapping = {g: np.bincount(labels[group == g]).argmax() for g in range(3)}
        assert len(set(mapping.values())) == 3
        assert np.mean([mapping[g] == lab for g, lab in zip(group, labels)]) == 1.0


def test_umap_keeps_groups_apart_for_held_out_galaxies(projected):
    _, galaxies, group, out = projected
    val = (galaxies["split"] == "val").to_numpy()
    xy = out["umap"]
    centres = np.array([xy[~val & (group == g)].mean(axis=0) for g in range(3)])
    nearest_centre = np.argmin(((xy[val, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    assert np.mean(nearest_centre == group[val]) >= 0.9


def test_property_correlation_table(projected):
    vectors, galaxies, _, out = projected
    table = out["property_correlation"]
    assert list(table.columns[:2]) == ["component", "explained_variance"]
    assert "log_mstar" in table and "quenched" in table and "morphology" not in table and "ra" not in table
    assert np.all(np.diff(table["explained_variance"]) <= 1e-9)
    # mass follows the group, which the first two components span: some component carries it strongly
    assert np.nanmax(np.abs(table["log_mstar"])) > 0.8


def test_property_correlation_finds_the_property_a_direction_carries():
    rng = np.random.default_rng(1)
    prop = rng.normal(size=200)
    vectors = rng.normal(0, 0.1, (200, 6))
    vectors[:, 3] += 3 * prop  # the dominant direction is the property
    table = property_correlation(vectors, pd.DataFrame({"p": prop, "noise": rng.normal(size=200)}),
                                 np.ones(200, bool), n_components=3)
    assert abs(table["p"][0]) > 0.99 and abs(table["noise"][0]) < 0.3
    assert table["explained_variance"][0] > 0.9


def test_knn_regression_r2_high_for_informative_low_for_random():
    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    informative = np.stack([y, 0.1 * rng.normal(size=300)], axis=1)
    train = rng.random(300) < 0.7
    targets = pd.DataFrame({"y": y})
    assert knn_regression_r2(informative, targets, train, k=10, metric="euclidean")["y"] > 0.9
    assert knn_regression_r2(rng.normal(size=(300, 2)), targets, train, k=10, metric="euclidean")["y"] < 0.2


def test_truth_figures(projected):
    vectors, galaxies, _, out = projected
    figures = truth_figures(vectors, galaxies, "cosine", out["knn_distance"], out["clusters"])
    assert figures["knn_r2_log_mstar"] > 0.9
    assert figures["kmeans_k2_quenched_accuracy"] >= 0.6  # 2 clusters for 3 groups: at least one group split off
    assert 0 <= figures["ks_p_train_vs_val"] <= 1
    assert "knn_r2_ew_halpha" not in figures  # no such column: left out


def test_numeric_properties_and_pearson():
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "flag": [True, False, True, False], "name": list("wxyz"),
                          "desom2_node": [0, 1, 2, 3], "dec": [0.0, 1, 2, 3]})
    props = numeric_properties(table)
    assert set(props) == {"a", "flag"}
    assert props["flag"].dtype == float
    assert pearson(np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 8])) == pytest.approx(1.0)
    assert np.isnan(pearson(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])))
    assert pearson(np.array([1.0, 2, np.nan, 4, 5]), np.array([1.0, 2, 3, 4, 5])) == pytest.approx(1.0)


def test_bad_vectors_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        metric_space(np.array([[1.0, np.nan]]), "cosine")
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        metric_space(np.ones(3), "cosine")
    with pytest.raises(ValueError, match="metric"):
        EmbeddingProjector(metric="manhattan")
    with pytest.raises(ValueError, match="too few"):
        EmbeddingProjector(n_neighbours=10).fit(np.random.default_rng(0).normal(size=(8, 4)))


UMAP_IN_A_NEW_PROCESS = """
import json
import numpy as np
from precompute.projections import EmbeddingProjector, umap_kernels

kernels = umap_kernels()
def count(what):
    return sum(sum(getattr(k.stats, what).values()) for k in kernels)
at_import = count("cache_misses")  # kernels umap declares with a signature compile on import, uncached
vectors = np.random.default_rng(0).normal(size=(60, 8))
projector = EmbeddingProjector(seed=0).fit(vectors[:50])
xy = projector.umap(vectors[50:])
print(json.dumps({"xy": np.concatenate([projector.umap_.embedding_, xy]).tolist(),
                  "compiled": count("cache_misses") - at_import, "loaded": count("cache_hits")}))
"""


def test_umap_kernels_are_compiled_once_not_in_every_process():
    """precompute.projections.cache_umap_kernels: a process fitting and applying a UMAP after another one loads
    umap's kernels from numba's cache (compiles none) and places the galaxies on the same coordinates."""
    runs = [subprocess.run([sys.executable, "-c", UMAP_IN_A_NEW_PROCESS], capture_output=True, text=True,
                           timeout=300, check=True) for _ in range(2)]
    first, second = (json.loads(run.stdout.splitlines()[-1]) for run in runs)
    assert second["compiled"] == 0 and second["loaded"] > 0, second
    assert first["xy"] == second["xy"]
