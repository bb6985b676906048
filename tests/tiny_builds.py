"""The settings of the bundles the tests share (tests/conftest.py builds them): importable by test modules, which
must not import conftest (pytest has one conftest module per folder)."""
from pathlib import Path

import numpy as np

from precompute import schema
from precompute.config import load_config
from precompute.formats import write_spectra_set

ROOT = Path(__file__).resolve().parent.parent

TINY_SYNTHETIC = dict(n_galaxies=24, bins_per_galaxy=10, som_shape=(6, 6), som2_shape=(4, 4), dlog10_wave=2e-3,
                      image_size=16)
# A real build in about a minute on 2 cores: the build's code and architectures, small maps, few epochs.
TINY_BUILD = dict(
    seed=7, device="cpu", mock={"galaxies": 20},
    desom1={"rows": 6, "cols": 6, "max_train_spectra": 1500, "pretrain_epochs": 1, "epochs": 2},
    desom2={"rows": 4, "cols": 4, "pretrain_epochs": 3, "epochs": 5},
    contrastive={"epochs": 2, "passes_per_epoch": 1},
    anomaly={"epochs": 2},
    image_vae={"epochs": 2},
)
SURVEY_GALAXIES, SURVEY_SEED = 40, 11
# Short training; everything that shapes the map (latent width, channels, grid, γ) stays at the build defaults.
SURVEY_FAST = {
    "desom1": {"max_train_spectra": 3000, "pretrain_epochs": 1, "epochs": 3},
    "desom2": {"pretrain_epochs": 10, "epochs": 30},
    "device": "cpu",
}


# The seed-002 build of data/configs/sed.json (single spectra of the mock SED library), smaller and shorter.
SED_SPECTRA = 400
SED_BUILD = dict(seed=3, device="cpu", mock={"galaxies": SED_SPECTRA},
                 desom1={"rows": 8, "cols": 8, "epochs": 3})


def sed_build_config() -> dict:
    return load_config(str(ROOT / "data" / "configs" / "sed.json"), **SED_BUILD)


def tiny_build_config() -> dict:
    return load_config(**TINY_BUILD)


def survey_config() -> dict:
    return load_config(seed=SURVEY_SEED, mock={"galaxies": SURVEY_GALAXIES, "format": "manga"}, **SURVEY_FAST)


def clearest_spectra(bins, n_nodes: int) -> list[np.ndarray]:
    """For each of the first `n_nodes` DESOM-1 nodes (in the order of `bins`), its binned spectra by increasing
    quantization error. Tests that place a bundle's own spectra take the first ones: a spectrum near the border of
    two nodes can land on either after the last bit of a resampling."""
    nodes, qe = bins["desom1_node"].to_numpy(), bins["desom1_qe"].to_numpy()
    return [np.flatnonzero(nodes == k)[np.argsort(qe[nodes == k], kind="stable")]
            for k in list(dict.fromkeys(nodes.tolist()))[:n_nodes]]


def write_bundle_spectra(bundle, rows, path: Path) -> Path:
    """Binned spectra `rows` of a bundle written as a rest-frame (z = 0) spectra set on the bundle's grid widened
    by one pixel at each end (as a user's file would be): spectra whose map nodes the tests know."""
    wave = np.asarray(bundle.wave)
    flux, ivar = (np.asarray(bundle.read(f))[rows] for f in (schema.FLUX, schema.IVAR))
    wide = np.concatenate([[wave[0] * 0.99], wave, [wave[-1] * 1.01]])
    write_spectra_set(path, wave=wide, flux=np.hstack([flux[:, :1], flux, flux[:, -1:]]),
                      ivar=np.hstack([ivar[:, :1], ivar, ivar[:, -1:]]), mask=np.zeros((len(rows), wide.size), int),
                      z=np.zeros(len(rows)))
    return path
