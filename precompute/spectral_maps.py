"""Build stage of the spectral maps (seed 001): DESOM-1 on binned spectra, fingerprints, DESOM-2 on fingerprints.

    galaxies, bins, fingerprints = build_spectral_maps(writer, galaxies, bins, wave, flux, ivar, config)

Models are trained on the training galaxies (``split == 'train'``) only; every bin and galaxy is then placed on
the frozen maps, and the held-out galaxies give the honest figures (topographic error, autoencoder vs PCA).
Sections and files: docs/bundle-schema.md (`desom1`, `fingerprints`, `desom2`).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from precompute.bundle import BundleWriter
from precompute.fingerprints import fingerprint_counts, node_scale, normalise_fingerprints
from precompute.models.autoencoder import fingerprint_autoencoder, spectrum_autoencoder
from precompute.models.desom import DESOM
from precompute.models.som import SOM, adjacency, grid_coordinates


# Bin columns that are bookkeeping, not properties of the spectrum.
NOT_PROPERTIES = {"galaxy_index", "bin_id", "desom1_node", "desom1_qe", "desom2_node"}
GALAXY_PREFIX = "galaxy."  # galaxy properties joined to their bins are named galaxy.<column>


# ---------------------------------------------------------------------------------------------------- models
def spectrum_desom(n_wave: int, cfg: dict, seed: int, device: str = "auto", verbose: bool = True) -> DESOM:
    """DESOM-1 as configured by config["desom1"] (unfitted)."""
    autoencoder = spectrum_autoencoder(n_wave, cfg["latent_dim"], cfg["channels"], cfg["kernel_size"])
    return DESOM(autoencoder, **_desom_params(cfg), seed=seed, device=device, verbose=verbose)


def fingerprint_desom(rows: int, cols: int, cfg: dict, seed: int, device: str = "auto", verbose: bool = True) -> DESOM:
    """DESOM-2 as configured by config["desom2"] on rows x cols fingerprints (unfitted)."""
    autoencoder = fingerprint_autoencoder(rows, cols, cfg["latent_dim"], cfg["channels"], cfg["kernel_size"])
    return DESOM(autoencoder, **_desom_params(cfg), seed=seed, device=device, verbose=verbose)


def _desom_params(cfg: dict) -> dict:
    return dict(rows=cfg["rows"], cols=cfg["cols"], topology=cfg["topology"], gamma=cfg["gamma"],
                sigma_start=cfg["sigma_start"], sigma_end=cfg["sigma_end"], pretrain_epochs=cfg["pretrain_epochs"],
                n_epochs=cfg["epochs"], batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"],
                patience=cfg["patience"], validation_fraction=cfg["validation_fraction"], threads=cfg["threads"])


# ---------------------------------------------------------------------------------------------- map summaries
def member_spectra(flux, ivar, nodes, n_nodes: int) -> np.ndarray:
    """float32 [4, K, n_wave]: per node the mean, 16th, 50th and 84th percentile of its members' good pixels
    (NaN where a node has no member with a good pixel)."""
    out = np.full((4, n_nodes, flux.shape[1]), np.nan, dtype=np.float32)
    order = np.argsort(nodes, kind="stable")
    bounds = np.searchsorted(nodes[order], np.arange(n_nodes + 1))
    for k in tqdm(range(n_nodes), desc="member spectra", leave=False, disable=None):
        members = order[bounds[k]:bounds[k + 1]]
        if members.size:
            values = np.where(ivar[members] > 0, flux[members], np.nan)
            out[:, k] = _nan_percentiles(values, (16, 50, 84), with_mean=True)
    return out


def _nan_percentiles(values: np.ndarray, percentiles, with_mean: bool = False) -> np.ndarray:
    """Percentiles along axis 0 ignoring NaN (numpy's linear interpolation), one sort for all of them:
    np.nanpercentile loops over the columns in Python, ~20x slower on [members, n_wave] blocks."""
    ordered = np.sort(values, axis=0)  # NaN sort last
    n = np.isfinite(values).sum(0)
    rows = []
    if with_mean:
        with np.errstate(invalid="ignore", divide="ignore"):
            rows.append(np.where(n > 0, np.nansum(values, axis=0) / np.maximum(n, 1), np.nan))
    for q in percentiles:
        position = (np.maximum(n, 1) - 1) * q / 100.0
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, np.maximum(n - 1, 0))
        below = np.take_along_axis(ordered, low[None], 0)[0]
        above = np.take_along_axis(ordered, high[None], 0)[0]
        rows.append(np.where(n > 0, below + (above - below) * (position - low), np.nan))
    return np.asarray(rows)


def property_table(bins: pd.DataFrame, galaxies: pd.DataFrame) -> pd.DataFrame:
    """Every numeric (or boolean) property of each bin: its own columns and its galaxy's as galaxy.<column>."""
    own = {c: bins[c] for c in bins.columns if c not in NOT_PROPERTIES and _numeric(bins[c])}
    joined = galaxies.iloc[bins["galaxy_index"].to_numpy()].reset_index(drop=True)
    theirs = {GALAXY_PREFIX + c: joined[c] for c in galaxies.columns if c not in NOT_PROPERTIES and _numeric(joined[c])}
    return pd.DataFrame({k: pd.to_numeric(v, errors="coerce").astype(float).to_numpy()
                         for k, v in {**own, **theirs}.items()})


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def node_properties(properties: pd.DataFrame, nodes, n_nodes: int, n_hist: int = 20):
    """Per-node statistics of every property over the node's members (NaNs ignored).

    Returns (table with one row per (node, property): node, property, n, mean, median, p16, p84;
    histograms {P: float32 [K, n_hist] fractions of the node's members per bin, P__edges: float64 edges}).
    Edges span the 0.5–99.5 percentiles of all members (outliers fall in the end bins); yes/no properties get two.
    """
    nodes = np.asarray(nodes)
    rows, histograms = [], {}
    for name in properties.columns:
        values = properties[name].to_numpy(dtype=float)
        finite = np.isfinite(values)
        frame = pd.DataFrame({"node": nodes[finite], "value": values[finite]})
        grouped = frame.groupby("node")["value"]
        stats = pd.DataFrame({"n": grouped.size(), "mean": grouped.mean(), "median": grouped.median(),
                              "p16": grouped.quantile(0.16), "p84": grouped.quantile(0.84)})
        stats = stats.reindex(range(n_nodes))
        stats["n"] = stats["n"].fillna(0).astype(np.int64)
        rows.append(stats.rename_axis("node").reset_index().assign(property=name))

        edges = _histogram_edges(values[finite], n_hist)
        which = np.clip(np.searchsorted(edges, values[finite], side="right") - 1, 0, edges.size - 2)
        counts = np.zeros((n_nodes, edges.size - 1))
        np.add.at(counts, (nodes[finite], which), 1.0)
        histograms[name] = (counts / np.maximum(counts.sum(1, keepdims=True), 1.0)).astype(np.float32)
        histograms[f"{name}__edges"] = edges
    columns = ["node", "property", "n", "mean", "median", "p16", "p84"]
    table = pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)
    return table, histograms


def _histogram_edges(values: np.ndarray, n_hist: int) -> np.ndarray:
    if values.size == 0:
        return np.array([0.0, 1.0])
    if np.isin(values, (0.0, 1.0)).all():
        return np.array([-0.5, 0.5, 1.5])
    low, high = np.percentile(values, [0.5, 99.5])
    if not high > low:
        low, high = values.min() - 0.5, values.max() + 0.5
    return np.linspace(low, high, n_hist + 1)


def node_map_smoothness(values, rows: int, cols: int, topology: str = "rectangular") -> float:
    """Pearson r between each node's value and the mean of its grid neighbours' (nodes with NaN left out);
    near 1 when a property varies smoothly across the map."""
    values = np.asarray(values, dtype=float)
    adjacent = adjacency(rows, cols, topology).numpy() & np.isfinite(values)[None, :]
    n_neighbours = adjacent.sum(1)
    neighbour_mean = (adjacent * np.nan_to_num(values)[None, :]).sum(1) / np.maximum(n_neighbours, 1)
    ok = np.isfinite(values) & (n_neighbours > 0)
    if ok.sum() < 3 or np.std(values[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(values[ok], neighbour_mean[ok])[0, 1])


def same_label_distance_ratio(nodes, labels, rows: int, cols: int, topology: str = "rectangular") -> float:
    """Mean grid distance between items sharing a label over the mean between all items (pairs of distinct
    items): below 1 when items of a kind gather in the same region of the map, ~1 for a map blind to the label."""
    grid = grid_coordinates(rows, cols, topology).numpy()[np.asarray(nodes)]
    labels = np.asarray(labels).astype(str)
    distance = np.linalg.norm(grid[:, None] - grid[None, :], axis=-1)
    pairs = ~np.eye(len(labels), dtype=bool)
    same = (labels[:, None] == labels[None, :]) & pairs
    if not same.any() or distance[pairs].mean() == 0:
        return float("nan")
    return float(distance[same].mean() / distance[pairs].mean())


def autoencoder_vs_pca(model: DESOM, train_flux, train_ivar, test_flux, test_ivar) -> dict:
    """Masked reconstruction MSE on test spectra: the autoencoder vs PCA with as many components as the latent.

    Fair terms: both see the same spectra and are scored over the same good pixels; PCA is fitted on the same
    training spectra, with bad pixels filled by the training mean (PCA has no mask; zeros would hurt it)."""
    train_good, test_good = train_ivar > 0, test_ivar > 0
    mean = np.where(train_good, train_flux, 0).sum(0) / np.maximum(train_good.sum(0), 1)
    n_components = int(min(model.autoencoder_.config["latent_dim"], train_flux.shape[0], train_flux.shape[1]))
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=0)
    pca.fit(np.where(train_good, train_flux, mean))
    pca_recon = pca.inverse_transform(pca.transform(np.where(test_good, test_flux, mean)))
    ae_recon = model.reconstruct(test_flux, test_good)
    n_good = max(int(test_good.sum()), 1)
    mse_ae = float((test_good * (test_flux - ae_recon) ** 2).sum() / n_good)
    mse_pca = float((test_good * (test_flux - pca_recon) ** 2).sum() / n_good)
    return {"val_mse_autoencoder": mse_ae, "val_mse_pca": mse_pca, "pca_components": n_components,
            "improvement_over_pca": 1.0 - mse_ae / mse_pca if mse_pca > 0 else float("nan")}


# ------------------------------------------------------------------------------------------------ the stage
def build_spectral_maps(writer: BundleWriter, galaxies: pd.DataFrame, bins: pd.DataFrame, wave, flux, ivar,
                        config: dict):
    """Train DESOM-1, fingerprint every galaxy, train DESOM-2; write the three sections through `writer`.

    Returns (galaxies + desom2_node, bins + desom1_node and desom1_qe, fingerprints float32 [n_galaxies, R, C]).
    """
    flux, ivar = np.asarray(flux, np.float32), np.asarray(ivar, np.float32)
    if flux.shape != ivar.shape or flux.shape != (len(bins), len(wave)):
        raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must be [n_bins={len(bins)}, n_wave={len(wave)}]")
    seed, device = int(config["seed"]), config.get("device", "auto")
    bin_split = galaxies["split"].to_numpy()[bins["galaxy_index"].to_numpy()]
    train, held_out = bin_split == "train", bin_split == "val"
    if not train.any():
        raise ValueError("no binned spectrum belongs to a training galaxy (split == 'train'): nothing to learn from")

    # DESOM-1 on (a random subsample of) the training galaxies' bins
    cfg = config["desom1"]
    fit_on = np.flatnonzero(train)
    if fit_on.size > cfg["max_train_spectra"]:
        fit_on = np.sort(np.random.default_rng(seed).choice(fit_on, cfg["max_train_spectra"], replace=False))
    model = spectrum_desom(len(wave), cfg, seed, device).fit(flux[fit_on], ivar[fit_on] > 0)
    latent = model.encode(flux, ivar > 0)
    nodes, qe = model.bmu(latent, latent=True)
    n_nodes = cfg["rows"] * cfg["cols"]
    bins = bins.assign(desom1_node=nodes.astype(np.int32), desom1_qe=qe.astype(np.float32))

    writer.json("desom1/grid.json", {"rows": cfg["rows"], "cols": cfg["cols"], "topology": cfg["topology"],
                                     "latent_dim": cfg["latent_dim"], "gamma": cfg["gamma"]})
    writer.blob("desom1/model.pt", model.to_bytes())
    writer.array("desom1/prototypes_latent", model.prototypes_.astype(np.float32))
    writer.array("desom1/prototype_spectra", model.decoded_prototypes().astype(np.float32))
    writer.array("desom1/member_spectra", member_spectra(flux, ivar, nodes, n_nodes))
    writer.array("desom1/hits", np.bincount(nodes, minlength=n_nodes).astype(np.int64))
    writer.array("desom1/umatrix", model.umatrix().astype(np.float32))
    table, histograms = node_properties(property_table(bins, galaxies), nodes, n_nodes, cfg["histogram_bins"])
    writer.table("desom1/node_properties", table)
    writer.arrays("desom1/node_histograms", histograms)

    metrics = {"topographic_error": model.topographic_error(latent[train], latent=True),
               "quantization_error": model.quantization_error(latent[train], latent=True),
               "epochs": model.n_epochs_, "best_epoch": model.best_epoch_, "seconds": model.seconds_,
               "train_spectra": int(fit_on.size), "val_spectra": int(held_out.sum())}
    if held_out.any():
        metrics["val_topographic_error"] = model.topographic_error(latent[held_out], latent=True)
        metrics["val_quantization_error"] = model.quantization_error(latent[held_out], latent=True)
        metrics.update(autoencoder_vs_pca(model, flux[fit_on], ivar[fit_on], flux[held_out], ivar[held_out]))
    medians = table.pivot(index="node", columns="property", values="median")
    metrics["smoothness"] = {p: node_map_smoothness(medians[p].to_numpy(), cfg["rows"], cfg["cols"], cfg["topology"])
                             for p in medians.columns if not p.startswith(GALAXY_PREFIX)}
    writer.metrics["desom1"] = metrics
    writer.section("desom1")

    # Fingerprints, normalised with the training galaxies' per-node levels
    counts = fingerprint_counts(bins["galaxy_index"].to_numpy(), nodes, len(galaxies), n_nodes)
    train_galaxies = galaxies["split"].to_numpy() == "train"
    scale = node_scale(counts[train_galaxies], config["fingerprints"]["clip_percentile"])
    fingerprints = normalise_fingerprints(counts, scale, cfg["rows"], cfg["cols"])
    writer.array("fingerprints/counts", counts)
    writer.array("fingerprints/fingerprints", fingerprints)
    writer.array("fingerprints/node_scale", scale)
    writer.section("fingerprints")

    galaxy_nodes = build_desom2(writer, galaxies, fingerprints, config)
    return galaxies.assign(desom2_node=galaxy_nodes), bins, fingerprints


def build_desom2(writer: BundleWriter, galaxies: pd.DataFrame, fingerprints: np.ndarray, config: dict) -> np.ndarray:
    """Map the fingerprints with DESOM-2 (or a classic MiniSom SOM); write section `desom2`; node per galaxy."""
    cfg, seed = config["desom2"], int(config["seed"])
    rows1, cols1 = fingerprints.shape[1:]
    train = galaxies["split"].to_numpy() == "train"
    flat = fingerprints.reshape(len(fingerprints), -1)
    start = time.perf_counter()
    if cfg["backend"] == "desom":
        model = fingerprint_desom(rows1, cols1, cfg, seed, config.get("device", "auto")).fit(fingerprints[train])
        latent = model.encode(fingerprints)
        nodes, _ = model.bmu(latent, latent=True)
        prototypes, umatrix = model.decoded_prototypes(), model.umatrix()
        quality = {"topographic_error": model.topographic_error(latent[train], latent=True),
                   "quantization_error": model.quantization_error(latent[train], latent=True),
                   "epochs": model.n_epochs_}
        writer.blob("desom2/model.pt", model.to_bytes())
    elif cfg["backend"] == "minisom":
        som = SOM(cfg["rows"], cfg["cols"], cfg["topology"], n_epochs=cfg["epochs"], seed=seed,
                  backend="minisom").fit(flat[train])
        nodes = som.transform(flat)
        prototypes, umatrix = som.weights_.reshape(-1, rows1, cols1), som.umatrix()
        quality = {"topographic_error": som.topographic_error(flat[train]),
                   "quantization_error": som.quantization_error(flat[train]), "epochs": cfg["epochs"]}
    else:
        raise ValueError(f"config desom2.backend must be 'desom' or 'minisom', got {cfg['backend']!r}")
    n_nodes = cfg["rows"] * cfg["cols"]
    writer.json("desom2/grid.json", {"rows": cfg["rows"], "cols": cfg["cols"], "topology": cfg["topology"],
                                     "latent_dim": cfg["latent_dim"], "backend": cfg["backend"]})
    writer.array("desom2/prototypes", np.asarray(prototypes, dtype=np.float32))
    writer.array("desom2/hits", np.bincount(nodes, minlength=n_nodes).astype(np.int64))
    writer.array("desom2/umatrix", np.asarray(umatrix, dtype=np.float32))
    metrics = {**quality, "backend": cfg["backend"], "seconds": time.perf_counter() - start}
    if "morphology" in galaxies:
        metrics["morphology_distance_ratio"] = same_label_distance_ratio(nodes, galaxies["morphology"], cfg["rows"],
                                                                         cfg["cols"], cfg["topology"])
    writer.metrics["desom2"] = metrics
    writer.section("desom2")
    return nodes.astype(np.int32)
