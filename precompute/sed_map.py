"""Build stage of surveys of single spectra (seed 002): k-means and a MiniSom map of the DESOM-1 latent codes.

When every object of a build is one spectrum (SDSS spec files, spectra-set FITS, or the mock SED library with
``mock.format = "sed"``), the objects are those spectra. DESOM-1 maps them as it maps a cube's binned spectra;
their latent codes are then grouped by k-means (k = 6 in seed 002) and ordered by a classic MiniSom map (10 × 10),
as in the seed paper, and are the embedding the dashboard projects with UMAP. Fingerprints, DESOM-2 and the cube and
image models need cubes and are not run.

    galaxies = build_sed_map(writer, galaxies, latent, config)   # section sed_map, columns sed_kmeans, sed_node
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from precompute import schema
from precompute.bundle import BundleWriter
from precompute.models.som import SOM

QUENCHED_LOG_SSFR = -11.0  # yr⁻¹: the usual split between star-forming and quiescent galaxies


def is_single_spectrum_survey(spaxel_bins: dict) -> bool:
    """True when every object is one spectrum (a 1 × 1 spaxel map), not a cube."""
    return all(np.size(bins) == 1 for bins in spaxel_bins.values())


def galaxy_latent(bins: pd.DataFrame, latent: np.ndarray, n_galaxies: int) -> np.ndarray:
    """Each object's latent code from its one binned spectrum's (rows of `bins` in any order)."""
    index = bins["galaxy_index"].to_numpy()
    if len(index) != n_galaxies or np.bincount(index, minlength=n_galaxies).max() != 1:
        raise ValueError(f"a survey of single spectra has one binned spectrum per object: {len(index)} spectra "
                         f"for {n_galaxies} objects")
    out = np.empty((n_galaxies, latent.shape[1]), np.float32)
    out[index] = latent
    return out


def nearest(prototypes: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """Index of the nearest of `prototypes` [n, D] (Euclidean) for each latent code [N, D]: a new object's MiniSom
    node (its best-matching unit) or k-means group, as the build assigned its own objects."""
    latent, prototypes = np.asarray(latent, np.float64), np.asarray(prototypes, np.float64)
    distances = (latent ** 2).sum(1)[:, None] - 2 * latent @ prototypes.T + (prototypes ** 2).sum(1)[None]
    return np.argmin(distances, axis=1).astype(np.int64)


def purity(labels, truth) -> float:
    """Share of objects whose truth is the most common one of their group (1 = every group is pure)."""
    frame = pd.DataFrame({"label": np.asarray(labels), "truth": np.asarray(truth).astype(str)})
    return float(frame.groupby("label")["truth"].agg(lambda t: t.value_counts().iat[0]).sum() / len(frame))


def truth_purities(labels, galaxies: pd.DataFrame) -> dict:
    """Purity of a grouping against the truth the table carries: star-forming vs quenched (log sSFR < −11) and
    the star-formation history kind (the mock SED library's `sfh`)."""
    out = {}
    if "log_ssfr" in galaxies:
        out["purity_quenched"] = purity(labels, galaxies["log_ssfr"].to_numpy() < QUENCHED_LOG_SSFR)
    if "sfh" in galaxies:
        out["purity_sfh"] = purity(labels, galaxies["sfh"])
    return out


def build_sed_map(writer: BundleWriter, galaxies: pd.DataFrame, latent: np.ndarray, config: dict) -> pd.DataFrame:
    """k-means and MiniSom on the objects' latent codes (config["sed_map"]), both fitted on the training objects;
    write section `sed_map`. Returns `galaxies` with `sed_kmeans` and `sed_node`."""
    cfg, seed = config["sed_map"], int(config["seed"])
    train = galaxies["split"].to_numpy() == "train"
    start = time.perf_counter()
    kmeans = KMeans(n_clusters=cfg["kmeans_k"], n_init=10, random_state=seed).fit(latent[train])
    clusters = kmeans.predict(latent).astype(np.int32)
    som = SOM(cfg["minisom_rows"], cfg["minisom_cols"], n_epochs=cfg["minisom_epochs"], seed=seed,
              backend="minisom").fit(latent[train])
    nodes = som.transform(latent).astype(np.int32)
    writer.write(schema.SED_GRID, {"rows": cfg["minisom_rows"], "cols": cfg["minisom_cols"], "topology": "rectangular",
                                   "latent_dim": int(latent.shape[1]), "kmeans_k": cfg["kmeans_k"]})
    writer.write(schema.SED_WEIGHTS, som.weights_.reshape(-1, latent.shape[1]).astype(np.float32))
    writer.write(schema.SED_KMEANS_CENTRES, kmeans.cluster_centers_.astype(np.float32))
    writer.write(schema.SED_HITS, np.bincount(nodes, minlength=cfg["minisom_rows"] * cfg["minisom_cols"]))
    writer.write(schema.SED_UMATRIX, np.asarray(som.umatrix(), np.float32))
    galaxies = galaxies.assign(sed_kmeans=clusters, sed_node=nodes)
    writer.metrics["sed_map"] = {
        "seconds": round(time.perf_counter() - start, 2),
        "minisom_quantization_error": som.quantization_error(latent[train]),
        "minisom_topographic_error": som.topographic_error(latent[train]),
        **{f"kmeans_{k}": v for k, v in truth_purities(clusters, galaxies).items()},
        **{f"minisom_{k}": v for k, v in truth_purities(nodes, galaxies).items()},
    }
    writer.section("sed_map")
    return galaxies
