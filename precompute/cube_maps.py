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
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from precompute.prepare import masked_median
from precompute.rows import NpyRows, NpyRowWriter

# Vacuum rest wavelengths (Å) of the emission lines of the anomaly cubes (MaNGA DAP line list).
EMISSION_LINES = {
    "OII_3727": 3727.092, "OII_3729": 3729.875, "NeIII_3870": 3869.86, "Heps_3971": 3971.20,
    "Hdel_4103": 4102.89, "Hgam_4342": 4341.69, "OIII_4364": 4364.44, "HeII_4687": 4687.02,
    "Hb_4862": 4862.683, "OIII_4960": 4960.295, "OIII_5008": 5008.240, "HeI_5877": 5877.25,
    "OI_6302": 6302.046, "OI_6365": 6365.535, "NII_6550": 6549.859, "Ha_6564": 6564.608,
    "NII_6585": 6585.268, "SII_6718": 6718.294, "SII_6733": 6732.674,
}
FLUX_UNIT = 1e-17  # erg s⁻¹ cm⁻² Å⁻¹ of the spaxel normalisation (MaNGA convention)
LUMINOSITY_UNIT = 1e36  # erg s⁻¹ Å⁻¹: spaxel luminosities of order 0.01–100 in the maps
MIN_GOOD_FRACTION = 0.5  # spectra with fewer good pixels are treated as empty spaxels


def spaxel_snr(flux: np.ndarray, ivar: np.ndarray, wave: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Median S/N per pixel (flux·√ivar over good pixels in ``window``) of spectra ``[n, n_wave]``; 0 if none."""
    inside = (wave >= window[0]) & (wave <= window[1])
    good = ivar[:, inside] > 0
    snr = masked_median(flux[:, inside] * np.sqrt(np.where(good, ivar[:, inside], 0.0)), good)
    return np.nan_to_num(snr, nan=0.0)


def spaxel_luminosity(galaxy) -> np.ndarray:
    """Luminosity density (erg s⁻¹ Å⁻¹, rest frame) of each spaxel in the normalisation window, ``[ny, nx]``.

    The spaxel's mean flux there (``galaxy.spaxel_norm``, 1e-17 erg s⁻¹ cm⁻² Å⁻¹ rest frame) times 4π d_L²,
    with d_L from the galaxy's redshift (Planck 2018 cosmology). 0 where the spaxel is unusable.
    """
    from astropy.cosmology import Planck18

    z = float(galaxy.row.get("redshift", np.nan))
    if not np.isfinite(z) or z <= 0:
        raise ValueError(f"{galaxy.galaxy_id}: redshift {z} gives no luminosity distance")
    distance_cm = Planck18.luminosity_distance(z).to("cm").value
    norm = galaxy.spaxel_norm
    return np.where(norm > 0, norm * FLUX_UNIT * 4 * np.pi * distance_cm**2, 0.0)


def _fill_with(flux: np.ndarray, good: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Spectra with bad pixels replaced by ``fill`` (the PCA mean): no residual where nothing was measured."""
    return np.where(good, flux, fill)


def _usable(galaxy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux [n, n_wave], good [n, n_wave]) of the spaxels with enough good pixels, and their flat indices."""
    n_wave = galaxy.spaxel_flux.shape[-1]
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


def bin_spaxels(values: np.ndarray, occupied: np.ndarray, factor: int, how: tuple[str, ...]) -> np.ndarray:
    """Bin ``values[C, ny, nx]`` into ``factor × factor`` blocks of the occupied spaxels; ``how[c]`` is ``mean``
    (PCA coefficients), ``sum`` (luminosity adds up) or ``noise`` (1σ of the block mean: √Σσ² / n).
    Empty blocks are 0."""
    how = np.asarray(how)
    squared = how == "noise"
    values = np.where(squared[:, None, None], values**2, values)
    if factor == 1:
        binned, counts = np.where(occupied, values, 0.0), occupied.astype(float)
    else:
        c, ny, nx = values.shape
        py, px = -ny % factor, -nx % factor
        # Pad symmetrically so the IFU centre stays at the centre of the binned grid
        pads = ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2))
        v = np.pad(np.where(occupied, values, 0.0), pads)
        o = np.pad(occupied.astype(float), pads[1:])
        shape = (c, v.shape[1] // factor, factor, v.shape[2] // factor, factor)
        binned = v.reshape(shape).sum(axis=(2, 4))
        counts = o.reshape(shape[1:]).sum(axis=(1, 3))
    n = np.maximum(counts, 1.0)
    out = np.where((how == "mean")[:, None, None], binned / n, binned)
    out[squared] = np.sqrt(binned[squared]) / n
    return out * (counts > 0)


class CubeMaps:
    """PCA of good-S/N spaxel spectra, fitted once; each galaxy → ``[n_components + 1, S, S]`` maps and a noise map.

    ``wave`` is the rest-frame grid of the prepared spectra; ``snr_window`` where the spaxel S/N is measured.
    Galaxies are read one at a time (a list, or `precompute.shards.StagedGalaxies` loading each from disk), so
    memory does not grow with the survey. Fitted state: ``pca_`` (sklearn PCA), ``n_fit_spectra_``.
    """

    def __init__(self, wave: np.ndarray, n_components: int = 29, min_snr: float = 30.0, map_size: int = 32,
                 snr_window: tuple[float, float] = (3550.0, 4650.0), max_fit_spectra: int = 20000, seed: int = 0):
        self.wave, self.n_components, self.min_snr, self.map_size = np.asarray(wave), n_components, min_snr, map_size
        self.snr_window, self.max_fit_spectra, self.seed = tuple(snr_window), max_fit_spectra, seed

    def fit(self, galaxies, rows: np.ndarray | None = None) -> CubeMaps:
        """Fit the PCA on the spectra with S/N > ``min_snr`` of the galaxies ``rows`` of ``galaxies`` (all by
        default), at most ``max_fit_spectra`` of them drawn at random. Two passes, one galaxy in memory at a time:
        the first counts each galaxy's spectra, the second keeps the drawn ones, so the memory held is that of
        ``max_fit_spectra`` spectra whatever the survey."""
        rng = np.random.default_rng(self.seed)
        rows = np.arange(len(galaxies)) if rows is None else np.asarray(rows)
        counts = np.array([len(self._bright(galaxies[i])[0]) for i in rows], dtype=np.int64)
        total = int(counts.sum())
        if total <= self.n_components:
            raise ValueError(f"only {total} spaxel spectra have S/N > {self.min_snr}: too few for "
                             f"{self.n_components} principal components (lower contrastive.pca_min_snr)")
        pick = np.arange(total)
        if total > self.max_fit_spectra:
            pick = np.sort(rng.choice(total, self.max_fit_spectra, replace=False))
        ends = np.cumsum(counts)
        owner = np.searchsorted(ends, pick, side="right")  # position in `rows` of the galaxy of each drawn spectrum
        chosen_flux, chosen_good = [], []
        for j in np.unique(owner):
            flux, good = self._bright(galaxies[rows[j]])
            mine = pick[owner == j] - (ends[j] - counts[j])
            chosen_flux.append(flux[mine])
            chosen_good.append(good[mine])
        flux, good = np.concatenate(chosen_flux), np.concatenate(chosen_good)
        # Bad pixels take the mean of the good ones at that wavelength, so they add no variance
        mean = np.where(good, flux, 0.0).sum(axis=0) / np.maximum(good.sum(axis=0), 1)
        self.pca_ = PCA(self.n_components, svd_solver="randomized", random_state=self.seed)
        self.pca_.fit(_fill_with(flux, good, mean))
        self.n_fit_spectra_ = len(flux)
        return self

    def _bright(self, galaxy) -> tuple[np.ndarray, np.ndarray]:
        """(flux, good) ``[n, n_wave]`` of the usable spaxels of ``galaxy`` with S/N > ``min_snr``."""
        self._check(galaxy)
        flux, good, keep = _usable(galaxy)
        ivar = galaxy.spaxel_ivar.reshape(-1, self.wave.size)[keep]
        bright = spaxel_snr(flux, ivar, self.wave, self.snr_window) > self.min_snr
        return flux[bright], good[bright]

    def galaxy_maps(self, galaxy) -> tuple[np.ndarray, np.ndarray]:
        """``(maps, noise)`` of one galaxy: maps float32 ``[n_components + 1, S, S]`` (PCA coefficients, then the
        luminosity in LUMINOSITY_UNIT), noise float32 ``[S, S]``: each spaxel's 1σ per spectral pixel of its
        normalised spectrum (1 / S/N), which the augmentations need to reach a uniform S/N. 0 = no data."""
        self._check(galaxy)
        size, c = self.map_size, self.n_components + 1
        how = ("mean",) * self.n_components + ("sum", "noise")
        ny, nx, _ = galaxy.spaxel_flux.shape
        flux, good, keep = _usable(galaxy)
        channels = np.zeros((c + 1, ny * nx))
        if len(keep):
            channels[:-2, keep] = self.pca_.transform(_fill_with(flux, good, self.pca_.mean_)).T
            channels[-2, keep] = spaxel_luminosity(galaxy).reshape(-1)[keep] / LUMINOSITY_UNIT
            ivar = galaxy.spaxel_ivar.reshape(-1, self.wave.size)[keep]
            snr = spaxel_snr(flux, ivar, self.wave, self.snr_window)
            channels[-1, keep] = 1.0 / np.maximum(snr, 1e-3)
        occupied = np.zeros(ny * nx, dtype=bool)
        occupied[keep] = channels[-2, keep] > 0
        binned = bin_spaxels(channels.reshape(-1, ny, nx), occupied.reshape(ny, nx), bin_factor((ny, nx), size), how)
        placed = place_centred(binned, size).astype(np.float32)
        return placed[:-1], placed[-1]

    def write(self, galaxies, folder: Path, progress: bool = False) -> tuple[NpyRows, NpyRows]:
        """`galaxy_maps` of every galaxy (``galaxies`` is read once, in order) written to ``folder`` (maps.npy
        ``[N, n_components + 1, S, S]``, noise.npy ``[N, S, S]``) galaxy by galaxy, returned as rows read on demand:
        one galaxy's maps in memory while writing, whatever the survey size (0.13 MB a galaxy at 30 × 32²)."""
        size, n = self.map_size, len(galaxies)
        paths = Path(folder) / "maps.npy", Path(folder) / "noise.npy"
        with (NpyRowWriter(paths[0], (n, self.n_components + 1, size, size), np.float32) as maps,
              NpyRowWriter(paths[1], (n, size, size), np.float32) as noise):
            for g, galaxy in enumerate(tqdm(galaxies, desc="cube maps", disable=not progress, leave=False)):
                maps[g], noise[g] = self.galaxy_maps(galaxy)
        return NpyRows(paths[0]), NpyRows(paths[1])

    def _check(self, galaxy) -> None:
        if galaxy.spaxel_flux.ndim != 3 or galaxy.spaxel_flux.shape[-1] != self.wave.size:
            raise ValueError(f"{galaxy.galaxy_id}: spaxel spectra of shape {galaxy.spaxel_flux.shape} do not match "
                             f"the {self.wave.size}-pixel wavelength grid")


def line_windows(wave: np.ndarray, n_bins: int = 10, lines: dict[str, float] = EMISSION_LINES,
                 side: int = 40, guard: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices ``[n_lines, n_bins]`` centred on each line, and the continuum side-bands as a 0/1 matrix
    ``[n_wave, n_lines]``: pixels within ``side`` of the line but at least ``guard`` from every line of the list."""
    centre = np.searchsorted(wave, list(lines.values()))
    outside = [name for name, c in zip(lines, centre) if c < n_bins // 2 or c + n_bins - n_bins // 2 > wave.size]
    if outside:
        raise ValueError(f"emission lines {outside} fall outside the rest-frame grid {wave[0]:.0f}–{wave[-1]:.0f} Å")
    windows = centre[:, None] - n_bins // 2 + np.arange(n_bins)
    pixel = np.arange(wave.size)[:, None]
    near_line = (np.abs(pixel - centre[None, :]) < guard).any(axis=1, keepdims=True)
    bands = ((np.abs(pixel - centre[None, :]) <= side) & ~near_line).astype(np.float32)
    return windows, bands


LINE_CUBE_DTYPES = {"cubes": np.float32, "sigma": np.float32, "good": bool}  # of the three arrays, in order


def each_emission_line_cube(galaxies, wave: np.ndarray, n_bins: int = 10, crop: int = 32, progress: bool = False):
    """Continuum-subtracted flux around each line in a centred crop, one galaxy at a time (``galaxies`` is read
    once, in order): yields ``(cube, sigma, good)``, each ``[n_lines, n_bins, crop, crop]``: the flux (float32,
    units of the normalised continuum), its 1σ (float32) and whether the voxel has data (bool). The continuum is
    the mean of the good side-band pixels of each line in each spaxel; voxels that are bad, without continuum or
    outside the IFU are not good (0)."""
    windows, bands = line_windows(wave, n_bins)
    n_lines = len(windows)
    for galaxy in tqdm(galaxies, desc="emission-line cubes", disable=not progress, leave=False):
        ny, nx, n_wave = galaxy.spaxel_flux.shape
        if n_wave != wave.size:
            raise ValueError(f"{galaxy.galaxy_id}: spaxel spectra have {n_wave} pixels, the grid {wave.size}")
        flux = galaxy.spaxel_flux.reshape(-1, n_wave)  # 0 where bad
        ivar = galaxy.spaxel_ivar.reshape(-1, n_wave)[:, windows]
        ok = galaxy.spaxel_ivar.reshape(-1, n_wave) > 0
        counts = ok.astype(np.float32) @ bands  # [n_spaxels, n_lines]
        continuum = (flux @ bands) / np.maximum(counts, 1)
        valid = (ivar > 0) & (counts > 0)[:, :, None]  # [n_spaxels, n_lines, n_bins]
        line = np.where(valid, flux[:, windows] - continuum[:, :, None], 0.0)
        error = np.where(valid, 1.0 / np.sqrt(np.where(valid, ivar, 1.0)), 0.0)
        yield tuple(place_centred(values.transpose(1, 2, 0).reshape(n_lines, n_bins, ny, nx), crop).astype(dtype)
                    for values, dtype in zip((line, error, valid), LINE_CUBE_DTYPES.values()))


def emission_line_cubes(galaxies: list, wave: np.ndarray, n_bins: int = 10, crop: int = 32,
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cubes of `each_emission_line_cube` in memory: ``(cubes, sigma, good)``, each
    ``[N, n_lines, n_bins, crop, crop]`` (a few galaxies; a survey's go to disk: `write_emission_line_cubes`)."""
    shape = (len(galaxies), len(EMISSION_LINES), n_bins, crop, crop)
    cubes, sigma, good = (np.zeros(shape, dtype) for dtype in LINE_CUBE_DTYPES.values())
    for g, rows in enumerate(each_emission_line_cube(galaxies, wave, n_bins, crop, progress)):
        cubes[g], sigma[g], good[g] = rows
    return cubes, sigma, good


def write_emission_line_cubes(galaxies, wave: np.ndarray, folder: Path, n_bins: int = 10, crop: int = 32,
                              progress: bool = False) -> tuple[NpyRows, NpyRows, NpyRows]:
    """The cubes of `each_emission_line_cube` written to ``folder`` (cubes.npy, sigma.npy, good.npy) galaxy by
    galaxy, returned as rows read on demand: one galaxy's cubes in memory while writing, whatever the survey size
    (1.75 MB a galaxy with 19 lines × 10 bins × 32²)."""
    shape = (len(galaxies), len(EMISSION_LINES), n_bins, crop, crop)
    paths = {name: Path(folder) / f"{name}.npy" for name in LINE_CUBE_DTYPES}
    with (NpyRowWriter(paths["cubes"], shape, LINE_CUBE_DTYPES["cubes"]) as cubes,
          NpyRowWriter(paths["sigma"], shape, LINE_CUBE_DTYPES["sigma"]) as sigma,
          NpyRowWriter(paths["good"], shape, LINE_CUBE_DTYPES["good"]) as good):
        for g, rows in enumerate(each_emission_line_cube(galaxies, wave, n_bins, crop, progress)):
            cubes[g], sigma[g], good[g] = rows
    return tuple(NpyRows(path) for path in paths.values())
