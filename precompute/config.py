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
    "desom1": {},
    "fingerprints": {},
    "desom2": {},
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
