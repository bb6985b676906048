"""The settings of the bundles the tests share (tests/conftest.py builds them): importable by test modules, which
must not import conftest (pytest has one conftest module per folder)."""
from pathlib import Path

from precompute.config import load_config

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
