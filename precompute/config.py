"""Configuration as plain values. A run is reproducible from (config, seed); both are recorded in the bundle."""
from __future__ import annotations

import copy
import json
from pathlib import Path

DEFAULT_CONFIG: dict = {
    "seed": 42,
    # Input: the embedded mock survey (streamed in memory) unless `inputs` lists files.
    "mock": {"galaxies": 160, "format": "manga"},
    "inputs": {"files": [], "catalogue": None, "catalogue_key": "plateifu", "column_map": {}},
    "prepare": {
        "wave_min": 3650.0,  # rest-frame Å: MaStar templates start at 3622 Å; eCALIFA (3749 Å observed) needs 3750
        "wave_max": 7000.0,
        "dlog10_wave": 2.0e-4,  # log10 step of the rest-frame grid (~138 km/s per pixel)
        "norm_window": [4050.0, 4150.0],  # seed 001; seed 000 uses [5600, 5800]
        "target_snr": 20.0,  # Voronoi target S/N per bin (seed 001)
        "min_bin_snr": 10.0,  # bins below this are dropped (seed 001)
        "min_spaxel_snr": 1.0,  # spaxels below this never enter a bin
        "image_size": 64,  # pixels of the bundle's gri images (thumbnails keep their own size)
        "val_fraction": 0.14,  # held-out galaxies (seed 000: 126 / 898)
    },
    # Spectral maps (seed 001): sections added by their modules' authors; one top-level key per model.
    "desom1": {  # DESOM-1 on binned spectra (Forest et al. 2019 as in seed 001)
        "rows": 15, "cols": 15, "topology": "rectangular",
        # Seed 001 uses 256; on held-out mock spectra PCA-256 then already fits down to the noise (AE only ~1 %
        # better), while at 16 the autoencoder is ~15 % better than PCA-16, spreads over more nodes and encodes
        # faster (docs/bundle-schema.md, desom1). Set 256 for the seed-001 architecture.
        "latent_dim": 16,
        "channels": [4, 8, 16, 16],  # 4 conv blocks, each pooling by 2; light enough for >= 2,000 spectra/s on CPU
        "kernel_size": 5,
        "gamma": 5.0e-4,  # weight of the SOM loss (seed 001)
        "sigma_start": None,  # neighbourhood width at the start; None = half the longer grid side
        "sigma_end": 1.0,  # ending at 1 keeps grid neighbours coupled: held-out TE ~0.02 (0.04–0.06 at 0.5)
        "pretrain_epochs": 1,  # autoencoder alone before the SOM joins
        "epochs": 4,  # joint epochs at most (early stopping on validation_fraction of the training spectra)
        "patience": 3,
        "validation_fraction": 0.1,
        "max_train_spectra": 6000,  # random training subsample per build: bounds the training time on a CPU
        "batch_size": 64,  # small batches: more steps per epoch, which short CPU trainings need
        "learning_rate": 1.0e-3,
        "histogram_bins": 20,  # per-node empirical PDF of each property
        "threads": 1,  # CPU threads for training/encoding: more stall on a shared machine (see DESOM)
    },
    "fingerprints": {"clip_percentile": 99.9},  # per-node clipping level before scaling (seed 001)
    "desom2": {  # map of galaxies by fingerprint
        "backend": "desom",  # "desom" (2-D conv autoencoder + SOM) or "minisom" (classic SOM on the fingerprints)
        "rows": 10, "cols": 10, "topology": "rectangular",
        "latent_dim": 32,
        "channels": [16, 32],
        "kernel_size": 3,
        "gamma": 5.0e-4,
        "sigma_start": None,
        "sigma_end": 1.0,
        "pretrain_epochs": 20,
        "epochs": 30,
        "patience": 10,
        "validation_fraction": 0.1,
        "batch_size": 16,  # a survey has only hundreds of galaxies: small batches give enough steps
        "learning_rate": 1.0e-3,
        "threads": 1,
    },
    "sed_map": {"kmeans_k": 6, "minisom_rows": 10, "minisom_cols": 10, "minisom_epochs": 20},  # seed 002
    # Galaxy embeddings (seeds 000, 003, 004) and projections.
    "contrastive": {  # seed 000: PCA + luminosity maps, Siamese CNN, NT-Xent
        "n_components": 29,  # PCA components of the spaxel spectra
        "pca_min_snr": 30.0,  # spectra fitting the PCA: S/N per pixel above this (seed 000)
        "max_fit_spectra": 20000,
        "map_size": 32,  # spaxels per side of the padded grid (larger cubes are binned to fit)
        "n_features": 512,  # representation: first dense layer after flattening
        "channels": [32, 64, 256],  # conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool)
        "projection_dim": 128,
        "temperature": 0.5,
        "epochs": 60,  # at most; early stopping usually ends training sooner
        "patience": 5,  # early stopping on the validation NT-Xent loss
        "passes_per_epoch": 3,  # each epoch sees every training galaxy this often, in new augmentations
        "batch_size": 64,
        "learning_rate": 1.0e-3,
        "weight_decay": 1.0e-5,
        "ema_decay": 0.98,  # per step: the kept weights average the last ~50 steps (~5 epochs at the demo size)
        "augment": {
            "snr_range": [1.0, 10.0], "p_noise": 0.8, "blur_sigma": 1.0, "p_blur": 0.3,
            "resize_kernels": [2, 5], "p_resize": 0.3, "max_shift": 3,
            "p_stars": 0.3, "max_stars": 3, "star_radius": [1.0, 2.5], "sky_sigma": 0.1,
            "luminosity_dex": 0.25,  # distance / flux-calibration uncertainty: organise by spectra, not brightness
        },
    },
    "anomaly": {  # seed 003: ConvLSTM autoencoder on emission-line cubes
        "n_bins": 10,  # spectral pixels around each of the 19 lines
        "crop": 32,  # centred crop, spaxels per side
        "latent_dim": 16,
        "hidden": 16,
        "epochs": 30,
        "batch_size": 16,
        "learning_rate": 2.0e-3,
        "snr_softening": 3.0,  # the network sees asinh(S/N / this)
        "detection_snr": 3.0,  # the score averages the errors of voxels detected at this S/N (data or model)
    },
    "image_vae": {  # seed 004: convolutional VAE on single-band log-scaled images
        "latent_dim": 16,  # 2 gives a map to look at directly
        "band": "r",
        "channels": [16, 32, 64],
        "beta": 1.0,
        "epochs": 30,
        "batch_size": 32,
        "learning_rate": 2.0e-3,
        "traversal_steps": 7,
    },
    "projections": {  # every embedding: UMAP, clusters, k-NN, seed 000 Fig. 10 table
        "n_neighbours": 10,
        "cluster_ks": [2, 3, 4, 5],
        "umap_neighbours": 15,
        "umap_min_dist": 0.1,
        "gmm_components": 5,  # GMMs run on this many principal components of the embedding
        "correlation_components": 10,
    },
    # Galaxy-embedding models trained by `build` (the fingerprint embedding is always projected); a config file with
    # {"embedding_models": []} leaves them out for a quicker build.
    "embedding_models": ["contrastive", "anomaly", "image_vae"],
    "device": "auto",  # "auto" = cuda when available, else cpu
}


def merged(base: dict, override: dict) -> dict:
    """Deep-merge override into a copy of base (override wins)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None = None, **overrides) -> dict:
    """DEFAULT_CONFIG, then a JSON file, then keyword overrides (sections as dicts)."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        try:
            config = merged(config, json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"{path}: cannot read config ({err})")
    return merged(config, overrides)
