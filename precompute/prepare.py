"""Preparation: Observations -> rest-frame, normalised, Voronoi-binned spectra and gri images (the core bundle).

    python -m precompute prepare [FILE ...] [--catalogue CAT --key plateifu] [--mock N] [--seed S]
                                 [--config FILE] --out BUNDLE_DIR

Steps per galaxy: mask bad pixels and night-sky lines, de-redshift, resample flux-conservingly onto one
rest-frame log-λ grid, normalise by the mean flux in ``norm_window``, Voronoi-bin the spaxels to ``target_snr``
(Cappellari & Copin 2003, `vorbin`), co-add each bin, and make gri images and a thumbnail.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm import tqdm

from precompute import images, schema
from precompute.bundle import BundleWriter
from precompute.config import check_inputs, load_config
from precompute.engine import add_engine_arguments
from precompute.observation import InputError, Observation

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # vorbin announces its successor (PowerBin) on import
    from vorbin.voronoi_2d_binning import voronoi_2d_binning

# Bright night-sky lines in the observed frame, vacuum Å: [OI] 5577, Na D 5890/5896, [OI] 6300 and 6364.
SKY_LINES = np.array([5578.9, 5891.6, 5897.6, 6302.0, 6365.5])
SKY_LINE_HALF_WIDTH = 6.0  # Å
SNR_MARGIN = 500.0  # S/N is measured over the normalisation window ± this many Å (docs/bundle-schema.md)
MIN_GOOD_FRACTION = 0.5  # share of a window (or of a bin's flux) that must be good to trust a mean (a co-add)
SLIVER = 1e-3  # input pixels overlapping an output pixel by less than this fraction do not taint it
GALAXY_COLUMNS = ["galaxy_id", "split", "source", "redshift", "ra", "dec", "n_bins", "thumbnail"]
SED_FORMAT = "sed"  # mock.format of the mock survey of single spectra: the SED library (seed 002)
NEGATIVE_IVAR = "negative_ivar_masked"  # galaxies column, present only when some input had negative IVAR


@dataclass
class PreparedGalaxy:
    """One galaxy ready for the bundle; spectra are on ``rest_frame_grid`` and normalised."""

    galaxy_id: str
    row: dict  # its galaxies.parquet row (without `split` and `thumbnail`, set by write_core)
    bin_flux: np.ndarray  # float32 [n_bins, n_wave], 0 where bad
    bin_ivar: np.ndarray  # float32 [n_bins, n_wave], 0 where bad
    bins: pd.DataFrame  # bins.parquet rows (without `galaxy_index`)
    spaxel_bins: np.ndarray  # int32 [ny, nx], bin_id of each spaxel, -1 = none
    spaxel_flux: np.ndarray  # float32 [ny, nx, n_wave], each spaxel normalised; 0 where bad or unusable
    spaxel_ivar: np.ndarray  # float32 [ny, nx, n_wave]
    spaxel_norm: np.ndarray  # float32 [ny, nx], each spaxel's mean rest-frame flux in the norm window (input units); 0 = unusable
    image: np.ndarray  # float32 [3, S, S], g r i nanomaggies per pixel
    thumbnail_png: bytes


# ----------------------------------------------------------------------------------------------------------
# Rest-frame resampling


def rest_frame_grid(prepare_config: dict) -> np.ndarray:
    """Pixel centres (Å) of the rest-frame grid: log-spaced from wave_min, step dlog10_wave, up to wave_max."""
    lo, hi = np.log10(prepare_config["wave_min"]), np.log10(prepare_config["wave_max"])
    step = prepare_config["dlog10_wave"]
    n = int(np.floor((hi - lo) / step + 1e-9)) + 1
    return 10.0 ** (lo + step * np.arange(n))


def pixel_edges(wave: np.ndarray) -> np.ndarray:
    """Pixel boundaries halfway (in log λ) between centres; the end pixels are as wide as their neighbours."""
    logw = np.log10(wave)
    mid = 0.5 * (logw[1:] + logw[:-1])
    return 10.0 ** np.concatenate([[2 * logw[0] - mid[0]], mid, [2 * logw[-1] - mid[-1]]])


def resampling_matrix(edges_in: np.ndarray, edges_out: np.ndarray) -> sparse.csr_matrix:
    """Sparse [n_out, n_in] map of a flux density (per Å) from one pixelisation to another.

    Entry (j, i) is the length of input pixel i inside output pixel j divided by the width of j, so each
    output is the mean of the piecewise-constant input over its own extent: the integral of flux is conserved.
    """
    n_in, n_out = edges_in.size - 1, edges_out.size - 1
    lo, hi = edges_out[:-1], edges_out[1:]
    first = np.clip(np.searchsorted(edges_in, lo, side="right") - 1, 0, n_in - 1)
    last = np.clip(np.searchsorted(edges_in, hi, side="left") - 1, 0, n_in - 1)
    cols = first[:, None] + np.arange((last - first).max() + 1)
    inside = cols <= last[:, None]
    cols = np.minimum(cols, n_in - 1)
    overlap = np.minimum(edges_in[cols + 1], hi[:, None]) - np.maximum(edges_in[cols], lo[:, None])
    weight = np.where(inside, np.clip(overlap, 0.0, None), 0.0) / (hi - lo)[:, None]
    rows = np.broadcast_to(np.arange(n_out)[:, None], cols.shape)
    keep = weight > 0
    return sparse.csr_matrix((weight[keep], (rows[keep], cols[keep])), shape=(n_out, n_in))


def sky_line_mask(wave: np.ndarray) -> np.ndarray:
    """True for observed-frame pixels within SKY_LINE_HALF_WIDTH of a bright sky line."""
    return (np.abs(wave[:, None] - SKY_LINES[None, :]) <= SKY_LINE_HALF_WIDTH).any(axis=1)


def to_rest_frame(wave, flux, ivar, bad, redshift, grid, source="input", partial_coverage: bool = False):
    """De-redshift spectra ``[n, n_wave]`` and resample them onto ``grid``: (flux, ivar, bad) ``[n, n_grid]``.

    All spectra share one sparse matrix, so the whole cube is resampled in one product. Variances go through
    the squared weights (pixels are independent); an output pixel is bad if any input pixel that contributes
    to it is bad, including the masked sky lines. A spectrum must cover the whole grid, unless
    ``partial_coverage`` (placing on frozen maps, precompute.placement): grid pixels it does not cover are then bad.
    """
    edges = pixel_edges(wave) / (1.0 + redshift)
    grid_edges = pixel_edges(grid)
    no_overlap = edges[0] >= grid_edges[-1] or edges[-1] <= grid_edges[0]
    if no_overlap or (not partial_coverage and (edges[0] > grid_edges[0] or edges[-1] < grid_edges[-1])):
        raise InputError(
            source,
            f"covers {edges[0]:.0f}–{edges[-1]:.0f} Å rest-frame (z = {redshift:.4f}), "
            f"grid needs {grid[0]:.0f}–{grid[-1]:.0f} Å (config prepare.wave_min / wave_max)",
        )
    # Only the input pixels that reach the grid: a MaNGA cube's red half never does
    first = max(np.searchsorted(edges, grid_edges[0], side="right") - 1, 0)
    last = min(np.searchsorted(edges, grid_edges[-1], side="left"), wave.size)
    wave, edges = wave[first:last], edges[first : last + 1]
    flux, ivar, bad = flux[:, first:last], ivar[:, first:last], bad[:, first:last]
    with np.errstate(invalid="ignore"):
        good = ~bad & (ivar > 0) & np.isfinite(flux) & ~sky_line_mask(wave)
    used = np.flatnonzero(good.any(axis=1))  # e.g. spaxels outside a MaNGA hexagon hold no data at all
    flux_out, ivar_out = np.zeros((2, flux.shape[0], grid.size))
    bad_out = np.ones((flux.shape[0], grid.size), dtype=bool)
    # Wavelength-major arrays, so each sparse product runs over contiguous rows of all spectra at once
    good_t = np.ascontiguousarray(good[used].T)
    scale = 1.0 + redshift  # f_λ per rest-frame Å is (1 + z) times the observed: same energy, narrower interval
    flux_t = np.where(good_t, flux[used].T * scale, 0.0)
    var_t = np.divide(scale**2, ivar[used].T, out=np.zeros(good_t.shape), where=good_t)
    matrix = resampling_matrix(edges, grid_edges)
    covered = matrix @ good_t.astype(float)
    extent = np.asarray(matrix.sum(axis=1))  # share of each grid pixel the input reaches (1 inside its range)
    tainted = extent - covered > SLIVER  # weight of bad input pixels
    var = matrix.multiply(matrix) @ var_t
    bad_t = tainted | (extent < 1.0 - SLIVER) | ~(covered > 0) | ~(var > 0)
    safe = np.where(bad_t, 1.0, covered)  # good outputs are covered up to slivers, which we renormalise
    flux_out[used] = np.where(bad_t, 0.0, (matrix @ flux_t) / safe).T
    ivar_out[used] = np.where(bad_t, 0.0, safe**2 / np.where(bad_t, 1.0, var)).T
    bad_out[used] = bad_t.T
    if bad_out.all():
        raise InputError(source, "every pixel is bad on the rest-frame grid after masking bad pixels and sky lines")
    return flux_out, ivar_out, bad_out


# ----------------------------------------------------------------------------------------------------------
# Normalisation and S/N


def _window(grid: np.ndarray, window, what: str) -> np.ndarray:
    inside = (grid >= window[0]) & (grid <= window[1])
    if not inside.any():
        raise ValueError(f"config prepare.{what} {list(window)} Å lies outside the rest-frame grid "
                         f"{grid[0]:.0f}–{grid[-1]:.0f} Å")
    return inside


def window_mean(flux, bad, grid, window):
    """Mean flux over good pixels in ``window`` and whether it can normalise (enough good pixels, positive)."""
    mean, observed = _window_mean(flux, bad, grid, window)
    return mean, observed & (mean > 0)


def _window_mean(flux, bad, grid, window):
    """(mean flux over good pixels in ``window``, whether enough of it is good: MIN_GOOD_FRACTION)."""
    inside = _window(grid, window, "norm_window")
    good = ~bad[:, inside]
    n_good = good.sum(axis=1)
    mean = np.where(good, flux[:, inside], 0.0).sum(axis=1) / np.maximum(n_good, 1)
    return mean, n_good >= MIN_GOOD_FRACTION * inside.sum()


def window_observed(bad, grid, window) -> np.ndarray:
    """bool [n]: enough of ``window`` is good (MIN_GOOD_FRACTION) for its mean flux to normalise a spectrum."""
    inside = _window(grid, window, "norm_window")
    return (~bad[:, inside]).sum(axis=1) >= MIN_GOOD_FRACTION * inside.sum()


def normalisation(flux, bad, grid, window, partial_coverage: bool = False):
    """(level, usable) of each spectrum: its mean flux in the normalisation ``window`` (``window_mean``).

    With ``partial_coverage``, a spectrum whose window is not observed takes its mean good flux instead: a
    provisional level that keeps its numbers near 1; placement then fits the level whose gappy reconstruction
    best matches the observed pixels (precompute.placement).
    """
    norm, observed = _window_mean(flux, bad, grid, window)
    usable = observed & (norm > 0)
    if partial_coverage:
        unseen = ~observed
        good = ~bad[unseen]
        level = np.where(good, flux[unseen], 0.0).sum(axis=1) / np.maximum(good.sum(axis=1), 1)
        norm[unseen], usable[unseen] = level, level > 0
    return norm, usable


def _snr_window(prepare_config: dict) -> tuple[float, float]:
    lo, hi = prepare_config["norm_window"]
    return lo - SNR_MARGIN, hi + SNR_MARGIN


def masked_median(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Median of each row over its ``good`` entries (NaN for a row with none); one sort, no masked arrays."""
    ordered = np.sort(np.where(good, values, np.inf), axis=1)
    n = good.sum(axis=1)
    lower = np.take_along_axis(ordered, np.maximum(n - 1, 0)[:, None] // 2, axis=1)[:, 0]
    upper = np.take_along_axis(ordered, (n // 2)[:, None], axis=1)[:, 0]
    return np.where(n > 0, 0.5 * (lower + upper), np.nan)


def signal_and_noise(flux, ivar, bad, grid, window):
    """Per spectrum: median good flux and median good 1σ in ``window`` (NaN when no pixel is good)."""
    inside = _window(grid, window, "norm_window ± 500 Å")
    good = ~bad[:, inside]
    sigma = 1.0 / np.sqrt(np.where(good, ivar[:, inside], 1.0))
    return masked_median(flux[:, inside], good), masked_median(sigma, good)


def spectrum_snr(flux, ivar, bad, grid, window) -> np.ndarray:
    """S/N of each spectrum: median of flux·sqrt(ivar) over its good pixels in ``window`` (NaN if none)."""
    inside = _window(grid, window, "norm_window ± 500 Å")
    return masked_median(flux[:, inside] * np.sqrt(ivar[:, inside]), ~bad[:, inside])


# ----------------------------------------------------------------------------------------------------------
# Voronoi binning


def voronoi_bins(x, y, signal, noise, target_snr: float) -> np.ndarray:
    """Bin number (0..n_bins-1) of each spaxel at pixel coordinates (x, y), aiming at ``target_snr`` per bin.

    Spaxels already at the target keep a bin of their own, and only the fainter ones go through vorbin (as
    its documentation advises for large data: far faster, the same bins). Also covers the cases vorbin
    refuses: a single faint spaxel, or faint spaxels that together stay below the target (one bin).
    """
    alone = signal / noise >= target_snr
    labels = np.empty(x.size, dtype=int)
    labels[alone] = np.arange(alone.sum())
    faint = np.flatnonzero(~alone)
    if faint.size == 0:
        return labels
    if faint.size == 1 or signal[faint].sum() / np.sqrt(np.sum(noise[faint] ** 2)) < target_snr:
        labels[faint] = alone.sum()
        return labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        faint_labels = voronoi_2d_binning(x[faint], y[faint], signal[faint], noise[faint], target_snr,
                                          plot=False, quiet=True, pixelsize=1.0)[0]
    labels[faint] = alone.sum() + np.unique(faint_labels, return_inverse=True)[1]  # vorbin may skip numbers
    return labels


def coadd(flux, ivar, bad, weight, labels, n_bins):
    """Sum the member spectra of each bin: (flux, ivar, bad) ``[n_bins, n_wave]``, not normalised.

    Where some members are bad, the sum of the good ones is scaled up by the bin's total over their share of
    ``weight`` (each member's mean flux); a pixel is bad when that share is below MIN_GOOD_FRACTION.
    """
    member = labels >= 0
    index = np.flatnonzero(member)
    onehot = sparse.csr_matrix((np.ones(index.size), (labels[member], index)), shape=(n_bins, labels.size))
    good = ~bad
    share = (onehot @ (good * weight[:, None])) / (onehot @ weight)[:, None]
    bin_bad = share < MIN_GOOD_FRACTION
    scale = np.where(bin_bad, 0.0, 1.0 / np.where(bin_bad, 1.0, share))
    total = onehot @ np.where(good, flux, 0.0) * scale
    var = onehot @ np.divide(1.0, ivar, out=np.zeros(ivar.shape), where=good) * scale**2
    bin_bad |= ~(var > 0)
    return np.where(bin_bad, 0.0, total), np.divide(1.0, var, out=np.zeros(var.shape), where=~bin_bad), bin_bad


# ----------------------------------------------------------------------------------------------------------
# One galaxy


def _redshift(obs: Observation, source: str) -> float:
    z = float(np.asarray(obs.redshift, dtype=float).ravel()[0])
    if not np.isfinite(z) or z <= -0.01:
        raise InputError(source, f"redshift is {z}: give it in a catalogue column (e.g. nsa_z for MaNGA)")
    return z


def _number(value) -> float:
    return np.nan if value is None else float(value)  # headers and catalogues give None for unknown


def prepare_galaxy(obs: Observation, prepare_config: dict, *, truth: dict | None = None,
                   truth_maps: dict | None = None, image: np.ndarray | None = None,
                   partial_coverage: bool = False) -> PreparedGalaxy:
    """Prepare one cube, or one spectrum of a set (see ``split_spectra``), into binned rest-frame spectra.

    ``truth``: known properties of the galaxy (mock truth or catalogue row), copied into its galaxies row;
    its ``re_arcsec`` gives the bins' ``radius_re``. ``truth_maps``: per-spaxel [ny, nx] truth, averaged per bin
    weighted by flux. ``image``: a gri cutout [3, h, w] in nanomaggies (else the cube's own images are used).
    ``partial_coverage``: for placing on frozen maps (precompute.placement), the spectra need not cover the whole
    grid nor the normalisation window (see ``to_rest_frame`` and ``normalisation``); a build never sets it.
    """
    source = str(obs.meta.get("path") or obs.meta.get("source") or obs.id)
    obs.validate(source)
    if not obs.is_cube and obs.n_spectra != 1:
        raise ValueError(f"{source}: {obs.n_spectra} spectra in one Observation; prepare each (split_spectra)")
    truth = dict(truth or {})
    z = _redshift(obs, source)
    grid = rest_frame_grid(prepare_config)
    norm_window = prepare_config["norm_window"]
    spatial = obs.spatial_shape if obs.is_cube else (1, 1)
    n_spaxels = int(np.prod(spatial))
    flux, ivar, bad = to_rest_frame(
        obs.wave, obs.flux.reshape(n_spaxels, -1), obs.ivar.reshape(n_spaxels, -1), obs.bad.reshape(n_spaxels, -1),
        z, grid, source, partial_coverage,
    )
    norm, usable = normalisation(flux, bad, grid, norm_window, partial_coverage)
    if obs.foreground_star is not None:
        usable &= ~np.asarray(obs.foreground_star, dtype=bool).reshape(n_spaxels)
    if not usable.any():
        raise InputError(source, f"no spectrum has enough good, positive flux in the normalisation window "
                                 f"{norm_window[0]:.0f}–{norm_window[1]:.0f} Å rest-frame")
    spaxel_good = usable[:, None] & ~bad
    spaxel_flux = np.where(spaxel_good, flux / np.where(usable, norm, 1.0)[:, None], 0.0)
    spaxel_ivar = np.where(spaxel_good, ivar * (norm**2)[:, None], 0.0)

    if obs.is_cube:
        if not obs.pixel_scale:
            raise InputError(source, "cube has no pixel scale (arcsec per spaxel)")
        labels = _voronoi_labels(flux, ivar, bad, usable, spatial, grid, prepare_config, source)
        row_idx, col_idx = np.indices(spatial).reshape(2, -1)
        x_arcsec = (col_idx - (spatial[1] - 1) / 2) * obs.pixel_scale
        y_arcsec = (row_idx - (spatial[0] - 1) / 2) * obs.pixel_scale
    else:  # a fibre or extracted spectrum: one bin, position unknown
        labels, x_arcsec, y_arcsec = np.zeros(1, dtype=int), np.full(1, np.nan), np.full(1, np.nan)

    weight = np.where(labels >= 0, norm, 0.0)  # flux weights: each spaxel's mean flux in the window
    bin_flux, bin_ivar, snr, keep, normalised = _binned_spectra(flux, ivar, bad, weight, labels, grid,
                                                                prepare_config, partial_coverage)
    if not obs.is_cube:  # a single spectrum is kept whatever its S/N: there is nothing to bin it with
        keep = normalised if partial_coverage else np.isfinite(snr)
    if not keep.any():
        raise InputError(source, f"no Voronoi bin reaches S/N {prepare_config['min_bin_snr']} "
                                 f"(best {np.nanmax(snr, initial=0.0):.1f})")
    bins, spaxel_bins, kept = _bin_table(obs.id, labels, weight, x_arcsec, y_arcsec, snr, keep, truth, truth_maps)
    native = images.native_gri(obs, image)
    thumbnail = (images.thumbnail_png(native) if obs.is_cube or image is not None or obs.images else
                 images.spectrum_thumbnail_png(bin_flux[kept][0], bin_ivar[kept][0] > 0))
    row = {
        **truth,
        "galaxy_id": obs.id,
        "source": source,
        "redshift": z,
        "ra": _number(obs.meta.get("ra", truth.get("ra"))),
        "dec": _number(obs.meta.get("dec", truth.get("dec"))),
        "n_bins": len(bins),
    }
    negative_ivar = int(np.sum(obs.meta.get("negative_ivar", 0)))
    if negative_ivar:  # pixels the reader masked for an invalid (negative) ivar: kept on record, see write_core
        row[NEGATIVE_IVAR] = negative_ivar
    return PreparedGalaxy(
        galaxy_id=obs.id,
        row=row,
        bin_flux=bin_flux[kept].astype(np.float32),
        bin_ivar=bin_ivar[kept].astype(np.float32),
        bins=bins,
        spaxel_bins=spaxel_bins.reshape(spatial),
        spaxel_flux=spaxel_flux.reshape(*spatial, grid.size).astype(np.float32),
        spaxel_ivar=spaxel_ivar.reshape(*spatial, grid.size).astype(np.float32),
        spaxel_norm=np.where(usable, norm, 0.0).reshape(spatial).astype(np.float32),
        image=images.rebin_flux(native, int(prepare_config["image_size"])),
        thumbnail_png=thumbnail,
    )


def _voronoi_labels(flux, ivar, bad, usable, spatial, grid, prepare_config, source) -> np.ndarray:
    """Voronoi bin of each spaxel (-1: not binned) from its S/N near the normalisation window."""
    signal, noise = signal_and_noise(flux, ivar, bad, grid, _snr_window(prepare_config))
    with np.errstate(invalid="ignore", divide="ignore"):
        candidate = usable & (noise > 0) & (signal / noise >= prepare_config["min_spaxel_snr"])
    if not candidate.any():
        raise InputError(source, f"no spaxel reaches S/N {prepare_config['min_spaxel_snr']} near the "
                                 f"normalisation window")
    row_idx, col_idx = np.indices(spatial).reshape(2, -1)
    labels = np.full(signal.size, -1)
    labels[candidate] = voronoi_bins(col_idx[candidate].astype(float), row_idx[candidate].astype(float),
                                     signal[candidate], noise[candidate], prepare_config["target_snr"])
    return labels


def _binned_spectra(flux, ivar, bad, weight, labels, grid, prepare_config, partial_coverage=False):
    """Co-added, normalised spectra of every bin, their S/N, whether they pass min_bin_snr and whether they could
    be normalised."""
    bin_flux, bin_ivar, bin_bad = coadd(flux, ivar, bad, weight, labels, int(labels.max()) + 1)
    bin_norm, normalisable = normalisation(bin_flux, bin_bad, grid, prepare_config["norm_window"], partial_coverage)
    bin_norm = np.where(normalisable, bin_norm, 1.0)
    bin_flux = np.where(bin_bad, 0.0, bin_flux / bin_norm[:, None])
    bin_ivar = np.where(bin_bad, 0.0, bin_ivar * (bin_norm**2)[:, None])
    snr = np.where(normalisable, spectrum_snr(bin_flux, bin_ivar, bin_bad, grid, _snr_window(prepare_config)), np.nan)
    with np.errstate(invalid="ignore"):
        return bin_flux, bin_ivar, snr, snr >= prepare_config["min_bin_snr"], normalisable


def _bin_table(galaxy_id, labels, weight, x_arcsec, y_arcsec, snr, keep, truth, truth_maps):
    """bins.parquet rows of the kept bins, numbered outwards from the centre; the spaxel -> bin_id map; and
    the kept bins' rows among the co-added spectra, in bin_id order."""
    n_bins, member = int(labels.max()) + 1, labels >= 0
    onehot = sparse.csr_matrix((weight[member], (labels[member], np.flatnonzero(member))),
                               shape=(n_bins, labels.size))

    def flux_weighted(values):
        values = np.asarray(values, dtype=float).reshape(labels.size)
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (onehot @ np.where(finite, values, 0.0)) / (onehot @ finite.astype(float))

    x_bin, y_bin = flux_weighted(x_arcsec), flux_weighted(y_arcsec)
    re_arcsec = _number(truth.get("re_arcsec"))
    table = pd.DataFrame({
        "galaxy_id": galaxy_id,
        "bin_id": np.int32(0),
        "x_arcsec": x_bin,
        "y_arcsec": y_bin,
        "radius_re": np.hypot(x_bin, y_bin) / re_arcsec if re_arcsec > 0 else np.nan,
        "snr": snr,
        "n_spaxels": np.bincount(labels[member], minlength=n_bins).astype(np.int32),
        **{name: flux_weighted(values) for name, values in (truth_maps or {}).items()},
    })
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(np.nan_to_num(np.hypot(x_bin[kept], y_bin[kept])), kind="stable")]
    table = table.iloc[kept].reset_index(drop=True)
    table["bin_id"] = np.arange(kept.size, dtype=np.int32)
    new_id = np.full(n_bins, -1, dtype=np.int32)
    new_id[kept] = table["bin_id"].to_numpy()
    return table, np.where(member, new_id[np.maximum(labels, 0)], -1).astype(np.int32), kept


def split_spectra(obs: Observation) -> list[Observation]:
    """A cube as is; a set of spectra as one single-spectrum Observation each (``<id>:<index>`` when several)."""
    if obs.is_cube:
        return [obs]
    n = obs.n_spectra
    redshift = np.broadcast_to(np.asarray(obs.redshift, dtype=float), (n,))
    path = obs.meta.get("path", obs.id)
    negative_ivar = np.broadcast_to(obs.meta.get("negative_ivar", 0), (n,))  # the reader counts per spectrum
    return [
        Observation(
            id=obs.id if n == 1 else f"{obs.id}:{i}", format=obs.format, wave=obs.wave,
            flux=obs.flux[i : i + 1], ivar=obs.ivar[i : i + 1], bad=obs.bad[i : i + 1], redshift=float(redshift[i]),
            meta={**obs.meta, "path": path if n == 1 else f"{path}[{i}]", "negative_ivar": negative_ivar[i : i + 1]},
        )
        for i in range(n)
    ]


# ----------------------------------------------------------------------------------------------------------
# Streams of galaxies


def _skip(err: Exception) -> None:
    tqdm.write(f"skipped {err}", file=sys.stderr)


def _summary(what: str, n_galaxies: int, n_spectra: int, skipped: int, seconds: float) -> None:
    print(f"prepared {n_galaxies} galaxies ({n_spectra} binned spectra) from {what} in {seconds:.1f} s "
          f"({n_galaxies / max(seconds, 1e-9):.2f} galaxies/s); skipped {skipped}", file=sys.stderr)


def prepare_input(unit, config: dict, catalogue=None) -> tuple[list[PreparedGalaxy], list[str]]:
    """Prepare one input (a `precompute.shards.Unit`: mock galaxy `index`, or the file at `path`, a cube or a set of
    spectra giving one galaxy each): (galaxies, skipped), where `skipped` holds one line per input or spectrum that
    could not be read or prepared, naming the file and the problem. The one per-input step of every stream."""
    galaxies, skipped = [], []
    try:
        if unit.index is not None and config["mock"]["format"] == SED_FORMAT:
            from precompute.mock.sed_library import sed_observation

            obs, truth = sed_observation(config["seed"], unit.index)
            galaxies.append(prepare_galaxy(obs, config["prepare"], truth=truth))
            return galaxies, skipped
        if unit.index is not None:
            from precompute.mock.survey import SURVEY_OPTIONS, make_galaxy

            mock = make_galaxy(config["seed"], unit.index, config["mock"]["format"],
                               **{option: config["mock"][option] for option in SURVEY_OPTIONS})
            galaxies.append(prepare_galaxy(mock.observation, config["prepare"], truth=mock.truth,
                                           truth_maps=mock.truth_maps, image=mock.image))
            return galaxies, skipped
        from precompute import formats

        for obs in split_spectra(formats.read_observation(unit.path, catalogue=catalogue)):
            try:  # one bad spectrum of a set skips that spectrum only
                galaxies.append(prepare_galaxy(obs, config["prepare"], truth=catalogue_row(
                    catalogue, config["inputs"]["catalogue_key"], obs)))
            except InputError as err:
                skipped.append(str(err))
    except InputError as err:
        skipped.append(str(err))
    except OSError as err:
        skipped.append(str(InputError(unit.path, str(err))))
    return galaxies, skipped


def _stream(units, config: dict, catalogue, what: str):
    """Yield the PreparedGalaxy of every unit in order (in this process); returns the number skipped."""
    start, made, spectra, skipped, seen = time.perf_counter(), 0, 0, 0, set()
    for unit in tqdm(units, desc=f"prepare {what}", unit="input"):
        galaxies, problems = prepare_input(unit, config, catalogue)
        for problem in problems:
            _skip(problem)
        skipped += len(problems)
        for galaxy in galaxies:
            if galaxy.galaxy_id in seen:
                _skip(InputError(unit.path or unit.key, f"galaxy id {galaxy.galaxy_id} was already prepared"))
                skipped += 1
                continue
            seen.add(galaxy.galaxy_id)
            made, spectra = made + 1, spectra + len(galaxy.bins)
            yield galaxy
    _summary(what, made, spectra, skipped, time.perf_counter() - start)
    return skipped


def prepare_mock(n: int, seed: int, fmt: str, config: dict):
    """Stream the embedded mock survey through ``prepare_galaxy``; yields PreparedGalaxy, returns the skip count."""
    from precompute.shards import mock_units

    config = {**config, "seed": seed, "mock": {**config["mock"], "format": fmt}}
    return (yield from _stream(mock_units(n), config, None, f"the mock survey (seed {seed})"))


def catalogue_row(catalogue, key: str, obs: Observation) -> dict:
    """The catalogue row of this observation (matched on ``key``) as a dict; empty when absent."""
    if catalogue is None:
        return {}
    match = catalogue[catalogue[key].astype(str) == str(obs.id)]
    return {} if match.empty else match.iloc[0].to_dict()


def read_catalogue(config: dict, catalogue=None, key: str | None = None, column_map: dict | None = None):
    """The input catalogue (config ``inputs`` unless given), or None when there is none."""
    from precompute import formats

    inputs = config["inputs"]
    catalogue = inputs["catalogue"] if catalogue is None else catalogue
    if catalogue is None:
        return None
    table = formats.read_catalogue(catalogue, key=key or inputs["catalogue_key"],
                                   column_map=inputs["column_map"] if column_map is None else column_map)
    for line in table.attrs["problems"]:  # cells read as unknown: only their galaxies are affected
        tqdm.write(line, file=sys.stderr)
    return table


def prepare_files(paths, config: dict, catalogue=None, key: str = "plateifu", column_map: dict | None = None):
    """Read and prepare input files; a file that cannot be read or prepared is reported and skipped.

    Sets of spectra give one galaxy per spectrum. Yields PreparedGalaxy; returns the number skipped.
    """
    from precompute.shards import file_units

    config = {**config, "inputs": {**config["inputs"], "catalogue_key": key}}
    table = None if catalogue is None else read_catalogue(config, catalogue, key, column_map or {})
    paths = [str(p) for p in paths]
    return (yield from _stream(file_units(paths), config, table, f"{len(paths)} files"))


def resolved_inputs(config: dict) -> tuple[list[str], list[str]]:
    """(files, skipped lines): the configured inputs (files, directories, globs) resolved into files; empty for
    the mock survey. The catalogue is never an input."""
    from precompute.inputs import resolve_inputs

    inputs = config["inputs"]
    return resolve_inputs(inputs["files"], exclude=[inputs["catalogue"]]) if inputs["files"] else ([], [])


def prepare_to_staging(config: dict, staging: Path, client=None) -> tuple[list, list[str], dict]:
    """Prepare the configured inputs (files, directories, globs; else the mock survey) into shards under `staging`
    on the engine `client` (precompute.engine; None = in-process), reusing finished shards.

    Returns (StagedGalaxies in input order, skipped lines, provenance: the inputs' record, shards prepared and
    reused)."""
    from precompute.engine import run_tasks
    from precompute.inputs import inputs_record
    from precompute.shards import StagedGalaxies, file_units, mock_units, prepare_unit

    files, skipped = resolved_inputs(config)
    units = file_units(files) if files else mock_units(config["mock"]["galaxies"])
    catalogue = read_catalogue(config) if files else None
    folders, seen, counts, n_spectra = [], set(), {"prepared": 0, "reused": 0}, 0
    start = time.perf_counter()
    for unit, result in run_tasks(client, prepare_unit, units, "prepare", config=config, staging=str(staging),
                                  catalogue=catalogue):
        counts["reused" if result.reused else "prepared"] += 1
        skipped += result.skipped
        for galaxy_id, folder, n_bins in result.galaxies:
            if galaxy_id in seen:
                skipped.append(str(InputError(unit.path or unit.key, f"galaxy id {galaxy_id} was already prepared")))
                continue
            seen.add(galaxy_id)
            folders.append(folder)
            n_spectra += n_bins
    for line in skipped:
        _skip(line)
    _summary(f"{len(units)} inputs ({counts['reused']} shards reused)", len(folders), n_spectra, len(skipped),
             time.perf_counter() - start)
    inputs = inputs_record(files) if files else f"mock:{config['seed']}:{config['mock']['galaxies']}"
    provenance = {"inputs": inputs, "shards": counts}
    if catalogue is not None and catalogue.attrs["problems"]:
        provenance["catalogue_problems"] = catalogue.attrs["problems"]
    return StagedGalaxies(folders), skipped, provenance


def record_inputs(writer: BundleWriter, config: dict, provenance: dict) -> None:
    """Provenance of the inputs into the bundle, with the list of files beside the manifest when it is long."""
    writer.provenance.update(provenance)
    if isinstance(provenance["inputs"], dict) and provenance["inputs"]["files"] == schema.INPUT_LIST.path:
        writer.write(schema.INPUT_LIST, "\n".join(resolved_inputs(config)[0]).encode() + b"\n")


def collect(stream) -> tuple[list[PreparedGalaxy], int]:
    """Exhaust a prepare_mock / prepare_files stream: (galaxies, number skipped)."""
    galaxies = []
    while True:
        try:
            galaxies.append(next(stream))
        except StopIteration as stop:
            return galaxies, int(stop.value or 0)


# ----------------------------------------------------------------------------------------------------------
# Bundle


def assign_split(groups, val_fraction: float, seed: int) -> np.ndarray:
    """'train'/'val' per galaxy: ``val_fraction`` held out, in proportion within each group (morphology)."""
    groups = np.asarray(groups, dtype=str)
    rng = np.random.default_rng(seed)
    labels, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse, minlength=labels.size)
    quota = val_fraction * sizes
    n_val = np.floor(quota).astype(int)
    # Largest remainders get the leftover held-out places (ties broken at random), so the total is right
    extra = int(round(val_fraction * groups.size)) - n_val.sum()
    order = np.lexsort((rng.random(labels.size), -(quota - n_val)))
    n_val[order[:max(extra, 0)]] += 1
    split = np.full(groups.size, "train", dtype=object)
    for k in range(labels.size):
        members = np.flatnonzero(inverse == k)
        split[rng.choice(members, size=min(n_val[k], members.size), replace=False)] = "val"
    return split


def _file_name(galaxy_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", galaxy_id)


def write_core(writer: BundleWriter, galaxies, config: dict):
    """Write the core files of the bundle schema from prepared galaxies (a list, or `StagedGalaxies` read one at a
    time from their shards): spectra and images are written galaxy by galaxy (precompute.rows), so memory does not
    grow with the survey. Returns the (galaxies, bins) tables as written."""
    if not len(galaxies):
        raise ValueError("nothing to write: no galaxy was prepared (were all inputs skipped?)")
    prep = config["prepare"]
    rows, bin_tables, maps, n_wave = [], [], {}, rest_frame_grid(prep).size
    for i, galaxy in enumerate(tqdm(galaxies, desc="tables", unit="galaxy", leave=False)):
        rows.append(galaxy.row)
        bin_tables.append(galaxy.bins.assign(galaxy_index=np.int32(i)))
        maps[galaxy.galaxy_id] = np.asarray(galaxy.spaxel_bins)
    table = pd.DataFrame(rows)
    ids = table["galaxy_id"]
    if ids.duplicated().any():
        raise ValueError(f"galaxy ids must be unique; repeated: {sorted(set(ids[ids.duplicated()]))}")
    groups = table["morphology"] if "morphology" in table else np.zeros(len(table))
    table["split"] = assign_split(groups, prep["val_fraction"], config["seed"])
    names = pd.Series([_file_name(g) for g in ids])
    names = names.where(~names.duplicated(keep=False), names + "-" + names.index.astype(str))
    table["thumbnail"] = "thumbnails/" + names + ".png"
    table = table[GALAXY_COLUMNS + [c for c in table.columns if c not in GALAXY_COLUMNS]]
    table["n_bins"] = table["n_bins"].astype(np.int32)
    if NEGATIVE_IVAR in table:  # a galaxy without negative IVAR has none masked, not an unknown number
        table[NEGATIVE_IVAR] = table[NEGATIVE_IVAR].fillna(0).astype(np.int64)
    bins = pd.concat(bin_tables, ignore_index=True)
    bins.insert(1, "galaxy_index", bins.pop("galaxy_index"))

    writer.write(schema.GALAXIES, table)
    writer.write(schema.BINS, bins)
    writer.write(schema.WAVE, rest_frame_grid(prep))
    writer.write(schema.SPAXEL_BINS, maps)
    flux = writer.open_rows(schema.FLUX, (len(bins), n_wave))
    ivar = writer.open_rows(schema.IVAR, (len(bins), n_wave))
    image_size = prep["image_size"]
    gri = writer.open_rows(schema.IMAGES, (len(table), 3, image_size, image_size))
    start = 0
    for i, (galaxy, path) in enumerate(zip(tqdm(galaxies, desc="spectra", unit="galaxy", leave=False),
                                           table["thumbnail"])):
        stop = start + len(galaxy.bins)
        flux[start:stop], ivar[start:stop], gri[i] = galaxy.bin_flux, galaxy.bin_ivar, galaxy.image
        writer.write(schema.THUMBNAIL, galaxy.thumbnail_png, thumbnail=path)
        start = stop
    for array in (flux, ivar, gri):
        array.close()
    writer.metrics["prepare"] = {
        "galaxies": len(table),
        "binned_spectra": len(bins),
        "val_galaxies": int((table["split"] == "val").sum()),
        "median_bin_snr": float(bins["snr"].median()),
    }
    if NEGATIVE_IVAR in table:
        writer.metrics["prepare"][NEGATIVE_IVAR] = {"pixels": int(table[NEGATIVE_IVAR].sum()),
                                                    "galaxies": int((table[NEGATIVE_IVAR] > 0).sum())}
    return table, bins


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute prepare", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="MaNGA / CALIFA cubes, spectra sets, SDSS spec files")
    parser.add_argument("--catalogue", help="table of galaxy properties (redshift, R_e, ...) matched on --key")
    parser.add_argument("--key", help="catalogue column holding the file ids (default: config, plateifu)")
    parser.add_argument("--mock", type=int, metavar="N", help="prepare N galaxies of the embedded mock survey")
    parser.add_argument("--format", help="mock survey format: manga, califa or sed (single spectra of the SED library; default: config)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument("--config", help="JSON file overriding precompute/config.py defaults")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    if args.files and args.mock is not None:
        parser.error("give input files or --mock N, not both")
    overrides: dict = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.mock is not None or args.format:
        overrides["mock"] = {k: v for k, v in (("galaxies", args.mock), ("format", args.format)) if v is not None}
    inputs = {k: v for k, v in (("files", args.files), ("catalogue", args.catalogue), ("catalogue_key", args.key))
              if v}
    if args.mock is not None:
        inputs["files"] = []
    overrides["inputs"] = inputs
    config = load_config(args.config, **overrides)
    check_inputs(config)

    from precompute.engine import engine
    from precompute.shards import staging_folder

    start = time.perf_counter()
    staging = staging_folder(args.out, config)
    try:
        with engine(args.workers, args.scheduler) as client:
            galaxies, skipped, provenance = prepare_to_staging(config, staging, client)
    except InputError as err:  # e.g. an unreadable catalogue: nothing can be prepared
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not len(galaxies):
        print(f"nothing prepared: all {len(skipped)} inputs were skipped; no bundle written", file=sys.stderr)
        return 1
    with BundleWriter(args.out, config, seed=config["seed"]) as writer:
        table, bins = write_core(writer, galaxies, config)
        writer.metrics["prepare"]["skipped"] = len(skipped)
        record_inputs(writer, config, provenance)
        writer.provenance["skipped"] = skipped
        writer.provenance["timings"] = {"prepare_s": round(time.perf_counter() - start, 2)}
    shutil.rmtree(staging, ignore_errors=True)
    print(f"core bundle written to {args.out} ({len(table)} galaxies, {len(bins)} binned spectra, {len(skipped)} skipped)")
    return 0
