"""Seed 002: the spectral map on a catalogue of single spectra (the mock SED library, a spectra set, SDSS).

The spectra are put on the bundle's rest-frame grid and normalised as in preparation, mapped with DESOM-1 as
configured, and their latent codes are then grouped by k-means (k = 6 in seed 002) and ordered by a classic
MiniSom 10×10 map, as in the seed paper.

    sed_map, truth = sed_library_map(2000, seed=1, config=load_config())
    sed_map.kmeans   # cluster of every spectrum
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from precompute.models.desom import DESOM
from precompute.models.som import SOM
from precompute.prepare import rest_frame_grid, to_rest_frame, window_mean
from precompute.spectral_maps import spectrum_desom


@dataclass
class SEDMap:
    """A fitted spectral map of single spectra and the groupings of their latent codes."""

    desom: DESOM
    flux: np.ndarray  # float32 [n, n_wave] prepared (rest-frame grid, normalised) spectra
    ivar: np.ndarray
    kept: np.ndarray  # bool [n_input]: spectra usable after preparation (the rows of the arrays here)
    latent: np.ndarray  # float32 [n, latent_dim]
    nodes: np.ndarray  # DESOM-1 node of every spectrum
    kmeans: np.ndarray  # k-means cluster of every latent code
    minisom: SOM  # MiniSom map fitted on the latent codes
    minisom_nodes: np.ndarray


def prepare_spectra(wave, flux, ivar, prepare_config: dict, redshift: float = 0.0, source: str = "spectra"):
    """Spectra [n, n_wave_in] (observed at `redshift`) -> (flux, ivar, kept) on the rest-frame grid, normalised by
    the mean in the normalisation window; spectra without a usable window are dropped (kept = False)."""
    flux = np.asarray(flux, dtype=float)
    ivar = np.asarray(ivar, dtype=float)
    grid = rest_frame_grid(prepare_config)
    bad = ~(np.isfinite(flux) & (ivar > 0))
    rest, rest_ivar, rest_bad = to_rest_frame(np.asarray(wave, float), np.where(bad, 0.0, flux), ivar, bad, redshift,
                                              grid, source)
    norm, usable = window_mean(rest, rest_bad, grid, prepare_config["norm_window"])
    if not usable.any():
        raise ValueError(f"{source}: no spectrum has good, positive flux in the normalisation window")
    norm = norm[usable][:, None]
    good = ~rest_bad[usable]
    out_flux = np.where(good, rest[usable] / norm, 0.0).astype(np.float32)
    out_ivar = np.where(good, rest_ivar[usable] * norm**2, 0.0).astype(np.float32)
    return out_flux, out_ivar, usable


def build_sed_map(wave, flux, ivar, config: dict, redshift: float = 0.0, verbose: bool = True) -> SEDMap:
    """Prepare the spectra, fit DESOM-1 (config["desom1"]) on them, then k-means and MiniSom on the latent
    codes (config["sed_map"]). Everything is seeded from config["seed"]."""
    seed, cfg = int(config["seed"]), config["sed_map"]
    prepared, prepared_ivar, kept = prepare_spectra(wave, flux, ivar, config["prepare"], redshift)
    train = np.arange(len(prepared))
    limit = config["desom1"]["max_train_spectra"]
    if train.size > limit:
        train = np.sort(np.random.default_rng(seed).choice(train, limit, replace=False))
    desom = spectrum_desom(prepared.shape[1], config["desom1"], seed, config.get("device", "auto"), verbose)
    desom.fit(prepared[train], prepared_ivar[train] > 0)
    latent = desom.encode(prepared, prepared_ivar > 0)
    kmeans = KMeans(n_clusters=cfg["kmeans_k"], n_init=10, random_state=seed).fit_predict(latent)
    minisom = SOM(cfg["minisom_rows"], cfg["minisom_cols"], n_epochs=cfg["minisom_epochs"], seed=seed,
                  backend="minisom").fit(latent)
    return SEDMap(desom, prepared, prepared_ivar, kept, latent, desom.transform(latent, latent=True),
                  kmeans.astype(np.int32), minisom, minisom.transform(latent))


def sed_library_map(n: int, seed: int, config: dict, verbose: bool = True):
    """The seed-002 experiment on the mock SED library: n noisy library spectra mapped; (SEDMap, truth of the
    kept spectra)."""
    from precompute.mock.sed_library import add_noise, make_sed_library

    wave, flux, truth = make_sed_library(n, seed)
    noisy, ivar = add_noise(flux, truth["snr"].to_numpy(), seed)
    sed_map = build_sed_map(wave, noisy, ivar, config, verbose=verbose)
    return sed_map, truth[sed_map.kept].reset_index(drop=True)
