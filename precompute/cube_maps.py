"""Galaxy cubes as model inputs: PCA + luminosity maps (seed 000) and emission-line cubes (seed 003).

Both start from the prepared spaxel spectra (precompute.prepare.PreparedGalaxy): rest-frame, normalised to mean
1 in ``prepare.norm_window``, 0 where bad.

- **Cube maps** ``[n_components + 1, S, S]``: the spectrum of every spaxel projected on the principal components
  of the good-S/N spectra of the training galaxies (seed 000: S/N > 30, 29 components), plus the spaxel's
  luminosity in the normalisation window (erg s⁻¹ Å⁻¹), which normalisation took out of the spectra.
- **Emission-line cubes** ``[n_lines, n_bins, S, S]``: the continuum-subtracted flux in ``n_bins`` pixels around
  each of 19 optical lines, for a centred ``S × S`` crop (seed 003: 10 bins, 32 × 32).

Galaxies sit on a common square grid, centred on the IFU centre and padded with empty (0) spaxels; a cube larger
than the grid is first binned by the smallest integer factor that makes it fit (maps) or cropped (line cubes).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

# Vacuum rest wavelengths (Å) of the emission lines of the anomaly cubes (MaNGA DAP line list).
EMISSION_LINES = {
    "OII_3727": 3727.092, "OII_3729": 3729.875, "NeIII_3870": 3869.86, "Heps_3971": 3971.20,
    "Hdel_4103": 4102.89, "Hgam_4342": 4341.69, "OIII_4364": 4364.44, "HeII_4687": 4687.02,
    "Hb_4862": 4862.683, "OIII_4960": 4960.295, "OIII_5008": 5008.240, "HeI_5877": 5877.25,
    "OI_6302": 6302.046, "OI_6365": 6365.535, "NII_6550": 6549.859, "Ha_6564": 6564.608,
    "NII_6585": 6585.268, "SII_6718": 6718.294, "SII_6733": 6732.674,
}
FLUX_UNIT = 1e-17  # erg s⁻¹ cm⁻² Å⁻¹ of the spaxel normalisation (MaNGA convention)
MIN_GOOD_FRACTION = 0.5  # spectra with fewer good pixels are treated as empty spaxels


def spaxel_snr(flux: np.ndarray, ivar: np.ndarray, wave: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Median S/N per pixel (flux·√ivar over good pixels in ``window``) of spectra ``[..., n_wave]``; 0 if none."""
    inside = (wave >= window[0]) & (wave <= window[1])
    snr = np.where(ivar[..., inside] > 0, flux[..., inside] * np.sqrt(ivar[..., inside]), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # spectra with no good pixel in the window: NaN -> 0
        out = np.nanmedian(snr, axis=-1) if snr.size else np.zeros(snr.shape[:-1])
    return np.nan_to_num(out, nan=0.0)


def spaxel_luminosity(galaxy) -> np.ndarray:
    """Luminosity density (erg s⁻¹ Å⁻¹, rest frame) of each spaxel in the normalisation window, ``[ny, nx]``.

    The spaxel's mean flux there (``galaxy.spaxel_norm``, 1e-17 erg s⁻¹ cm⁻² Å⁻¹ rest frame) times 4π d_L²,
    with d_L from the galaxy's redshift (Planck 2018 cosmology). 0 where the spaxel is unusable.
    """
    from astropy.cosmology import Planck18

    norm = getattr(galaxy, "spaxel_norm", None)
    if norm is None:
        raise ValueError(f"{galaxy.galaxy_id}: prepared galaxy has no spaxel_norm (mean flux of each spaxel in the "
                         "normalisation window), needed for the luminosity map")
    z = float(galaxy.row.get("redshift", np.nan))
    if not np.isfinite(z) or z <= 0:
        raise ValueError(f"{galaxy.galaxy_id}: redshift {z} gives no luminosity distance")
    distance_cm = Planck18.luminosity_distance(z).to("cm").value
    return np.where(norm > 0, norm * FLUX_UNIT * 4 * np.pi * distance_cm**2, 0.0)


def _fill_with(flux: np.ndarray, good: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Spectra with bad pixels replaced by ``fill`` (the PCA mean): no residual where nothing was measured."""
    return np.where(good, flux, fill)


def _usable(galaxy) -> tuple[np.ndarray, np.ndarray]:
    """(flux [n, n_wave], good [n, n_wave]) of the spaxels with enough good pixels, and their flat indices."""
    ny, nx, n_wave = galaxy.spaxel_flux.shape
    flux = galaxy.spaxel_flux.reshape(-1, n_wave)
    good = galaxy.spaxel_ivar.reshape(-1, n_wave) > 0
    keep = np.flatnonzero(good.mean(axis=1) >= MIN_GOOD_FRACTION)
    return flux[keep], good[keep], keep


def bin_factor(shape: tuple[int, int], size: int) -> int:
    """Smallest integer factor that bins a ``shape`` grid into at most ``size × size`` spaxels."""
    return max(1, math.ceil(max(shape) / size))


def place_centred(values: np.ndarray, size: int) -> np.ndarray:
    """``values[..., ny, nx]`` centred on a ``size × size`` grid: padded with 0, or cropped when larger."""
    ny, nx = values.shape[-2:]
    out = np.zeros(values.shape[:-2] + (size, size), dtype=values.dtype)
    src_y, dst_y = _centred_slices(ny, size)
    src_x, dst_x = _centred_slices(nx, size)
    out[..., dst_y, dst_x] = values[..., src_y, src_x]
    return out


def _centred_slices(n: int, size: int) -> tuple[slice, slice]:
    if n <= size:
        start = (size - n) // 2
        return slice(0, n), slice(start, start + n)
    start = (n - size) // 2
    return slice(start, start + size), slice(0, size)


def bin_spaxels(values: np.ndarray, occupied: np.ndarray, factor: int, total: np.ndarray) -> np.ndarray:
    """Bin ``values[C, ny, nx]`` into ``factor × factor`` blocks: the mean over occupied spaxels, or the sum for
    channels where ``total[c]`` is True (luminosity adds up). Empty blocks are 0."""
    if factor == 1:
        return np.where(occupied, values, 0.0)
    c, ny, nx = values.shape
    py, px = -ny % factor, -nx % factor
    # Pad symmetrically so the IFU centre stays at the centre of the binned grid
    pads = ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2))
    v = np.pad(np.where(occupied, values, 0.0), pads)
    o = np.pad(occupied.astype(float), pads[1:])
    shape = (c, v.shape[1] // factor, factor, v.shape[2] // factor, factor)
    sums = v.reshape(shape).sum(axis=(2, 4))
    counts = o.reshape(shape[1:]).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, 0.0)
    return np.where(total[:, None, None], sums, means)


class CubeMaps:
    """PCA of good-S/N spaxel spectra, fitted once; each galaxy → ``[n_components + 1, S, S]`` maps.

    ``wave`` is the rest-frame grid of the prepared spectra; ``snr_window`` where the spaxel S/N is measured.
    Fitted state: ``pca_`` (sklearn PCA), ``n_fit_spectra_``.
    """

    def __init__(self, wave: np.ndarray, n_components: int = 29, min_snr: float = 30.0, map_size: int = 32,
                 snr_window: tuple[float, float] = (3550.0, 4650.0), max_fit_spectra: int = 20000, seed: int = 0):
        self.wave, self.n_components, self.min_snr, self.map_size = np.asarray(wave), n_components, min_snr, map_size
        self.snr_window, self.max_fit_spectra, self.seed = tuple(snr_window), max_fit_spectra, seed

    def fit(self, galaxies: list) -> "CubeMaps":
        rng = np.random.default_rng(self.seed)
        chosen_flux, chosen_good = [], []
        for galaxy in galaxies:
            self._check(galaxy)
            flux, good, keep = _usable(galaxy)
            ivar = galaxy.spaxel_ivar.reshape(-1, self.wave.size)[keep]
            bright = spaxel_snr(flux, ivar, self.wave, self.snr_window) > self.min_snr
            chosen_flux.append(flux[bright])
            chosen_good.append(good[bright])
        flux, good = np.concatenate(chosen_flux), np.concatenate(chosen_good)
        if len(flux) <= self.n_components:
            raise ValueError(f"only {len(flux)} spaxel spectra have S/N > {self.min_snr}: too few for "
                             f"{self.n_components} principal components (lower contrastive.pca_min_snr)")
        if len(flux) > self.max_fit_spectra:
            pick = np.sort(rng.choice(len(flux), self.max_fit_spectra, replace=False))
            flux, good = flux[pick], good[pick]
        # Bad pixels take the mean of the good ones at that wavelength, so they add no variance
        mean = np.where(good, flux, 0.0).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
        self.pca_ = PCA(self.n_components, svd_solver="randomized", random_state=self.seed)
        self.pca_.fit(_fill_with(flux, good, mean))
        self.n_fit_spectra_ = len(flux)
        return self

    def transform(self, galaxies: list, progress: bool = False) -> np.ndarray:
        """Maps of every galaxy, float32 ``[N, n_components + 1, S, S]`` (luminosity last, erg s⁻¹ Å⁻¹ / 1e30)."""
        out = np.zeros((len(galaxies), self.n_components + 1, self.map_size, self.map_size), dtype=np.float32)
        is_total = np.zeros(self.n_components + 1, dtype=bool)
        is_total[-1] = True
        for g, galaxy in enumerate(tqdm(galaxies, desc="cube maps", disable=not progress, leave=False)):
            self._check(galaxy)
            ny, nx, _ = galaxy.spaxel_flux.shape
            flux, good, keep = _usable(galaxy)
            channels = np.zeros((self.n_components + 1, ny * nx))
            if len(keep):
                channels[:-1, keep] = self.pca_.transform(_fill_with(flux, good, self.pca_.mean_)).T
                # 1e30 erg/s/Å: a luminosity of order unity or more per spaxel in float32
                channels[-1, keep] = spaxel_luminosity(galaxy).reshape(-1)[keep] / 1e30
            occupied = np.zeros(ny * nx, dtype=bool)
            occupied[keep] = channels[-1, keep] > 0
            channels = channels.reshape(-1, ny, nx)
            binned = bin_spaxels(channels, occupied.reshape(ny, nx), bin_factor((ny, nx), self.map_size), is_total)
            out[g] = place_centred(binned, self.map_size)
        return out

    def _check(self, galaxy) -> None:
        if galaxy.spaxel_flux.ndim != 3 or galaxy.spaxel_flux.shape[-1] != self.wave.size:
            raise ValueError(f"{galaxy.galaxy_id}: spaxel spectra of shape {galaxy.spaxel_flux.shape} do not match "
                             f"the {self.wave.size}-pixel wavelength grid")


def line_windows(wave: np.ndarray, n_bins: int = 10, lines: dict[str, float] = EMISSION_LINES,
                 side: int = 40, guard: int = 8) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pixel indices ``[n_lines, n_bins]`` centred on each line, and for each line its continuum side-band
    pixels: within ``side`` pixels of the line but at least ``guard`` from every line of the list."""
    centre = np.searchsorted(wave, list(lines.values()))
    if (centre < n_bins // 2).any() or (centre + n_bins - n_bins // 2 > wave.size).any():
        outside = [name for name, c in zip(lines, centre) if c < n_bins // 2 or c + n_bins // 2 > wave.size]
        raise ValueError(f"emission lines {outside} fall outside the rest-frame grid {wave[0]:.0f}–{wave[-1]:.0f} Å")
    windows = centre[:, None] - n_bins // 2 + np.arange(n_bins)
    pixel = np.arange(wave.size)
    near_line = (np.abs(pixel[:, None] - centre[None, :]) < guard).any(axis=1)
    bands = [np.flatnonzero((np.abs(pixel - c) <= side) & ~near_line) for c in centre]
    return windows, bands


def emission_line_cubes(galaxies: list, wave: np.ndarray, n_bins: int = 10, crop: int = 32,
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Continuum-subtracted flux around each line, centred crop: ``(cubes, good)``, both
    ``[N, n_lines, n_bins, crop, crop]`` (float32 and bool). The continuum is the median of the good side-band
    pixels of each line in each spaxel; voxels that are bad, without continuum or outside the IFU are not good."""
    windows, bands = line_windows(wave, n_bins)
    n_lines = len(windows)
    cubes = np.zeros((len(galaxies), n_lines, n_bins, crop, crop), dtype=np.float32)
    good = np.zeros(cubes.shape, dtype=bool)
    for g, galaxy in enumerate(tqdm(galaxies, desc="emission-line cubes", disable=not progress, leave=False)):
        ny, nx, n_wave = galaxy.spaxel_flux.shape
        if n_wave != wave.size:
            raise ValueError(f"{galaxy.galaxy_id}: spaxel spectra have {n_wave} pixels, the grid {wave.size}")
        flux = galaxy.spaxel_flux.reshape(-1, n_wave)
        ok = galaxy.spaxel_ivar.reshape(-1, n_wave) > 0
        values = np.zeros((n_lines, n_bins, ny * nx), dtype=np.float32)
        valid = np.zeros(values.shape, dtype=bool)
        for j, (window, band) in enumerate(zip(windows, bands)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # no good side-band pixel: no continuum
                side = np.where(ok[:, band], flux[:, band], np.nan)
                continuum = np.nanmedian(side, axis=1) if band.size else np.full(len(flux), np.nan)
            values[j] = (flux[:, window] - continuum[:, None]).T
            valid[j] = (ok[:, window] & np.isfinite(continuum)[:, None]).T
        values = np.where(valid, values, 0.0)
        cubes[g] = place_centred(values.reshape(n_lines, n_bins, ny, nx), crop)
        good[g] = place_centred(valid.reshape(n_lines, n_bins, ny, nx), crop)
    return cubes, good
