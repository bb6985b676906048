"""A library of integrated galaxy spectra (seed 002): rest frame, from the SSP templates, with their truth.

Each spectrum is one star-formation history (old, declining, constant, quenched or bursty) of sampled
age, metallicity, stellar mass, velocity dispersion and Calzetti dust, with nebular lines from its SFR.
Fluxes are those of the galaxy at a luminosity distance of 100 Mpc, in 1e-17 erg s⁻¹ cm⁻² Å⁻¹.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..ssp import attenuation, broaden, calzetti_k, d4000_narrow, load_templates, R_V_CALZETTI
from . import lines
from .population import SFH
from .synthesis import AGE_EDGES_GYR, AGE_MID_GYR, HA_SIDEBANDS, L_SUN, RECENT_GYR

DISTANCE_CM = 100 * 3.0857e24
SFH_KINDS = ("old", "declining", "constant", "quenched", "burst")
T_UNIVERSE_GYR = 13.5  # rest-frame library: galaxies of today
SIGMA_INSTRUMENT_KMS = 65.0  # MaNGA-like resolution of the templates, given to the emission lines too


def _draw_sfh(rng) -> SFH:
    kind = SFH_KINDS[rng.choice(len(SFH_KINDS), p=(0.2, 0.3, 0.2, 0.2, 0.1))]
    t_start = rng.uniform(1.0, T_UNIVERSE_GYR - 0.3) if kind in ("constant", "burst") else rng.uniform(6.0, T_UNIVERSE_GYR - 0.3)
    return SFH(kind, t_start, tau=rng.uniform(0.3, 1.0) if kind == "old" else rng.uniform(1.0, 10.0),
               t_quench=rng.uniform(0.3, 5.0), tau_quench=rng.uniform(0.1, 0.5),
               burst_fraction=rng.uniform(0.02, 0.2), t_burst=rng.uniform(0.003, 0.05))


def sed_spectrum(seed: int, index: int) -> tuple[np.ndarray, dict]:
    """Spectrum ``index`` of the library with ``seed``, noiseless (flux on the templates' rest wavelengths, 1e-17
    units), and its truth row. Each spectrum has its own random stream, so any one can be made alone (one build
    task each) and the library is the same however it is cut."""
    ssp = load_templates()
    rng = np.random.default_rng([seed, 2, index])
    wave = ssp.wave
    sidebands = np.logical_or.reduce([(wave > lo) & (wave < hi) for lo, hi in HA_SIDEBANDS])
    k_lines = calzetti_k(lines.LINE_WAVE) / R_V_CALZETTI
    scale = L_SUN * 1e17 / (4 * np.pi * DISTANCE_CM**2)
    sfh = _draw_sfh(rng)
    log_m, logz = rng.uniform(8.5, 11.8), rng.uniform(-1.3, 0.35)
    sigma, av = rng.uniform(30.0, 300.0), rng.exponential(0.4)
    mass = sfh.mass_formed(AGE_EDGES_GYR)
    pop = ssp.composite(AGE_MID_GYR, mass, logz)
    ssfr = mass[AGE_MID_GYR < RECENT_GYR].sum() / (RECENT_GYR * 1e9)
    stars = broaden(pop.flux * attenuation(wave, av), sigma, ssp.velocity_scale) * 10**log_m
    line_lum = (ssfr * 10**log_m / lines.KENNICUTT_HA) * lines.star_forming_ratios(lines.OH_SUN + logz) \
        * 10 ** (-0.4 * av / 0.44 * k_lines)
    spectrum = stars * scale
    lines.add_lines(spectrum[None, :], wave, line_lum[None, :] * scale / L_SUN, np.zeros(1),
                    np.hypot(50.0, SIGMA_INSTRUMENT_KMS), 0.0)
    log_ssfr = max(np.log10(max(ssfr, 1e-30)), -14.0)
    truth = {
        "spectrum_id": f"sed-{seed}-{index:05d}", "sfh": sfh.kind, "log_mstar": log_m,
        "log_age_lw": float(pop.log_age_lw), "log_age_mw": float(pop.log_age_mw),
        "logz_lw": float(pop.logz_lw), "logz_mw": float(pop.logz_mw), "sigma_kms": sigma, "av": av,
        "log_sfr": log_ssfr + log_m, "log_ssfr": log_ssfr,
        "ew_halpha": line_lum[lines.HA] / (stars[sidebands].mean() * L_SUN),
        "d4000": float(d4000_narrow(wave, stars)), "snr": rng.uniform(10.0, 50.0),
    }
    return spectrum, truth


def make_sed_library(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """``n`` noiseless integrated spectra: (rest wavelength Å, flux [n, n_wave] 1e-17 units, truth table)."""
    made = [sed_spectrum(seed, i) for i in tqdm(range(n), desc="SED library", unit="spectrum", disable=n < 500)]
    return load_templates().wave, np.array([flux for flux, _ in made]), pd.DataFrame([truth for _, truth in made])


def add_noise(flux: np.ndarray, snr: np.ndarray, seed: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise with S/N ``snr`` per pixel at 5400–5600 Å, constant σ along each spectrum: (flux, ivar).
    Row j is library spectrum ``first + j`` and gets that spectrum's own noise stream."""
    flux = np.atleast_2d(flux)
    wave = load_templates().wave
    window = (wave > 5400) & (wave < 5600)
    sigma = flux[:, window].mean(axis=1) / np.asarray(snr)
    noise = np.array([np.random.default_rng([seed, 2, first + j, 1]).standard_normal(flux.shape[1])
                      for j in range(len(flux))])
    noisy = flux + sigma[:, None] * noise
    return noisy.astype(np.float32), np.broadcast_to((1.0 / sigma**2)[:, None], flux.shape).astype(np.float32)


def sed_observation(seed: int, index: int):
    """Library spectrum ``index`` with its noise as a single-spectrum Observation at rest (z = 0), and its truth:
    the unit of the mock survey of single spectra (config ``mock.format = "sed"``)."""
    from ..observation import Observation

    flux, truth = sed_spectrum(seed, index)
    noisy, ivar = add_noise(flux, np.array([truth["snr"]]), seed, first=index)
    obs = Observation(truth.pop("spectrum_id"), "spectra", load_templates().wave, noisy, ivar,
                      np.zeros(noisy.shape, bool), redshift=0.0, meta={"source": f"mock:{seed}:{index}"})
    return obs, truth  # the id is the galaxy_id of its row
