"""SDSS g, r, i broadband fluxes of spectra (AB nanomaggies) through the speclite filter curves.

A broadband AB flux is linear in the spectrum, so on a fixed wavelength grid it is a dot product with
one weight vector per band: ``nanomaggies = flux @ band_weights(wave)``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

BANDS = ("g", "r", "i")
C_ANGSTROM_S = 2.99792458e18
AB_ZERO_FNU = 3631e-23  # erg s⁻¹ cm⁻² Hz⁻¹
FLUX_UNIT = 1e-17  # erg s⁻¹ cm⁻² Å⁻¹: MaNGA's flux unit, used for every spectrum here


@lru_cache(maxsize=1)
def sdss_filters():
    import speclite.filters

    return speclite.filters.load_filters(*(f"sdss2010-{b}" for b in BANDS))


def band_weights(wave: np.ndarray) -> np.ndarray:
    """(n_wave, 3) weights: spectra in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ on ``wave`` (Å) @ weights = g, r, i nanomaggies.

    AB maggies = ∫ f_λ R λ dλ / ∫ f_AB,λ R λ dλ with f_AB,λ = 3631 Jy · c / λ²; the denominator is integrated
    on each filter's own grid, so a spectrum that stops inside a filter only loses its own missing part.
    """
    return _band_weights(float(wave[0]), float(wave[-1]), len(wave), bytes(np.asarray(wave, float)))


@lru_cache(maxsize=8)
def _band_weights(_w0, _w1, _n, wave_bytes: bytes) -> np.ndarray:
    wave = np.frombuffer(wave_bytes, dtype=float)
    dlam = np.gradient(wave)
    weights = np.empty((wave.size, len(BANDS)))
    for k, band in enumerate(sdss_filters()):
        lam, resp = band.wavelength, band.response
        norm = np.trapezoid(AB_ZERO_FNU * C_ANGSTROM_S / lam * resp, lam)
        weights[:, k] = band(wave) * wave * dlam * FLUX_UNIT / norm * 1e9
    weights.setflags(write=False)
    return weights


def nanomaggies_to_mag(nmgy):
    """AB magnitude of a flux in nanomaggies (22.5 − 2.5 log10)."""
    return 22.5 - 2.5 * np.log10(nmgy)
