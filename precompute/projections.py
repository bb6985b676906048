"""Projections of a galaxy embedding (seed 000): UMAP map, clusters, nearest neighbours, property correlations.

Everything is fitted on the training galaxies only and then applied to validation and newly assigned ones, so
held-out galaxies are placed exactly as new observations would be. For a ``cosine`` embedding, vectors are
scaled to unit length first: Euclidean distances between unit vectors order neighbours as cosine distance does
(‖a − b‖² = 2 − 2 cos), so k-means on them is spherical (cosine) k-means and UMAP needs one compiled metric.
"""
from __future__ import annotations

import contextlib
import functools
import sys
import warnings

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

from precompute.compare import compare_distances, typicality

METRICS = ("cosine", "euclidean")


def metric_space(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Vectors in which Euclidean distance orders neighbours as ``metric`` does (unit length for cosine)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"embedding vectors must be [N, D], got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("embedding vectors contain NaN or inf")
    if metric == "cosine":
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    return vectors


@contextlib.contextmanager
def quiet_umap():
    """UMAP without its warnings, without compiling its kernels again in every process (`cache_umap_kernels`) and
    without changing torch's CPU thread count.

    umap's numba code (threading layer ``omp``) sets the process's OpenMP thread count to every core on its first
    parallel launch, and torch shares that count: a model trained after it would run on another number of threads
    than the user asked for (OMP_NUM_THREADS, a cluster's slot), so with other weights and oversubscribed cores.
    """
    import torch

    cache_umap_kernels()
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # umap warns that a random_state disables parallelism: wanted here
            yield
    finally:
        torch.set_num_threads(threads)


def umap_kernels() -> list:
    """umap-learn's numba kernels (dispatchers defined in its own modules), each once; imports umap."""
    import umap  # noqa: F401  (imports umap.umap_, layouts, utils, distances: the modules holding the kernels)
    from numba.core.dispatcher import Dispatcher

    modules = [module for name, module in list(sys.modules.items()) if name.split(".")[0] == "umap"]
    kernels = {id(k): k for m in modules for k in vars(m).values() if isinstance(k, Dispatcher)}
    return [k for k in kernels.values() if k.py_func.__module__.split(".")[0] == "umap"]


@functools.cache
def cache_umap_kernels() -> None:
    """Keep umap's compiled numba kernels in numba's on-disk cache, as ``@njit(cache=True)`` would.

    umap-learn declares most kernels without it, so every process that fitted or applied a UMAP compiled them
    again: ~15 s of a 2-core CPU in each build, `assign` and dashboard placing spectra. Loaded from the cache they
    take ~0.2 s and give the same coordinates bit for bit. Numba keys its cache by source file and CPU; where it
    has no writable cache folder the kernels are compiled as before."""
    for kernel in umap_kernels():
        try:
            kernel.enable_caching()
        except RuntimeError:  # numba found no folder it may write to
            return


class EmbeddingProjector:
    """Fit on training vectors ``[n_train, D]``; then ``umap``, ``clusters`` and ``neighbours`` of any vectors.

    Fitted state: ``umap_`` (umap.UMAP), ``kmeans_`` / ``gmm_`` (dicts k → model, GMMs on the first
    ``gmm_components`` principal components ``pca_``), ``nearest_`` (NearestNeighbors on the training vectors).
    """

    def __init__(self, metric: str = "cosine", n_neighbours: int = 10, cluster_ks: tuple[int, ...] = (2, 3, 4, 5),
                 umap_neighbours: int = 15, umap_min_dist: float = 0.1, gmm_components: int = 5, seed: int = 0):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric, self.n_neighbours, self.cluster_ks = metric, n_neighbours, tuple(cluster_ks)
        self.umap_neighbours, self.umap_min_dist = umap_neighbours, umap_min_dist
        self.gmm_components, self.seed = gmm_components, seed

    def fit(self, vectors: np.ndarray) -> "EmbeddingProjector":
        import umap  # slow import (numba): only when projecting

        x = metric_space(vectors, self.metric)
        n = len(x)
        if n <= max(self.cluster_ks, default=1) or n <= self.n_neighbours:
            raise ValueError(f"{n} training galaxies are too few for {self.n_neighbours} neighbours and "
                             f"k = {max(self.cluster_ks)} clusters")
        with quiet_umap():
            self.umap_ = umap.UMAP(n_neighbors=min(self.umap_neighbours, n - 1), min_dist=self.umap_min_dist,
                                   metric="euclidean", random_state=self.seed).fit(x)
        self.kmeans_ = {k: KMeans(k, n_init=10, random_state=self.seed).fit(x) for k in self.cluster_ks}
        self.pca_ = PCA(min(self.gmm_components, n - 1, x.shape[1]), random_state=self.seed).fit(x)
        reduced = self.pca_.transform(x)
        self.gmm_ = {k: GaussianMixture(k, covariance_type="full", reg_covar=1e-4, n_init=3,
                                        random_state=self.seed).fit(reduced) for k in self.cluster_ks}
        self.nearest_ = NearestNeighbors(n_neighbors=self.n_neighbours + 1).fit(x)
        return self

    def umap(self, vectors: np.ndarray) -> np.ndarray:
        """2-D UMAP coordinates of new vectors, float32 ``[N, 2]`` (``umap_.embedding_`` holds the training ones)."""
        with quiet_umap():
            return self.umap_.transform(metric_space(vectors, self.metric)).astype(np.float32)

    def clusters(self, vectors: np.ndarray) -> pd.DataFrame:
        """Labels ``kmeans_k<k>`` (cosine k-means for a cosine embedding) and ``gmm_k<k>``, int32."""
        x = metric_space(vectors, self.metric)
        reduced = self.pca_.transform(x)
        labels = {f"kmeans_k{k}": model.predict(x) for k, model in self.kmeans_.items()}
        labels |= {f"gmm_k{k}": model.predict(reduced) for k, model in self.gmm_.items()}
        return pd.DataFrame(labels).astype(np.int32)

    def neighbours(self, vectors: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Positions (in the training set) and distances of the ``n_neighbours`` nearest training vectors.

        ``exclude[i]`` is the training position of query ``i`` itself (−1 when it is not a training galaxy), so a
        training galaxy is never its own neighbour. Distances are in the embedding's metric, nearest first.
        """
        x = metric_space(vectors, self.metric)
        distance, index = self.nearest_.kneighbors(x, n_neighbors=self.n_neighbours + 1)
        exclude = np.full(len(x), -1) if exclude is None else np.asarray(exclude)
        keep = index != exclude[:, None]
        keep[keep.sum(axis=1) > self.n_neighbours, -1] = False  # not excluded: drop the farthest instead
        k = self.n_neighbours
        index, distance = index[keep].reshape(-1, k), distance[keep].reshape(-1, k)
        if self.metric == "cosine":
            distance = distance**2 / 2  # chord length between unit vectors -> cosine distance 1 − cos
        return index.astype(np.int32), distance.astype(np.float32)


def property_correlation(vectors: np.ndarray, properties: pd.DataFrame, train: np.ndarray,
                         n_components: int = 10) -> pd.DataFrame:
    """Seed 000 Fig. 10: principal components of the embedding (fitted on ``train``) × Pearson r with each
    numeric property over all galaxies. One row per component: ``component``, ``explained_variance`` (ratio),
    then one column per property (NaN where a property is constant or missing)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    pca = PCA(min(n_components, int(train.sum()) - 1, vectors.shape[1])).fit(vectors[train])
    scores = pca.transform(vectors)
    table = {"component": np.arange(pca.n_components_, dtype=np.int32),
             "explained_variance": pca.explained_variance_ratio_}
    for name, values in numeric_properties(properties).items():
        table[name] = [pearson(scores[:, c], values) for c in range(pca.n_components_)]
    return pd.DataFrame(table)


def numeric_properties(galaxies: pd.DataFrame) -> dict[str, np.ndarray]:
    """The numeric (and boolean, as 0/1) property columns of a galaxy table, as float arrays."""
    skip = {"ra", "dec", "n_bins"}
    out = {}
    for name in galaxies.columns:
        column = galaxies[name]
        if name in skip or name.endswith(("_node", "_index")):
            continue
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            out[name] = column.to_numpy(dtype=float, na_value=np.nan)
    return out


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r over the pairs where both are finite; NaN when fewer than 3 or either is constant."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return np.nan
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def knn_regression_r2(vectors: np.ndarray, targets: pd.DataFrame, train: np.ndarray, k: int = 10,
                      metric: str = "cosine") -> dict[str, float]:
    """R² on the held-out galaxies (``~train``) of predicting each target column by the mean of its k nearest
    training galaxies in the embedding: how much of a property the embedding carries without being told it."""
    x = metric_space(vectors, metric)
    nearest = NearestNeighbors(n_neighbors=k).fit(x[train])
    _, index = nearest.kneighbors(x[~train])
    scores = {}
    for name in targets.columns:
        y = targets[name].to_numpy(dtype=float)
        predicted, truth = y[train][index].mean(axis=1), y[~train]
        ok = np.isfinite(predicted) & np.isfinite(truth)
        residual = np.sum((truth[ok] - predicted[ok]) ** 2)
        scores[name] = float(1 - residual / np.sum((truth[ok] - truth[ok].mean()) ** 2))
    return scores


def project_embedding(vectors: np.ndarray, galaxies: pd.DataFrame, metric: str, config: dict, seed: int) -> dict:
    """Everything the bundle keeps for one embedding (docs/bundle-schema.md, ``embeddings/E/*``).

    ``config`` is the ``projections`` section. Returns a dict of arrays / tables keyed by file stem, plus the
    fitted ``projector``.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) != len(galaxies):
        raise ValueError(f"{len(vectors)} embedding vectors for {len(galaxies)} galaxies")
    train = galaxies["split"].to_numpy() == "train"
    train_index = np.flatnonzero(train)
    projector = EmbeddingProjector(
        metric, n_neighbours=config["n_neighbours"], cluster_ks=tuple(config["cluster_ks"]),
        umap_neighbours=config["umap_neighbours"], umap_min_dist=config["umap_min_dist"],
        gmm_components=config["gmm_components"], seed=seed,
    ).fit(vectors[train])
    umap_xy = np.empty((len(vectors), 2), dtype=np.float32)
    umap_xy[train] = projector.umap_.embedding_
    if (~train).any():
        umap_xy[~train] = projector.umap(vectors[~train])
    position = np.full(len(vectors), -1)
    position[train_index] = np.arange(len(train_index))
    index, distance = projector.neighbours(vectors, exclude=position)
    return {
        "projector": projector,
        "vectors": vectors,
        "umap": umap_xy,
        "knn": train_index[index].astype(np.int32),
        "knn_distance": distance,
        "clusters": projector.clusters(vectors),
        "property_correlation": property_correlation(vectors, galaxies, train, config["correlation_components"]),
    }


def truth_figures(vectors: np.ndarray, galaxies: pd.DataFrame, metric: str, knn_distance: np.ndarray,
                  clusters: pd.DataFrame, k: int = 10,
                  properties: tuple[str, ...] = ("log_mstar", "log_age_lw", "ew_halpha")) -> dict:
    """How well an embedding recovers known properties (mock truth or a catalogue), for the bundle's metrics:
    k-NN R² of held-out ``properties``; with a ``quenched`` column, the accuracy of 2-means at separating quenched
    from star-forming galaxies and the KS p-value of their k-th-neighbour distances; the KS p-value of train vs
    val k-th-neighbour distances (same distribution expected). Figures whose columns are missing are left out."""
    train = galaxies["split"].to_numpy() == "train"
    tenth = typicality(knn_distance, k=k)
    present = [p for p in properties if p in galaxies]
    figures = {f"knn_r2_{p}": r2 for p, r2 in knn_regression_r2(vectors, galaxies[present], train, k, metric).items()}
    figures["ks_p_train_vs_val"] = compare_distances(tenth[train], tenth[~train])["p_value"]
    if "quenched" in galaxies:
        quenched = galaxies["quenched"].to_numpy(dtype=bool)
        agreement = np.mean(clusters["kmeans_k2"].to_numpy() == quenched)
        figures["kmeans_k2_quenched_accuracy"] = float(max(agreement, 1 - agreement))  # labels are arbitrary
        figures["ks_p_quenched_vs_star_forming"] = compare_distances(tenth[quenched], tenth[~quenched])["p_value"]
    return figures
