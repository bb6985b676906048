"""Configuration as plain values. A run is reproducible from (config, seed); both are recorded in the bundle."""
from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path

DEFAULT_CONFIG: dict = {
    "seed": 42,
    # Input: the embedded mock survey (streamed in memory) unless `inputs` lists files.
    # rare_fraction_scale multiplies the chance of each rare kind (AGN, disturbed, extreme-emission dwarf; see
    # precompute/mock/population.py); 1 = the survey as it is, galaxy for galaxy. benchmarks/bench_discovery.py
    # may raise it. satellite_trail_fraction: the share of galaxies whose image has a satellite trail across it;
    # unflagged_star_fraction: the share whose cube and image hold a foreground star no FORESTAR bit flags (both
    # artefacts of precompute/mock/observe.py; 0 = none, the survey as it is).
    "mock": {"galaxies": 160, "format": "manga", "rare_fraction_scale": 1.0, "satellite_trail_fraction": 0.0,
             "unflagged_star_fraction": 0.0},
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
        # Training spectra (a random sample of the training galaxies' bins): "auto" = every one on a GPU, 6,000 on
        # a CPU (bounds its training time); an integer caps the sample, null takes every one. Above 20,000 they
        # are streamed from the bundle's files a mini-batch at a time (DESOM's StreamedRows), never all in memory.
        "max_train_spectra": "auto",
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
        "passes_per_epoch": 3,  # each epoch sees its training galaxies this often, in new augmentations
        # at most this many training galaxies an epoch (a new random draw each; all of the demo's ~140): bounds its cost
        "max_galaxies_per_epoch": 256,
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
        "max_galaxies_per_epoch": 2048,  # a random draw of this many training galaxies per epoch bounds its cost
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


class ConfigError(ValueError):
    """A configuration that cannot run. The message lists every problem found, one per line, each naming the key
    path (and the file, when the config came from one); ``problems`` holds the same lines."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


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
    """DEFAULT_CONFIG, then a JSON file, then keyword overrides (sections as dicts).

    The file and the overrides are checked against DEFAULT_CONFIG (see ``config_problems``); ConfigError lists
    every unknown key and wrong value, or says why the file cannot be read.
    """
    config = copy.deepcopy(DEFAULT_CONFIG)
    problems = []
    if path is not None:
        from_file = _read_json(path)
        problems += [f"{path}: {problem}" for problem in config_problems(from_file)]
        config = merged(config, from_file)
    problems += config_problems(overrides)
    if problems:
        raise ConfigError(problems)
    return merged(config, overrides)


def check_inputs(config: dict) -> None:
    """ConfigError naming every input (file, directory or glob pattern) that names nothing, and a missing
    catalogue, before any file is read."""
    from precompute.inputs import InputsError, resolve_inputs

    inputs = config["inputs"]
    problems = []
    try:
        resolve_inputs(inputs["files"])
    except InputsError as err:
        problems += [f"inputs.files: {line}" for line in str(err).splitlines()]
    if inputs["files"] and inputs["catalogue"] is not None and not Path(inputs["catalogue"]).is_file():
        problems.append(f"inputs.catalogue: {inputs['catalogue']}: no such file")
    if problems:
        raise ConfigError(problems)


def check_build(config: dict) -> None:
    """What a build can refuse at once rather than after minutes of work: missing input files, a mock survey too
    small for the projections, an unknown mock format, a device torch cannot use. ConfigError lists them all."""
    from precompute.device import resolve_device
    from precompute.mock.survey import FORMATS
    from precompute.prepare import SED_FORMAT

    problems = []
    try:
        check_inputs(config)
    except ConfigError as err:
        problems += err.problems
    if not config["inputs"]["files"]:
        mock = config["mock"]
        if mock["format"] not in (*FORMATS, SED_FORMAT):
            problems.append(f"mock.format: expected one of {', '.join((*FORMATS, SED_FORMAT))}, "
                            f"got {mock['format']!r}")
        problems += _training_set_problems(mock["galaxies"], config["prepare"]["val_fraction"], config["projections"])
    try:
        device = resolve_device(config["device"])
    except ValueError as err:
        problems.append(f"device: {err}")
    else:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            problems.append(f"device: {config['device']!r} asked for, but torch sees no GPU; use auto or cpu")
    if problems:
        raise ConfigError(problems)


def training_galaxies(n_galaxies: int, val_fraction: float) -> int:
    """Galaxies in the training split: prepare.assign_split holds out round(val_fraction * n_galaxies)."""
    return n_galaxies - int(round(val_fraction * n_galaxies))


def _training_set_problems(n_galaxies: int, val_fraction: float, projections: dict) -> list[str]:
    # Projections (UMAP, k-NN, k-means) are fitted on the training galaxies and need more of them than neighbours
    # and than clusters (precompute.projections.EmbeddingProjector.fit).
    k, clusters = projections["n_neighbours"], max(projections["cluster_ks"], default=1)
    needed = max(k, clusters) + 1
    n_train = training_galaxies(n_galaxies, val_fraction)
    if n_train >= needed:
        return []
    enough = next((n for n in range(n_galaxies, 100 * needed) if training_galaxies(n, val_fraction) >= needed), None)
    advice = f"use at least {enough} galaxies" if enough else "lower prepare.val_fraction"
    return [f"mock.galaxies: {n_galaxies} galaxies leave {n_train} for training (prepare.val_fraction = "
            f"{val_fraction}), too few for {k} neighbours (projections.n_neighbours) and k = {clusters} clusters "
            f"(projections.cluster_ks); {advice}"]


def _read_json(path: str | Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError([f"{path}: cannot read config file ({err.strerror or err})"]) from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError([f"{path}: not valid JSON ({err})"]) from None
    if not isinstance(content, dict):
        raise ConfigError([f"{path}: expected a JSON object of config sections, like "
                           f'{{"desom1": {{"rows": 10}}}}, got {_json_kind(content)}'])
    return content


# ----------------------------------------------------------------------------------------------------------
# What a config may hold. The defaults are the schema: a key is known when DEFAULT_CONFIG has it, and its value
# must have the default's type (an int is fine where a float is, a bool is never a number). The tables below add
# only what a default cannot show.

# Keys whose default does not show the type: None, an empty list, or a mapping the user fills freely.
TYPES = {
    "inputs.files": "list of strings",
    "inputs.catalogue": "string or null",
    "inputs.column_map": "mapping of strings",  # catalogue column -> property name, any names
    "desom1.sigma_start": "number or null",
    "desom2.sigma_start": "number or null",
    "desom1.max_train_spectra": "integer >= 1, \"auto\" or null",
}
# Constraints on values, by key name wherever it appears (every section uses these names alike).
SIZES = {  # integers >= 1
    "galaxies", "rows", "cols", "latent_dim", "kernel_size", "epochs", "patience", "batch_size", "threads",
    "max_train_spectra", "histogram_bins", "image_size", "n_components", "max_fit_spectra", "map_size",
    "n_features", "projection_dim", "passes_per_epoch", "n_bins", "crop", "hidden", "traversal_steps",
    "n_neighbours", "umap_neighbours", "gmm_components", "correlation_components", "kmeans_k", "minisom_rows",
    "minisom_cols", "minisom_epochs", "channels", "cluster_ks", "max_galaxies_per_epoch",
}
FRACTIONS = {  # numbers in [0, 1]
    "val_fraction", "validation_fraction", "ema_decay", "p_noise", "p_blur", "p_resize", "p_stars",
    "satellite_trail_fraction", "unflagged_star_fraction",
}
NON_NEGATIVE = {"rare_fraction_scale"}  # numbers >= 0
RANGES = {"norm_window", "snr_range", "resize_kernels", "star_radius"}  # [low, high]
CHOICES = {
    "topology": ("rectangular", "hexagonal"),
    "backend": ("desom", "minisom"),
    "band": ("g", "r", "i"),
    "embedding_models": ("contrastive", "anomaly", "image_vae"),
}


def config_problems(config: dict, defaults: dict = DEFAULT_CONFIG, prefix: str = "") -> list[str]:
    """Every problem of a (partial) config against the defaults, one line each, naming the key path."""
    problems = []
    for key, value in config.items():
        where = f"{prefix}{key}"
        if key not in defaults:
            problems.append(f"{where}: unknown key; {_suggestion(str(key), defaults)}")
        elif where in TYPES:
            problems += _explicit_type_problems(where, value, TYPES[where])
        elif isinstance(defaults[key], dict):
            if isinstance(value, dict):
                problems += config_problems(value, defaults[key], f"{where}.")
            else:
                problems.append(f"{where}: expected a section (a JSON object), got {_shown(value)}")
        elif isinstance(defaults[key], list):
            problems += _list_problems(where, key, value, defaults[key])
        else:
            problems += _value_problems(where, key, value, defaults[key])
    return problems


def _suggestion(key: str, defaults: dict) -> str:
    close = difflib.get_close_matches(key, list(defaults), n=1)
    return f"did you mean {close[0]}?" if close else f"expected one of {', '.join(defaults)}"


def _list_problems(where: str, key: str, value, default: list) -> list[str]:
    if not isinstance(value, list):
        return [f"{where}: expected a list, got {_shown(value)}"]
    problems = []
    for i, item in enumerate(value):  # every default list holds one type: its first item shows it
        problems += _value_problems(f"{where}[{i}]", key, item, default[0])
    if key in RANGES and not problems and not (len(value) == 2 and value[0] <= value[1]):
        problems.append(f"{where}: expected [low, high] with low <= high, got {value!r}")
    return problems


def _value_problems(where: str, key: str, value, default) -> list[str]:
    """A single value against its default's type, then the constraints its key name carries."""
    if isinstance(default, bool):
        expected, ok = "true or false", isinstance(value, bool)
    elif isinstance(default, int):
        expected, ok = "an integer", _is_integer(value)
    elif isinstance(default, float):
        expected, ok = "a number", _is_number(value)
    else:
        expected, ok = "a string", isinstance(value, str)
    if not ok:
        return [f"{where}: expected {expected}, got {_shown(value)}"]
    if key in SIZES and value < 1:
        return [f"{where}: expected an integer >= 1, got {value!r}"]
    if key in FRACTIONS and not 0 <= value <= 1:
        return [f"{where}: expected a number between 0 and 1, got {value!r}"]
    if key in NON_NEGATIVE and not value >= 0:
        return [f"{where}: expected a number >= 0, got {value!r}"]
    if key in CHOICES and value not in CHOICES[key]:
        return [f"{where}: expected one of {', '.join(CHOICES[key])}, got {value!r}"]
    return []


def _explicit_type_problems(where: str, value, kind: str) -> list[str]:
    if kind == "list of strings":
        if not isinstance(value, list):
            return [f"{where}: expected a list of strings, got {_shown(value)}"]
        return [f"{where}[{i}]: expected a string, got {_shown(item)}"
                for i, item in enumerate(value) if not isinstance(item, str)]
    if kind == "mapping of strings":
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping of strings (a JSON object), got {_shown(value)}"]
        return [f"{where}.{name}: expected a string, got {_shown(item)}"
                for name, item in value.items() if not isinstance(item, str)]
    if kind.startswith("integer >= 1"):
        ok = value is None or value == "auto" or (_is_integer(value) and value >= 1)
        return [] if ok else [f"{where}: expected an {kind}, got {_shown(value)}"]
    ok = value is None or (isinstance(value, str) if kind == "string or null" else _is_number(value))
    return [] if ok else [f"{where}: expected a {kind}, got {_shown(value)}"]


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_kind(value) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


def _shown(value) -> str:
    """A wrong value as the message shows it: its repr (shortened) and its Python type."""
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"
