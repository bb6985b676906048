"""Gappy placement: spectra with missing pixels placed on a frozen DESOM-1 map.

    placement = place_spectra(model, flux, ivar, wave, norm_window, min_coverage=0.6)

A pixel a spectrum does not cover (a blue end that starts at 3811 Å rest-frame, a chip gap) or that is masked
(ivar = 0) is *missing*: neither zero nor the training mean. The code is found by iterative gappy reconstruction,
as Connolly & Szalay (1999, AJ 117, 2052) did for PCA: encode (missing pixels at the training mean to start),
decode, fill the missing pixels from the decoded spectrum, encode again, until the code stops moving. A spectrum
missing only narrow stretches (sky lines, bad pixels: what the build's own spectra miss) is encoded once with the
training mean in them, as the build encodes its spectra.

A spectrum whose normalisation window is missing cannot be normalised as the build's spectra are (mean flux in the
window = 1). Its level s is then the one whose gappy reconstruction best fits the observed pixels,
min_s Σ_obs (f − s · decoded_s)², found by golden-section search on log s around its least-squares scale onto the
training mean. (Rescaling onto the decoded spectrum at each iteration does not work: the encoder follows any scale,
trading level for colour, and the iteration drifts by ±5 %, which moves a spectrum across the map; the residual of
the observed pixels does pin the level, measured to ~1 % on mock spectra cut below 4155 Å.)

One function for every caller (`python -m precompute assign`, the dashboard; for the build's own bins, which
miss only narrow stretches, it gives what the build's DESOM.transform gives): arrays in, arrays out; reading files
and naming them in errors is the caller's part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from precompute.models.desom import DESOM
from precompute.models.som import adjacency, best_matching_units, squared_distances
from precompute.prepare import window_mean, window_observed

# Gaps the model was trained with: the build masks sky lines (±6 Å, a little wider once resampled) and single bad
# pixels, and encodes its spectra with the training mean in them. A spectrum whose gaps are all that narrow is
# encoded the same way, so `assign` gives the build's own spectra the build's nodes; wider gaps and an uncovered
# end of the grid are filled by the gappy iteration.
NARROW_GAP = 20.0  # Å
MIN_COVERAGE = 0.6  # share of the rest-frame grid a spectrum must observe to be placed (assign --min-coverage)
MAX_ITERATIONS = 30
TOLERANCE = 1e-3  # converged when the code moves by less than this fraction of its length in one iteration
SCALE_RANGE = 1.5  # the level is searched within this factor of its first guess
SCALE_TOLERANCE = 2e-3  # ... down to a bracket this wide in ln s (0.2 %)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class Placement:
    """Per spectrum (arrays of length N); spectra not placed (`error` not empty) have node -1 and NaN figures."""

    coverage: np.ndarray  # share of the grid observed (covered and not masked)
    node: np.ndarray  # int64 BMU on the map (node = row * cols + col)
    qe: np.ndarray  # latent distance to the BMU's prototype
    second_node: np.ndarray  # int64 second-best node
    confidence: np.ndarray  # share of the latent neighbourhood weight on the BMU and its grid neighbours (0–1)
    recon_error: np.ndarray  # median |normalised flux - decoded| / median |normalised flux| over observed pixels
    scale: np.ndarray  # the flux was divided by this: 1 where the normalisation window is observed
    iterations: np.ndarray  # gappy iterations of the last code (0: no pixel missing)
    latent: np.ndarray  # float32 [N, latent_dim]
    decoded: np.ndarray  # float32 [N, n_wave]: the decoded spectrum, the fill of the missing pixels
    error: np.ndarray  # object: "" or why the spectrum was not placed

    def table(self, cols: int) -> pd.DataFrame:
        """The CSV columns of `assign` (node with its grid row and column for a map `cols` nodes wide)."""
        off_map = self.node < 0
        nodes = pd.Series(self.node, dtype="Int64").mask(off_map)
        second = pd.Series(self.second_node, dtype="Int64").mask(off_map)
        return pd.DataFrame({"node": nodes, "bmu_row": nodes // cols, "bmu_col": nodes % cols, "qe": self.qe,
                             "recon_error": self.recon_error, "coverage": self.coverage, "second_node": second,
                             "confidence": self.confidence, "error": self.error})


def place_spectra(model: DESOM, flux, ivar, wave, norm_window, min_coverage: float = MIN_COVERAGE,
                  max_iterations: int = MAX_ITERATIONS, tolerance: float = TOLERANCE) -> Placement:
    """Place spectra [N, n_wave] on the rest-frame grid `wave` on the fitted DESOM-1 `model`.

    `flux` is prepared as the build prepares its spectra (precompute.prepare, normalised to a mean of 1 in
    `norm_window`) wherever that window is observed, and at any positive scale where it is not; pixels with
    ivar <= 0 or non-finite flux are missing. Spectra observing less than `min_coverage` of the grid are not placed
    (their `error` says why; the build passes 0 to place every bin it kept).
    """
    flux = np.asarray(flux, np.float32)
    ivar = np.asarray(ivar, np.float32)
    wave = np.asarray(wave, float)
    if flux.shape != ivar.shape or flux.ndim != 2 or flux.shape[1] != wave.size:
        raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must both be [n_spectra, n_wave = {wave.size}]")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be a fraction between 0 and 1, got {min_coverage}")
    with np.errstate(invalid="ignore"):
        good = (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
    flux = np.where(good, flux, 0.0).astype(np.float32)
    n, latent_dim = len(flux), model.autoencoder_.config["latent_dim"]
    coverage = good.mean(axis=1)
    error = np.array([_coverage_problem(c, g, wave, min_coverage) for c, g in zip(coverage, good)], dtype=object)
    scale = np.ones(n, np.float32)
    latent = np.zeros((n, latent_dim), np.float32)
    decoded = np.zeros(flux.shape, np.float32)
    iterations = np.zeros(n, np.int64)
    gappy = _GappyFit(model, flux, good, wave, max_iterations, tolerance)

    todo = np.flatnonzero(error == "")
    # Spectra normalised by prepare keep their scale; the others get the level that fits them best.
    rescale = todo[~window_observed(~good[todo], wave, norm_window)]
    if rescale.size:
        mean_spectrum = model.autoencoder_.offset.detach().cpu().numpy()[None, :]
        first_guess = _scale_against(flux[rescale], good[rescale], mean_spectrum, wave, norm_window)
        scale[rescale] = gappy.best_scale(rescale, first_guess)
        unscalable = rescale[~(scale[rescale] > 0)]
        error[unscalable] = "its flux does not scale onto the map's spectra (no positive least-squares level)"
        todo = np.flatnonzero(error == "")
    if todo.size:
        latent[todo], decoded[todo], iterations[todo] = gappy.codes(todo, scale[todo])

    node, second_node = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    qe, confidence, recon_error = np.full((3, n), np.nan)
    if todo.size:
        z, prototypes = torch.as_tensor(latent[todo]), torch.as_tensor(model.prototypes_)
        index, d2 = best_matching_units(z, prototypes, n_best=2)
        node[todo], second_node[todo] = index[:, 0].numpy(), index[:, 1].numpy()
        qe[todo] = d2[:, 0].sqrt().numpy()
        confidence[todo] = _neighbourhood_confidence(model, z, prototypes, index[:, 0])
        normalised = flux[todo] / scale[todo, None]
        residual = np.where(good[todo], np.abs(normalised - decoded[todo]), np.nan)
        level = np.where(good[todo], np.abs(normalised), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            recon_error[todo] = np.nanmedian(residual, axis=1) / np.nanmedian(level, axis=1)
    return Placement(coverage=coverage, node=node, qe=qe, second_node=second_node, confidence=confidence,
                     recon_error=recon_error, scale=scale, iterations=iterations, latent=latent, decoded=decoded,
                     error=error)


class _GappyFit:
    """Gappy codes of some of the spectra at given levels, each warm-started from its last code."""

    def __init__(self, model: DESOM, flux, good, wave, max_iterations: int, tolerance: float):
        self.model, self.flux, self.good, self.wave = model, flux, good, wave
        self.max_iterations, self.tolerance = max_iterations, tolerance
        self.last = np.zeros((len(flux), model.autoencoder_.config["latent_dim"]), np.float32)
        self.known = np.zeros(len(flux), bool)

    def codes(self, rows: np.ndarray, scale: np.ndarray):
        """(latent, decoded, iterations) of spectra `rows` divided by `scale`: the fixed point of fill-and-encode."""
        flux, good, known = self.flux[rows] / scale[:, None], self.good[rows], self.known[rows]
        latent = self.last[rows]
        if (~known).any():  # first guess: the training mean in the gaps (what DESOM.encode imputes)
            latent[~known] = self.model.encode(flux[~known], good[~known])
        decoded = self.model.decode(latent)
        iterations = np.zeros(len(rows), np.int64)
        active = np.flatnonzero(has_wide_gap(good, self.wave) | known)
        for step in range(1, self.max_iterations + 1):
            if not active.size:
                break
            new = self.model.encode(np.where(good[active], flux[active], decoded[active]))
            moved = np.linalg.norm(new - latent[active], axis=1) / np.maximum(
                np.linalg.norm(latent[active], axis=1), 1e-12)
            latent[active], decoded[active], iterations[active] = new, self.model.decode(new), step
            active = active[moved > self.tolerance]
        self.last[rows], self.known[rows] = latent, True
        return latent, decoded, iterations

    def misfit(self, rows: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
        """Σ over observed pixels of (flux − s · decoded)², the gappy reconstruction at level s = e^log_scale."""
        scale = np.exp(log_scale).astype(np.float32)
        _, decoded, _ = self.codes(rows, scale)
        return (self.good[rows] * (self.flux[rows] - scale[:, None] * decoded) ** 2).sum(axis=1)

    def best_scale(self, rows: np.ndarray, first_guess: np.ndarray) -> np.ndarray:
        """The level of each spectrum minimising `misfit`: golden-section search on ln s within SCALE_RANGE of
        `first_guess` (NaN where the first guess is not positive)."""
        scale = np.full(len(rows), np.nan, np.float32)
        ok = np.flatnonzero(first_guess > 0)
        if not ok.size:
            return scale
        rows = rows[ok]
        # Bracket a < c < d < b; each step keeps the side of the lower inner point and probes one new point.
        a = np.log(first_guess[ok].astype(float)) - math.log(SCALE_RANGE)
        b = a + 2.0 * math.log(SCALE_RANGE)
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        f_c, f_d = self.misfit(rows, c), self.misfit(rows, d)
        while (b - a).max() > SCALE_TOLERANCE:
            left = f_c < f_d  # the minimum lies in [a, d]
            a, b = np.where(left, a, c), np.where(left, d, b)
            c, d, f_c, f_d = (np.where(left, b - _GOLDEN * (b - a), d), np.where(left, c, a + _GOLDEN * (b - a)),
                              np.where(left, np.nan, f_d), np.where(left, f_c, np.nan))
            value = self.misfit(rows, np.where(left, c, d))
            f_c, f_d = np.where(left, value, f_c), np.where(left, f_d, value)
        scale[ok] = np.exp(0.5 * (a + b))
        return scale


def has_wide_gap(good: np.ndarray, wave: np.ndarray, narrow: float = NARROW_GAP) -> np.ndarray:
    """Per spectrum: does it miss an end pixel of the grid, or a run of pixels spanning more than `narrow` Å?"""
    missing = ~np.asarray(good, bool)
    wide = missing[:, 0] | missing[:, -1]
    rows = np.flatnonzero(missing.any(axis=1) & ~wide)
    if rows.size:  # the inner runs of all those spectra at once
        inner = missing[rows]
        # Pixels that differ from the next one, row-major: each run gives a step in (its start − 1), then a step
        # out (its end), within one row, since no run of these spectra touches an end of the grid.
        row, step = np.divmod(np.flatnonzero(inner[:, 1:] != inner[:, :-1]), inner.shape[1] - 1)
        starts, ends = step[0::2] + 1, step[1::2]
        wide[rows[row[0::2][wave[ends] - wave[starts] > narrow]]] = True
    return wide


def _scale_against(flux, good, model_flux, wave, norm_window) -> np.ndarray:
    """Least-squares factor s of each spectrum, flux ≈ s · model_flux over its observed pixels, with `model_flux`
    normalised as prepare normalises (mean 1 in `norm_window`); unweighted, so that the ivar of a few bright pixels
    does not decide the level of the whole spectrum. NaN where `model_flux` cannot be normalised."""
    model_flux = np.broadcast_to(model_flux, flux.shape)
    level, positive = window_mean(model_flux, np.zeros(model_flux.shape, bool), wave, norm_window)
    reference = model_flux / np.where(positive, level, np.nan)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (good * flux * reference).sum(axis=1) / (good * reference**2).sum(axis=1)


def _neighbourhood_confidence(model: DESOM, z: torch.Tensor, prototypes: torch.Tensor, bmu: torch.Tensor):
    """Share of a Gaussian weight over all nodes, exp(−(d² − d²_BMU) / 2τ²) with τ half the map's mean latent
    distance between neighbouring prototypes (its resolution), that falls on the BMU and its grid neighbours.

    Near 1: no node elsewhere on the map is about as close, so the spectrum belongs in this neighbourhood (an
    ambiguity between neighbours is harmless on an ordered map). Low: a distant part of the map fits about as well.
    A ranking, not a calibrated probability: on mock spectra cut below 4155 Å it separates those landing near their
    full spectrum's node from the others only partly (ROC AUC ~0.68).
    """
    tau = 0.5 * float(model.umatrix().mean())
    d2 = squared_distances(z, prototypes)
    weight = torch.exp(-(d2 - d2.min(dim=1, keepdim=True).values) / (2.0 * tau * tau))
    near = adjacency(model.rows, model.cols, model.topology)[bmu] | torch.nn.functional.one_hot(
        bmu, prototypes.shape[0]).bool()
    return ((weight * near).sum(1) / weight.sum(1)).numpy()


def _coverage_problem(coverage: float, good: np.ndarray, wave: np.ndarray, min_coverage: float) -> str:
    """Why a spectrum observing `coverage` of the grid cannot be placed, or "" if it can."""
    span = f"the rest-frame grid {wave[0]:.0f}–{wave[-1]:.0f} Å"
    if not good.any():
        return f"no pixel of {span} is observed (every pixel uncovered or masked)"
    if coverage >= min_coverage:
        return ""
    observed = wave[good]
    return (f"covers only {coverage:.0%} of {span} (observed {observed[0]:.0f}–{observed[-1]:.0f} Å, less masked "
            f"pixels); placing needs at least {min_coverage:.0%} (assign --min-coverage)")
