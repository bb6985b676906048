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

from precompute import schema
from precompute.bundle import BundleWriter
from precompute.device import resolve_device
from precompute.fingerprints import fingerprint_counts, node_scale, normalise_fingerprints
from precompute.models.autoencoder import fingerprint_autoencoder, spectrum_autoencoder
from precompute.models.desom import DESOM, FIT_SAMPLE, StreamedRows
from precompute.models.som import SOM, adjacency, grid_coordinates
from precompute.node_statistics import member_spectra, node_properties, property_table
from precompute.schema import GALAXY_PREFIX

CPU_TRAIN_SPECTRA = 6000  # DESOM-1's training sample on a CPU ("auto"): ~1 min of training on 2 cores
SCORED_SPECTRA = 6000  # spectra the autoencoder-vs-PCA figure is measured on: its precision, not the survey


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
    bins, _ = build_desom1(writer, galaxies, bins, wave, flux, ivar, config)
    fingerprints = write_fingerprints(writer, galaxies, bins, config)
    galaxy_nodes = build_desom2(writer, galaxies, fingerprints, config)
    return galaxies.assign(desom2_node=galaxy_nodes), bins, fingerprints


def build_desom1(writer: BundleWriter, galaxies: pd.DataFrame, bins: pd.DataFrame, wave, flux, ivar, config: dict):
    """Train DESOM-1 on the training galaxies' binned spectra, place every spectrum, write section `desom1`.
    Returns (bins + desom1_node and desom1_qe, latent float32 [n_bins, latent_dim]).

    `flux` and `ivar` are [n_bins, n_wave] arrays or, in a build, `precompute.rows.NpyRows` of the bundle's files:
    only the training sample, one chunk, or one node's members are read at a time."""
    if flux.shape != ivar.shape or flux.shape != (len(bins), len(wave)):
        raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must be [n_bins={len(bins)}, n_wave={len(wave)}]")
    seed, device = int(config["seed"]), config.get("device", "auto")
    bin_split = galaxies["split"].to_numpy()[bins["galaxy_index"].to_numpy()]
    train, held_out = bin_split == "train", bin_split == "val"
    if not train.any():
        raise ValueError("no binned spectrum belongs to a training galaxy (split == 'train'): nothing to learn from")

    # DESOM-1 on (a random sample of) the training galaxies' bins, streamed from disk when they are many
    cfg = config["desom1"]
    fit_on = random_rows(np.flatnonzero(train), training_sample_size(cfg, device), seed)
    inputs = (StreamedRows(flux, ivar, fit_on),) if fit_on.size > FIT_SAMPLE else (flux[fit_on], ivar[fit_on] > 0)
    model = spectrum_desom(len(wave), cfg, seed, device).fit(*inputs)
    latent = encode_in_chunks(model, flux, ivar)
    nodes, qe = model.bmu(latent, latent=True)
    bins = bins.assign(desom1_node=nodes.astype(np.int32), desom1_qe=qe.astype(np.float32))

    table = write_desom1(writer, cfg, bins, galaxies, flux, ivar, model.prototypes_, model.decoded_prototypes(),
                         model.umatrix(), model.to_bytes())

    metrics = {"topographic_error": model.topographic_error(latent[train], latent=True),
               "quantization_error": model.quantization_error(latent[train], latent=True),
               "epochs": model.n_epochs_, "best_epoch": model.best_epoch_, "seconds": model.seconds_,
               "train_spectra": int(fit_on.size), "val_spectra": int(held_out.sum())}
    if held_out.any():
        metrics["val_topographic_error"] = model.topographic_error(latent[held_out], latent=True)
        metrics["val_quantization_error"] = model.quantization_error(latent[held_out], latent=True)
        # a sample as large as the training one: the figure's precision, not a copy of every held-out spectrum
        scored = random_rows(np.flatnonzero(held_out), SCORED_SPECTRA, seed)
        fitted = random_rows(fit_on, SCORED_SPECTRA, seed)  # the PCA baseline's fit, in memory
        metrics.update(autoencoder_vs_pca(model, flux[fitted], ivar[fitted], flux[scored], ivar[scored]))
    medians = table.pivot(index="node", columns="property", values="median")
    metrics["smoothness"] = {p: node_map_smoothness(medians[p].to_numpy(), cfg["rows"], cfg["cols"], cfg["topology"])
                             for p in medians.columns if not p.startswith(GALAXY_PREFIX)}
    writer.metrics["desom1"] = metrics
    return bins, latent


def training_sample_size(cfg: dict, device: str) -> int | None:
    """How many training spectra DESOM-1 sees (config.desom1.max_train_spectra); None = every one."""
    cap = cfg["max_train_spectra"]
    if cap == "auto":
        return None if resolve_device(device).startswith("cuda") else CPU_TRAIN_SPECTRA
    return cap


def random_rows(rows: np.ndarray, at_most: int | None, seed: int) -> np.ndarray:
    """`rows` or, when there are more, a random sample of `at_most` of them in file order."""
    if at_most is None or rows.size <= at_most:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, at_most, replace=False))


def encode_in_chunks(model: DESOM, flux, ivar, chunk: int = 16384) -> np.ndarray:
    """Latent vectors of every spectrum, read chunk by chunk (the spectra may be rows of the survey's files)."""
    chunks = range(0, len(flux), chunk)
    return np.concatenate([model.encode(flux[i:i + chunk], ivar[i:i + chunk] > 0)
                           for i in tqdm(chunks, desc="encoding spectra", unit="chunk", leave=False, disable=None)])


def write_desom1(writer: BundleWriter, cfg: dict, bins: pd.DataFrame, galaxies: pd.DataFrame, flux, ivar,
                 prototypes_latent, prototype_spectra, umatrix, model_bytes: bytes) -> pd.DataFrame:
    """Write section `desom1` for bins already placed on the map (`bins.desom1_node`): the map, its member
    spectra and node statistics. Returns the node-properties table."""
    nodes, n_nodes = bins["desom1_node"].to_numpy(), cfg["rows"] * cfg["cols"]
    writer.write(schema.DESOM1_GRID, {"rows": cfg["rows"], "cols": cfg["cols"], "topology": cfg["topology"],
                                      "latent_dim": cfg["latent_dim"], "gamma": cfg["gamma"]})
    writer.write(schema.DESOM1_MODEL, model_bytes)
    writer.write(schema.DESOM1_PROTOTYPES_LATENT, prototypes_latent)
    writer.write(schema.DESOM1_PROTOTYPE_SPECTRA, prototype_spectra)
    writer.write(schema.DESOM1_MEMBER_SPECTRA, member_spectra(flux, ivar, nodes, n_nodes))
    writer.write(schema.DESOM1_HITS, np.bincount(nodes, minlength=n_nodes))
    writer.write(schema.DESOM1_UMATRIX, umatrix)
    table, histograms = node_properties(property_table(bins, galaxies), nodes, n_nodes, cfg["histogram_bins"])
    writer.write(schema.DESOM1_NODE_PROPERTIES, table)
    writer.write(schema.DESOM1_NODE_HISTOGRAMS, histograms)
    writer.section("desom1")
    return table


def write_fingerprints(writer: BundleWriter, galaxies: pd.DataFrame, bins: pd.DataFrame, config: dict) -> np.ndarray:
    """Fingerprint every galaxy from its bins' DESOM-1 nodes, normalised with the training galaxies' per-node
    levels; write section `fingerprints`. Returns float32 [n_galaxies, rows, cols]."""
    rows, cols = config["desom1"]["rows"], config["desom1"]["cols"]
    counts = fingerprint_counts(bins["galaxy_index"].to_numpy(), bins["desom1_node"].to_numpy(), len(galaxies),
                                rows * cols)
    train_galaxies = galaxies["split"].to_numpy() == "train"
    scale = node_scale(counts[train_galaxies], config["fingerprints"]["clip_percentile"])
    fingerprints = normalise_fingerprints(counts, scale, rows, cols)
    writer.write(schema.FINGERPRINT_COUNTS, counts)
    writer.write(schema.FINGERPRINTS, fingerprints)
    writer.write(schema.FINGERPRINT_NODE_SCALE, scale)
    writer.section("fingerprints")
    return fingerprints


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
        writer.write(schema.DESOM2_MODEL, model.to_bytes())
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
    writer.write(schema.DESOM2_GRID, {"rows": cfg["rows"], "cols": cfg["cols"], "topology": cfg["topology"],
                                     "latent_dim": cfg["latent_dim"], "backend": cfg["backend"]})
    writer.write(schema.DESOM2_PROTOTYPES, np.asarray(prototypes, dtype=np.float32))
    writer.write(schema.DESOM2_HITS, np.bincount(nodes, minlength=n_nodes).astype(np.int64))
    writer.write(schema.DESOM2_UMATRIX, np.asarray(umatrix, dtype=np.float32))
    metrics = {**quality, "backend": cfg["backend"], "seconds": time.perf_counter() - start}
    if "morphology" in galaxies:
        metrics["morphology_distance_ratio"] = same_label_distance_ratio(nodes, galaxies["morphology"], cfg["rows"],
                                                                         cfg["cols"], cfg["topology"])
    writer.metrics["desom2"] = metrics
    writer.section("desom2")
    return nodes.astype(np.int32)
