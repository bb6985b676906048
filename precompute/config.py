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
        "latent_dim": 256,  # seed 001: 256
        "channels": [8, 16, 32, 32],  # 4 conv blocks, each pooling by 2; a light encoder (>= 2,000 spectra/s on CPU)
        "kernel_size": 5,
        "gamma": 5.0e-4,  # weight of the SOM loss (seed 001)
        "sigma_start": None,  # neighbourhood width at the start; None = half the longer grid side
        "sigma_end": 0.5,
        "pretrain_epochs": 3,  # autoencoder alone before the SOM joins
        "epochs": 10,  # joint epochs at most (early stopping on validation_fraction of the training spectra)
        "patience": 3,
        "validation_fraction": 0.1,
        "batch_size": 256,
        "learning_rate": 1.0e-3,
        "histogram_bins": 20,  # per-node empirical PDF of each property
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
        "sigma_end": 0.5,
        "pretrain_epochs": 20,
        "epochs": 60,
        "patience": 10,
        "validation_fraction": 0.1,
        "batch_size": 32,
        "learning_rate": 1.0e-3,
    },
    "sed_map": {"kmeans_k": 6, "minisom_rows": 10, "minisom_cols": 10, "minisom_epochs": 20},  # seed 002
    # Galaxy embeddings (seeds 000, 003, 004) and projections.
    "contrastive": {},
    "anomaly": {},
    "image_vae": {},
    "projections": {},
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
