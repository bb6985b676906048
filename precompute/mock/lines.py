"""Nebular emission lines: the line list, line ratios of each ionising source, BPT/WHAN classes, rendering.

Three sources light the gas. Star formation (HII regions): Hα from the SFR (Kennicutt 1998), [NII]/Hα from
the gas metallicity (Pettini & Pagel 2004 N2 calibration) and [OIII]/Hβ just below the star-forming sequence
(Kewley et al. 2013). Seyfert nuclei and LINER-like diffuse gas in old regions (ionised by hot evolved stars)
get ratios drawn inside their BPT regions. Wavelengths are vacuum (MaNGA DAP line list).
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from ..ssp import C_KMS

LINES = {  # name: vacuum wavelength, Å
    "OII_3727": 3727.092,
    "OII_3729": 3729.875,
    "Hb_4862": 4862.683,
    "OIII_4960": 4960.295,
    "OIII_5008": 5008.240,
    "OI_6302": 6302.046,
    "NII_6550": 6549.859,
    "Ha_6564": 6564.608,
    "NII_6585": 6585.268,
    "SII_6718": 6718.294,
    "SII_6733": 6732.674,
}
LINE_NAMES = tuple(LINES)
LINE_WAVE = np.array(list(LINES.values()))
HA, HB, NII, OIII = (LINE_NAMES.index(n) for n in ("Ha_6564", "Hb_4862", "NII_6585", "OIII_5008"))

KENNICUTT_HA = 7.9e-42  # M☉ yr⁻¹ per erg s⁻¹ of Hα (Kennicutt 1998, Salpeter IMF like the MaStar SSPs)
OH_SUN = 8.69  # 12 + log(O/H) of the Sun (Asplund et al. 2009)


def _ratios(n2, o3, s2, oi, r2, balmer) -> np.ndarray:
    """Line fluxes per unit Hα from log ratios: [NII]6583/Hα, [OIII]5007/Hβ, [SII]/Hα, [OI]/Hα, [OII]/Hβ."""
    n2, o3, s2, oi, r2, balmer = np.broadcast_arrays(*(np.asarray(v, float) for v in (n2, o3, s2, oi, r2, balmer)))
    hb = 1.0 / balmer
    out = np.empty(n2.shape + (len(LINES),))
    out[..., LINE_NAMES.index("Ha_6564")] = 1.0
    out[..., LINE_NAMES.index("Hb_4862")] = hb
    out[..., LINE_NAMES.index("NII_6585")] = 10**n2
    out[..., LINE_NAMES.index("NII_6550")] = 10**n2 / 3.05  # fixed by atomic physics
    out[..., LINE_NAMES.index("OIII_5008")] = 10**o3 * hb
    out[..., LINE_NAMES.index("OIII_4960")] = 10**o3 * hb / 2.98
    out[..., LINE_NAMES.index("SII_6718")] = 10**s2 * 1.4 / 2.4  # 6717/6731 ≈ 1.4: low-density limit
    out[..., LINE_NAMES.index("SII_6733")] = 10**s2 * 1.0 / 2.4
    out[..., LINE_NAMES.index("OI_6302")] = 10**oi
    out[..., LINE_NAMES.index("OII_3727")] = 10**r2 * hb / 2.45  # 3729/3726 ≈ 1.45 at low density
    out[..., LINE_NAMES.index("OII_3729")] = 10**r2 * hb * 1.45 / 2.45
    return out


def star_forming_ratios(oh) -> np.ndarray:
    """HII-region line fluxes per unit Hα for gas of metallicity ``oh`` = 12 + log(O/H), case B Balmer."""
    oh = np.asarray(oh, float)
    n2 = np.clip((oh - 8.90) / 0.57, -2.0, -0.45)  # Pettini & Pagel (2004), inverted
    o3 = np.minimum(0.61 / (n2 - 0.02) + 1.2 - 0.2, 0.9)  # 0.2 dex below the Kewley (2013) SF sequence
    s2 = -0.5 + 0.3 * (n2 + 0.8)
    oi = -1.6 + 0.3 * (n2 + 0.8)
    r2 = np.maximum(0.45 - 1.5 * (oh - 8.25) ** 2, -0.3)  # [OII]/Hβ peaks at intermediate metallicity
    return _ratios(n2, o3, s2, oi, r2, 2.86)


def seyfert_ratios(rng: np.random.Generator) -> np.ndarray:
    """A Seyfert narrow-line region: above Kewley (2001) and the Schawinski (2007) Seyfert/LINER line."""
    n2 = rng.uniform(-0.25, 0.25)
    o3 = rng.uniform(max(0.55, 1.05 * n2 + 0.6), 1.1)
    return _ratios(n2, o3, rng.uniform(-0.4, -0.15), rng.uniform(-1.2, -0.8), rng.uniform(0.3, 0.6), 3.1)


def liner_ratios(rng: np.random.Generator) -> np.ndarray:
    """LINER-like diffuse gas ionised by hot evolved stars: above Kewley (2001), below Schawinski (2007)."""
    n2 = rng.uniform(0.05, 0.35)
    o3 = rng.uniform(-0.15, 0.2)  # well below the Schawinski line, so mixing with HII regions stays non-Seyfert
    return _ratios(n2, o3, rng.uniform(-0.2, 0.05), rng.uniform(-0.9, -0.6), rng.uniform(0.5, 0.8), 3.0)


def kewley01(n2):
    """Maximum starburst line (Kewley et al. 2001): log [OIII]/Hβ as a function of log [NII]/Hα."""
    return 0.61 / (np.asarray(n2, float) - 0.47) + 1.19


def kauffmann03(n2):
    """Empirical star-forming boundary (Kauffmann et al. 2003)."""
    return 0.61 / (np.asarray(n2, float) - 0.05) + 1.3


def bpt_class(n2: float, o3: float, ew_halpha: float) -> str:
    """star-forming / composite / seyfert / liner from the [NII] BPT diagram; none when lines are too weak."""
    if not (np.isfinite(n2) and np.isfinite(o3)) or ew_halpha < 0.5:
        return "none"
    if n2 < 0.05 and o3 < kauffmann03(n2):
        return "star-forming"
    if n2 < 0.47 and o3 < kewley01(n2):
        return "composite"
    return "seyfert" if o3 > 1.05 * n2 + 0.45 else "liner"  # Schawinski et al. (2007)


def whan_class(n2: float, ew_halpha: float, ew_nii: float) -> str:
    """WHAN class (Cid Fernandes et al. 2011) from log [NII]/Hα and the equivalent widths in Å."""
    if ew_halpha < 0.5 and ew_nii < 0.5:
        return "passive"
    if ew_halpha < 3.0:
        return "retired"
    if np.isfinite(n2) and n2 < -0.4:
        return "SF"
    return "sAGN" if ew_halpha > 6.0 else "wAGN"


def add_lines(cube: np.ndarray, wave: np.ndarray, flux: np.ndarray, velocity_kms: np.ndarray,
              sigma_kms, redshift: float) -> None:
    """Add Gaussian emission lines, in place, to spectra on a log-λ grid.

    ``cube`` (n_spectra, n_wave) flux density; ``flux`` (n_spectra, n_lines) integrated line fluxes in the
    same units × Å; ``velocity_kms`` (n_spectra,) line-of-sight velocity; ``sigma_kms`` the total Gaussian
    width (gas dispersion and instrumental resolution in quadrature), scalar, (n_spectra,) or
    (n_spectra, n_lines). Each line is integrated over pixels (error functions), so its flux is exact.
    """
    dlog = np.log10(wave[1] / wave[0])
    pixel_width = wave * np.log(10.0) * dlog  # Å per pixel
    velscale = C_KMS * np.log(10.0) * dlog
    n, n_wave = cube.shape
    sigma = np.broadcast_to(np.asarray(sigma_kms, float).reshape(-1, 1) if np.ndim(sigma_kms) == 1
                            else np.asarray(sigma_kms, float), (n, len(LINES))) / velscale
    shift = np.log10((1.0 + redshift) * (1.0 + np.asarray(velocity_kms, float) / C_KMS))
    half = int(np.ceil(5 * sigma.max())) + 1
    offsets = np.arange(-half, half + 1)
    rows = np.arange(n)[:, None]
    for k, rest in enumerate(LINE_WAVE):
        centre = (np.log10(rest) + shift - np.log10(wave[0])) / dlog  # fractional pixel of the line peak
        pix = np.rint(centre).astype(int)[:, None] + offsets  # (n, window)
        edges = (pix - centre[:, None]) / sigma[:, k:k + 1]
        share = ndtr(edges + 0.5 / sigma[:, k:k + 1]) - ndtr(edges - 0.5 / sigma[:, k:k + 1])
        inside = (pix >= 0) & (pix < n_wave)
        if inside.all():  # the usual case: indices are unique, so fancy-index addition is exact
            cube[rows, pix] += flux[:, k:k + 1] * share / pixel_width[pix]
        else:
            r, c = np.nonzero(inside)
            np.add.at(cube, (r, pix[r, c]), flux[r, k] * share[r, c] / pixel_width[pix[r, c]])
