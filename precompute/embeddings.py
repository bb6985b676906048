"""Build stage: galaxy embeddings and their projections into the bundle (docs/bundle-schema.md).

- ``contrastive`` (seed 000): PCA + luminosity cube maps → Siamese CNN trained with NT-Xent → 512-d vectors;
- ``anomaly`` (seed 003): emission-line cubes → ConvLSTM autoencoder → latent vectors, anomaly scores and the
  per-line / per-spaxel residuals that explain them;
- ``image_vae`` (seed 004): r-band images → convolutional VAE → latent means, traversals, property table;
- ``fingerprint``: the DESOM-1 fingerprints of the spectral-maps stage, when given.

Every embedding gets the same projections (precompute.projections), fitted on the training split. Models are
imported when the stage runs, so reading a bundle (which needs only the section declarations) stays light.
"""
from __future__ import annotations

import io
import pickle
import time

import numpy as np
import pandas as pd

from precompute import schema
from precompute.bundle import BundleWriter
from precompute.morphology import image_asymmetry

# `embeddings` holds what every embedding has (the dashboard's UMAP and similarity views); each model adds its
# own section. The fingerprint embedding's files are listed in embeddings/index.json when it is present.
SECTIONS = ("embeddings", "contrastive", "anomaly", "image_vae")  # files: precompute.schema

RARE_KINDS = ("agn", "disturbed", "extreme_emission")  # mock truth flags the anomaly score should find
EXPLAINED_LINES = 3  # lines per galaxy whose data / reconstruction / residual maps explain its score (dashboard)


def build_embeddings(writer: BundleWriter, galaxies: pd.DataFrame, prepared: list, config: dict,
                     fingerprints: np.ndarray | None = None) -> pd.DataFrame:
    """Train the models named in ``config["embedding_models"]`` (``contrastive``, ``anomaly``, ``image_vae``),
    project every embedding (those and the fingerprints) and write the ``embeddings`` section and one section per
    model. ``prepared`` are the PreparedGalaxy objects in the row order of ``galaxies``; ``fingerprints``
    ``[n_galaxies, rows, cols]`` from the spectral-maps stage (or None).
    Returns ``galaxies``, with ``anomaly_score`` and its parts (`schema.ANOMALY_PARTS`) added when the anomaly model ran."""
    from precompute.device import resolve_device
    from precompute.prepare import rest_frame_grid
    from precompute.projections import property_correlation

    if len(prepared) != len(galaxies) or any(g.galaxy_id != i for g, i in zip(prepared, galaxies["galaxy_id"])):
        raise ValueError("prepared galaxies must be the rows of the galaxy table, in the same order")
    if fingerprints is not None and len(fingerprints) != len(galaxies):
        raise ValueError(f"{len(fingerprints)} fingerprints for {len(galaxies)} galaxies")
    device = resolve_device(config.get("device", "auto"))
    wave = rest_frame_grid(config["prepare"])
    galaxies = galaxies.copy()
    embeddings: dict[str, tuple[np.ndarray, str, str]] = {}  # name -> (vectors, metric, description)

    models = config.get("embedding_models", [])
    # the anomaly score's asymmetry and the image VAE read the same [N, 3, S, S] stack of gri images
    images = np.stack([g.image for g in prepared]) if {"anomaly", "image_vae"} & set(models) else None
    if "contrastive" in models:
        vectors = _contrastive(writer, galaxies, prepared, wave, config, device)
        embeddings["contrastive"] = (vectors, "cosine", "seed 000: NT-Xent Siamese CNN on PCA + luminosity cube maps")
    if "anomaly" in models:
        latent, columns = _anomaly(writer, galaxies, prepared, images, wave, config, device)
        for column, values in columns.items():
            galaxies[column] = values
        embeddings["anomaly"] = (latent, "euclidean", "seed 003: ConvLSTM autoencoder latent of emission-line cubes")
    if "image_vae" in models:
        latent = _image_vae(writer, galaxies, images, config, device)
        embeddings["image_vae"] = (latent, "euclidean", "seed 004: VAE latent means of log-scaled r-band images")
    if fingerprints is not None:
        embeddings[schema.FINGERPRINT_EMBEDDING] = (np.asarray(fingerprints, dtype=np.float32).reshape(len(galaxies), -1),
                                     "euclidean", "seed 001: histogram of binned spectra over DESOM-1 nodes")

    writer.metrics["embeddings"] = {}
    neighbours: dict[str, np.ndarray] = {}
    for name, (vectors, metric, description) in embeddings.items():
        writer.metrics["embeddings"][name] = write_embedding(writer, name, vectors, galaxies, metric, config,
                                                            knn_distance=neighbours)
    if "anomaly" in models:
        galaxies = _combine_anomaly(writer, galaxies, neighbours.get(schema.FINGERPRINT_EMBEDDING), config)
        # the score needs the fingerprint's neighbours, so it exists only now: the seed-000 Fig. 10 tables, written
        # with the projections, get its column too
        for name, (vectors, _, _) in embeddings.items():
            writer.write(schema.EMBEDDING_CORRELATION, property_correlation(
                vectors, galaxies, galaxies["split"].to_numpy() == "train",
                config["projections"]["correlation_components"]), embedding=name)
    writer.write(schema.EMBEDDING_INDEX, {name: {"dim": int(v.shape[1]), "metric": metric, "description": text}
                                          for name, (v, metric, text) in embeddings.items()})
    for section in ["embeddings", *models]:
        writer.section(section)
    return galaxies


def write_embedding(writer: BundleWriter, name: str, vectors: np.ndarray, galaxies: pd.DataFrame, metric: str,
                    config: dict, knn_distance: dict | None = None) -> dict:
    """Project one embedding, write ``embeddings/<name>/*`` and return its figures against known properties.
    ``knn_distance``: a dict that receives the embedding's neighbour distances under ``name``."""
    from precompute.projections import project_embedding, truth_figures

    start = time.perf_counter()
    out = project_embedding(vectors, galaxies, metric, config["projections"], config["seed"])
    for spec, key in ((schema.EMBEDDING_VECTORS, "vectors"), (schema.EMBEDDING_UMAP, "umap"),
                      (schema.EMBEDDING_KNN, "knn"), (schema.EMBEDDING_KNN_DISTANCE, "knn_distance"),
                      (schema.EMBEDDING_CLUSTERS, "clusters"), (schema.EMBEDDING_CORRELATION, "property_correlation")):
        writer.write(spec, out[key], embedding=name)
    if name in schema.PLACED_EMBEDDINGS:  # the only ones a reader projects new objects on
        writer.write(schema.EMBEDDING_PROJECTOR, pickle.dumps(out["projector"]), embedding=name)
    if knn_distance is not None:
        knn_distance[name] = out["knn_distance"]
    figures = truth_figures(out["vectors"], galaxies, metric, out["knn_distance"], out["clusters"],
                            k=config["projections"]["n_neighbours"])
    return {**figures, "projection_seconds": round(time.perf_counter() - start, 2)}


def _contrastive(writer, galaxies, prepared, wave, config, device) -> np.ndarray:
    from precompute.cube_maps import CubeMaps
    from precompute.models.contrastive import ContrastiveEmbedding
    from precompute.projections import knn_regression_r2

    cfg, seed = config["contrastive"], config["seed"]
    train = galaxies["split"].to_numpy() == "train"
    start = time.perf_counter()
    lo, hi = config["prepare"]["norm_window"]
    cube_maps = CubeMaps(wave, cfg["n_components"], cfg["pca_min_snr"], cfg["map_size"], (lo - 500.0, hi + 500.0),
                         cfg["max_fit_spectra"], seed).fit(prepared, np.flatnonzero(train))
    # 0.13 MB of maps a galaxy: on disk, read a batch at a time, so the stage's memory does not grow with the survey
    maps, noise = cube_maps.write(prepared, writer.scratch("contrastive"), progress=True)
    model = ContrastiveEmbedding(
        cfg["n_features"], cfg["channels"], cfg["projection_dim"], cfg["temperature"], cfg["epochs"],
        cfg["patience"], cfg["passes_per_epoch"], cfg["batch_size"], cfg["learning_rate"], cfg["weight_decay"],
        cfg["ema_decay"], cfg["augment"], seed, device, max_galaxies_per_epoch=cfg["max_galaxies_per_epoch"],
    ).fit(maps, noise, galaxies=train, validation=~train)
    vectors = model.transform(maps)
    seconds = time.perf_counter() - start

    retrieval = augmented_retrieval(model, maps, noise, vectors, np.flatnonzero(~train), seed)
    present = [p for p in ("log_mstar", "log_age_lw", "ew_halpha") if p in galaxies]
    baseline = knn_regression_r2(cube_pca(maps, train, model), galaxies[present], train, metric="euclidean")
    pca = cube_maps.pca_
    writer.write(schema.CONTRASTIVE_PCA, {"wave": wave, "mean": pca.mean_, "components": pca.components_,
                                                 "explained_variance_ratio": pca.explained_variance_ratio_})
    writer.write(schema.CONTRASTIVE_MODEL, _torch_bytes(model.state()))
    writer.metrics["contrastive"] = {
        "seconds": round(seconds, 2), "epochs": len(model.history_), "best_epoch": model.best_epoch_,
        "n_parameters": model.n_parameters_, "pca_spectra": cube_maps.n_fit_spectra_,
        "pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        "augmented_retrieval_val": retrieval[0],
        "augmented_retrieval_within_val": retrieval[1],
        **{f"baseline_cube_pca_knn_r2_{p}": r2 for p, r2 in baseline.items()},
    }
    return vectors


def augmented_retrieval(model, maps, noise, vectors: np.ndarray, held_out: np.ndarray,
                        seed: int, copies: int = 5) -> tuple[float, float]:
    """Share of augmented copies of held-out galaxies whose nearest galaxy in the embedding is the galaxy itself,
    searching (all galaxies, the held-out galaxies only), over ``copies`` independent augmentations each.
    ``maps`` and ``noise``: arrays or row sources of every galaxy (read a batch at a time)."""
    from precompute.models.contrastive import retrieval_accuracy

    among_all, among_held_out = [], []
    for copy in range(copies):
        queries = model.augmented_vectors(maps, noise, held_out, seed + 1 + copy)
        among_all.append(retrieval_accuracy(vectors, queries, held_out))
        among_held_out.append(retrieval_accuracy(vectors[held_out], queries))
    return float(np.mean(among_all)), float(np.mean(among_held_out))


def cube_pca(maps, train: np.ndarray, model, n_components: int = 32, max_fit_galaxies: int = 256) -> np.ndarray:
    """Baseline embedding: the cube maps (scaled as the network sees them) flattened and reduced by PCA fitted
    on the training galaxies (``train``, a boolean mask) — what a CNN has to beat. In a survey of more than
    ``max_fit_galaxies`` training galaxies the PCA is fitted on a random sample of that many (seeded by the
    model's seed): 32 components of a few hundred galaxies are well determined, and the fit's memory
    (0.12 MB a galaxy) stays bounded. ``maps``: an array or row source, read a batch at a time."""
    import torch
    from sklearn.decomposition import PCA

    from precompute.models.contrastive import READ_ROWS

    def flat(rows) -> np.ndarray:
        with torch.no_grad():
            batch = torch.as_tensor(np.asarray(maps[rows], dtype=np.float32)).to(model.device)
            return model.network_.scale_input(batch).flatten(1).cpu().numpy()

    fit_rows = np.flatnonzero(train)
    if len(fit_rows) > max_fit_galaxies:
        fit_rows = np.sort(np.random.default_rng(model.seed).choice(fit_rows, max_fit_galaxies, replace=False))
    pca = PCA(min(n_components, len(fit_rows) - 1), random_state=0).fit(flat(fit_rows))
    return np.concatenate([pca.transform(flat(slice(start, start + READ_ROWS)))
                           for start in range(0, len(maps), READ_ROWS)]).astype(np.float32)


def _anomaly(writer, galaxies, prepared, images, wave, config, device) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from precompute.cube_maps import EMISSION_LINES, write_emission_line_cubes
    from precompute.models.convlstm import EmissionLineAnomaly

    cfg, seed = config["anomaly"], config["seed"]
    train = galaxies["split"].to_numpy() == "train"
    start = time.perf_counter()
    # 1.75 MB of cubes a galaxy: on disk, read a batch at a time, so the stage's memory is that of one batch
    cubes, sigma, good = write_emission_line_cubes(prepared, wave, writer.scratch("anomaly"), cfg["n_bins"],
                                                   cfg["crop"], progress=True)
    model = EmissionLineAnomaly(cfg["latent_dim"], cfg["hidden"], cfg["epochs"], cfg["batch_size"],
                                cfg["learning_rate"], cfg["snr_softening"], cfg["detection_snr"], seed, device,
                                max_galaxies_per_epoch=cfg["max_galaxies_per_epoch"])
    model.fit(cubes, sigma, good, galaxies=train)
    residuals = model.residuals(cubes, sigma, good, top_lines=EXPLAINED_LINES)
    latent = model.transform(cubes, sigma, good)
    writer.write(schema.ANOMALY_MODEL, _torch_bytes(model.state()))
    writer.write(schema.ANOMALY_LINES, {"names": list(EMISSION_LINES), "wave": list(EMISSION_LINES.values()),
                                       "n_bins": cfg["n_bins"], "crop": cfg["crop"],
                                       "snr_softening": model.snr_softening, "detection_snr": model.detection_snr})
    writer.write(schema.ANOMALY_LINE_RESIDUALS, residuals["line"])
    writer.write(schema.ANOMALY_SPAXEL_RESIDUALS, residuals["spaxel"])
    writer.write(schema.ANOMALY_TOP_LINES, residuals["top_lines"])
    writer.write(schema.ANOMALY_TOP_LINE_MAPS, residuals["top_line_maps"])
    seconds = time.perf_counter() - start
    columns = {"anomaly_convlstm": residuals["score"], "anomaly_nucleus": nuclear_residual(residuals["spaxel"]),
               **image_asymmetry(images)}  # asymmetry (a part) and compact_asymmetry (for the relevance model)
    writer.metrics["anomaly"] = {"seconds": round(time.perf_counter() - start, 2),
                                 "convlstm_seconds": round(seconds, 2), "final_loss": model.history_[-1]}
    return latent, columns


# ------------------------------------------------------------------------------------- the combined anomaly score
# The ConvLSTM's reconstruction error alone finds AGN (AUC 0.75–0.91 on four mock surveys) but not disturbed /
# merging systems (0.53–0.74) nor extreme emission-line dwarfs (0.38–0.62). Each part below is a standard measure
# of one way a galaxy can be unusual; `anomaly_score` combines them by Fisher's method on their empirical tail
# probabilities (see `combine_tails`), so a galaxy far out in any one part, or fairly far out in several, ranks high.
# The parts are schema.ANOMALY_PARTS (schema.GALAXY_COLUMNS says what each measures).
NUCLEUS_SPAXELS = 2.0  # radius (spaxels of the crop) of the nucleus: about the PSF's half width at half maximum


def nuclear_residual(spaxel_residuals: np.ndarray, radius: float = NUCLEUS_SPAXELS) -> np.ndarray:
    """Mean of ``spaxel_residuals`` ``[N, S, S]`` (the ConvLSTM's per-spaxel error, NaN where nothing is detected)
    within ``radius`` spaxels of the crop centre; 0 where none is detected there."""
    size = spaxel_residuals.shape[1]
    y, x = np.indices((size, size))
    inside = np.hypot(x - (size - 1) / 2, y - (size - 1) / 2) <= radius
    values = spaxel_residuals[:, inside]
    detected = np.isfinite(values)
    total = np.where(detected, values, 0.0).sum(axis=1)
    return (total / np.maximum(detected.sum(axis=1), 1)).astype(np.float32)


def tail_significance(values: np.ndarray) -> np.ndarray:
    """−log10 of each value's empirical upper-tail probability among ``values``: (number of values ≥ it) / N.
    The largest value gets log10 N, the median ~0.3, the smallest 0; NaN counts as the smallest."""
    values = np.asarray(values, dtype=float)
    filled = np.where(np.isfinite(values), values, -np.inf)
    at_least = len(filled) - np.searchsorted(np.sort(filled), filled, side="left")
    return -np.log10(at_least / len(filled))


def combine_tails(parts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Fisher's method on the parts' empirical tail probabilities: the score is Σ_parts −log10 p (large when a
    galaxy is far out in one part or fairly far out in several), and the driver is the part with the largest
    −log10 p. A percentile rank per part would make the parts comparable too, but the mean of ranks dilutes a
    galaxy that is extreme in one part only and the max of ranks lifts every galaxy that is middling in many."""
    names = list(parts)
    significance = np.stack([tail_significance(parts[name]) for name in names])
    driver = np.asarray(names, dtype=object)[np.argmax(significance, axis=0)]
    return significance.sum(axis=0).astype(np.float32), driver


def _combine_anomaly(writer, galaxies: pd.DataFrame, fingerprint_knn: np.ndarray | None, config: dict) -> pd.DataFrame:
    """Add ``fingerprint_typicality`` (when the fingerprints were projected), ``anomaly_score`` and
    ``anomaly_driver``, and the ROC AUC of the score and of each part for the mock truth flags."""
    from sklearn.metrics import roc_auc_score

    from precompute.compare import typicality

    galaxies = galaxies.copy()
    if fingerprint_knn is not None:
        k = min(config["projections"]["n_neighbours"], 10)  # seed 000's 10th neighbour, if the bundle keeps 10
        tenth = typicality(fingerprint_knn, k=k).astype(np.float32)
        # an object with one spectrum (a survey mixing cubes and single spectra) has a one-hot fingerprint: far
        # from every cube's, which says nothing about it
        galaxies["fingerprint_typicality"] = np.where(galaxies["n_bins"].to_numpy() > 1, tenth, np.nan)
    parts = {name: galaxies[name].to_numpy(float) for name in schema.ANOMALY_PARTS if name in galaxies}
    galaxies["anomaly_score"], galaxies["anomaly_driver"] = combine_tails(parts)
    galaxies["anomaly_driver"] = galaxies["anomaly_driver"].astype(str)
    metrics = writer.metrics.setdefault("anomaly", {})
    metrics["parts"] = list(parts)
    for kind in RARE_KINDS:
        if kind in galaxies and 0 < galaxies[kind].astype(bool).sum() < len(galaxies):
            truth = galaxies[kind].astype(bool)
            metrics[f"auc_{kind}"] = float(roc_auc_score(truth, galaxies["anomaly_score"]))
            for name, values in parts.items():
                metrics[f"auc_{kind}_{name}"] = float(roc_auc_score(truth, tail_significance(values)))
    return galaxies


def _image_vae(writer, galaxies, images, config, device) -> np.ndarray:
    from precompute.models.image_vae import ImageVAE
    from precompute.projections import numeric_properties, pearson

    cfg, seed = config["image_vae"], config["seed"]
    train = galaxies["split"].to_numpy() == "train"
    start = time.perf_counter()
    model = ImageVAE(cfg["latent_dim"], cfg["band"], cfg["channels"], cfg["beta"], cfg["epochs"], cfg["batch_size"],
                     cfg["learning_rate"], seed, device).fit(images[train])
    latent = model.transform(images)
    writer.write(schema.IMAGE_VAE_MODEL, _torch_bytes(model.state()))
    writer.write(schema.IMAGE_VAE_TRAVERSALS, model.traversals(latent[train], cfg["traversal_steps"]))
    table = {"feature": np.arange(latent.shape[1], dtype=np.int32)}
    for name, values in numeric_properties(galaxies).items():
        table[name] = [pearson(latent[:, j], values) for j in range(latent.shape[1])]
    writer.write(schema.IMAGE_VAE_CORRELATION, pd.DataFrame(table))
    writer.metrics["image_vae"] = {"seconds": round(time.perf_counter() - start, 2), "final_loss": model.history_[-1]}
    return latent


def _torch_bytes(state: dict) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
