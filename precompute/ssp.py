"""Simple stellar populations: composite spectra from a star-formation history, dispersion and dust.

The templates are the compact copy in data/ssp_templates.fits (see data/make_ssp_templates.py): MaStar SSPs
(Maraston et al. 2020) on a log10 wavelength grid, flux per unit stellar mass in L☉ Å⁻¹ M☉⁻¹, and the BC03
subset used by MPA-JHU. A population is interpolated bilinearly in (log age, log Z), so any star-formation
history becomes a weighted sum of grid spectra: ``flux = Σ weights[age, Z] · template[age, Z]``.

    ssp = load_templates()
    pop = ssp.composite(age_gyr=[0.01, 1.0, 9.0], mass=[1e6, 1e8, 1e9], logz=0.0)
    pop.flux  # (n_wave,) L☉/Å for 1.101e9 M☉;  pop.log_age_lw, pop.logz_mw, ...
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.ndimage import gaussian_filter1d

from .observation import InputError

C_KMS = 299792.458
TEMPLATE_FILE = Path(__file__).resolve().parent.parent / "data" / "ssp_templates.fits"
LIGHT_WINDOW = (5450.0, 5550.0)  # Å, rest: "light-weighted" means weighted by the luminosity here (V band)


@dataclass(frozen=True)
class Population:
    """A composite stellar population: spectrum per the population's total mass, and its mean properties."""

    flux: np.ndarray  # (..., n_wave) L☉ Å⁻¹ for the given masses
    mass: np.ndarray  # (...) M☉ formed
    log_age_lw: np.ndarray  # (...) log10 yr, weighted by luminosity at 5500 Å
    log_age_mw: np.ndarray
    logz_lw: np.ndarray  # (...) log10 Z/Z☉
    logz_mw: np.ndarray
    l5500: np.ndarray  # (...) L☉ Å⁻¹, mean luminosity density in LIGHT_WINDOW


@dataclass(frozen=True)
class SSPTemplates:
    """A grid of SSP spectra ``flux[age, Z, wave]`` per unit stellar mass on a log10-λ grid."""

    name: str
    wave: np.ndarray  # (n_wave,) Å
    age_gyr: np.ndarray  # (n_age,)
    logz: np.ndarray  # (n_z,) log10 Z/Z☉
    flux: np.ndarray  # (n_age, n_z, n_wave) L☉ Å⁻¹ M☉⁻¹

    @property
    def dlog10_wave(self) -> float:
        return float(np.log10(self.wave[1] / self.wave[0]))

    @property
    def velocity_scale(self) -> float:
        """km/s per pixel of the log-λ grid (a velocity shift is a pixel shift)."""
        return C_KMS * np.log(10.0) * self.dlog10_wave

    def grid_weights(self, age_gyr, logz, mass=None) -> np.ndarray:
        """Bilinear weights on the (age, Z) grid, log age and log Z clipped to the grid's range.

        ``age_gyr``, ``logz`` and ``mass`` broadcast to a shape (..., n_pop); the result is (..., n_age, n_z):
        the mass each grid point stands for once the populations along the last axis are summed.
        """
        age_gyr, logz = np.broadcast_arrays(np.atleast_1d(age_gyr), np.atleast_1d(logz))
        mass = np.ones(age_gyr.shape) if mass is None else np.broadcast_to(mass, age_gyr.shape)
        wa = _hat_weights(np.log10(age_gyr), np.log10(self.age_gyr))  # (..., n_pop, n_age)
        wz = _hat_weights(logz, self.logz)  # (..., n_pop, n_z)
        return np.einsum("...p,...pa,...pz->...az", mass, wa, wz)

    def spectrum(self, age_gyr: float, logz: float) -> np.ndarray:
        """One SSP interpolated in (log age, log Z): L☉ Å⁻¹ per M☉."""
        return np.tensordot(self.grid_weights(age_gyr, logz), self.flux, axes=([-2, -1], [0, 1]))

    def composite(self, age_gyr, mass, logz) -> Population:
        """Sum populations of ``mass`` (M☉ formed) at ``age_gyr`` with ``logz`` along the last axis.

        Leading axes are kept, so one call builds the spectra of many regions at once.
        """
        age_gyr, mass, logz = np.broadcast_arrays(np.asarray(age_gyr, float), np.asarray(mass, float),
                                                  np.asarray(logz, float))
        weights = self.grid_weights(age_gyr, logz, mass)  # (..., n_age, n_z)
        flux = np.tensordot(weights, self.flux, axes=([-2, -1], [0, 1]))
        # Each sub-population's share of the light at 5500 Å, for light-weighted means.
        light = mass * self._light_per_mass(age_gyr, logz)
        total_mass = mass.sum(axis=-1)
        total_light = light.sum(axis=-1)
        log_age = np.log10(age_gyr * 1e9)
        with np.errstate(invalid="ignore", divide="ignore"):
            return Population(
                flux=flux,
                mass=total_mass,
                log_age_lw=(light * log_age).sum(-1) / total_light,
                log_age_mw=(mass * log_age).sum(-1) / total_mass,
                logz_lw=(light * logz).sum(-1) / total_light,
                logz_mw=(mass * logz).sum(-1) / total_mass,
                l5500=total_light,
            )

    def _light_per_mass(self, age_gyr, logz) -> np.ndarray:
        window = (self.wave > LIGHT_WINDOW[0]) & (self.wave < LIGHT_WINDOW[1])
        grid = self.flux[:, :, window].mean(axis=-1)  # (n_age, n_z)
        wa = _hat_weights(np.log10(age_gyr), np.log10(self.age_gyr))
        wz = _hat_weights(logz, self.logz)
        return np.einsum("...a,az,...z->...", wa, grid, wz)


def _hat_weights(x, nodes) -> np.ndarray:
    """Linear-interpolation weights of x on sorted nodes (clipped at the ends): shape x.shape + (n_nodes,)."""
    x = np.clip(np.asarray(x, float), nodes[0], nodes[-1])
    j = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2)
    t = (x - nodes[j]) / (nodes[j + 1] - nodes[j])
    w = np.zeros(x.shape + (len(nodes),))
    np.put_along_axis(w, j[..., None], (1 - t)[..., None], axis=-1)
    np.put_along_axis(w, (j + 1)[..., None], t[..., None], axis=-1)
    return w


@lru_cache(maxsize=4)
def load_templates(library: str = "mastar", path: str | None = None) -> SSPTemplates:
    """Read one template library (``mastar`` or ``bc03``) once per process."""
    path = Path(path) if path else TEMPLATE_FILE
    name = library.upper()
    try:
        with fits.open(path) as hdus:
            data = {key: np.asarray(hdus[f"{name}_{key}"].data, dtype=float)
                    for key in ("FLUX", "WAVE", "AGE_GYR", "LOGZ")}
    except FileNotFoundError:
        raise InputError(path, "SSP template file not found (it is committed under data/)") from None
    except KeyError:
        raise InputError(path, f"no {name}_FLUX/_WAVE/_AGE_GYR/_LOGZ extensions: unknown library {library!r}") from None
    expected = (data["AGE_GYR"].size, data["LOGZ"].size, data["WAVE"].size)
    if data["FLUX"].shape != expected:
        raise InputError(path, f"{name}_FLUX has shape {data['FLUX'].shape}, expected (age, Z, wave) = {expected}")
    return SSPTemplates(library, data["WAVE"], data["AGE_GYR"], data["LOGZ"], data["FLUX"])


def broaden(flux: np.ndarray, sigma_kms: float, velocity_scale: float) -> np.ndarray:
    """Convolve spectra on a log-λ grid with a Gaussian line-of-sight velocity distribution (last axis).

    On a log-λ grid a velocity dispersion is a constant width in pixels: sigma_kms / velocity_scale.
    """
    sigma_pix = sigma_kms / velocity_scale
    if sigma_pix < 0.05:  # narrower than a twentieth of a pixel: no measurable change
        return np.array(flux, copy=True)
    return gaussian_filter1d(flux, sigma_pix, axis=-1, mode="nearest", truncate=5.0)


R_V_CALZETTI = 4.05


def calzetti_k(wave) -> np.ndarray:
    """Calzetti et al. (2000) starburst attenuation curve k(λ) = A_λ / E(B−V)_stars, λ in Å (vacuum)."""
    x = 1e4 / np.asarray(wave, float)  # inverse microns
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + R_V_CALZETTI
    red = 2.659 * (-1.857 + 1.040 * x) + R_V_CALZETTI
    return np.where(x > 1.0 / 0.63, blue, red)  # the two branches join at 0.63 µm


def attenuation(wave, av) -> np.ndarray:
    """Transmission 10^(−0.4 A_λ) for V-band attenuation ``av`` (broadcast: av[..., None] × wave)."""
    a_lambda = np.asarray(av, float)[..., None] * calzetti_k(wave) / R_V_CALZETTI
    return 10.0 ** (-0.4 * a_lambda)


def d4000_narrow(wave, flux) -> np.ndarray:
    """Narrow 4000 Å break (Balogh et al. 1999): mean f_ν in 4000–4100 Å over 3850–3950 Å (rest frame)."""
    f_nu = np.asarray(flux) * np.asarray(wave) ** 2
    red = (wave >= 4000) & (wave <= 4100)
    blue = (wave >= 3850) & (wave <= 3950)
    return f_nu[..., red].mean(axis=-1) / f_nu[..., blue].mean(axis=-1)
