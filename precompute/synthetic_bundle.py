"""A schema-true synthetic bundle of any size, for the dashboard's tests and benchmark (no torch, no training).

Galaxies get mock-truth-like properties driven by one hidden "quenching" variable, so colour-by, SOM maps and
comparisons look like a survey; binned spectra are a mix of a young and an old continuum plus emission lines;
the model sections (DESOM-1, fingerprints, DESOM-2, embeddings) are filled with arrays of the documented shapes
whose structure follows those properties. Nothing here is a trained model: `desom1/model.pt` is an empty
placeholder and the manifest says `provenance.synthetic`.

    python -m precompute.synthetic_bundle data/bundles/synthetic --galaxies 160 --bins-per-galaxy 50
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from precompute.bundle import BundleWriter
from precompute.config import load_config
from precompute.fingerprints import fingerprint_counts, node_scale, normalise_fingerprints

ALL_SECTIONS = ("desom1", "fingerprints", "desom2", "embeddings")  # the sections written here
GALAXY_PREFIX = "galaxy."  # galaxy properties joined to the bins are named galaxy.<column> (as spectral_maps)

MORPHOLOGIES = ("E", "S0", "Sa", "Sb", "Sc", "Sd", "Irr", "BCD")
BIN_TRUTH = ("log_age_lw", "logz_lw", "log_ssfr", "ew_halpha", "av", "velocity_kms", "sigma_kms")
N_HIST = 24


def write_synthetic_bundle(
    path: str | Path,
    n_galaxies: int = 40,
    bins_per_galaxy: int = 30,
    seed: int = 0,
    sections: tuple[str, ...] = ALL_SECTIONS,
    som_shape: tuple[int, int] = (15, 15),
    som2_shape: tuple[int, int] = (10, 10),
    dlog10_wave: float = 2.0e-4,
    image_size: int = 64,
    embeddings: tuple[str, ...] = ("contrastive", "fingerprint"),
    progress: bool = False,
) -> Path:
    """Write a synthetic bundle to `path` (atomically) and return the path.

    `bins_per_galaxy` is the mean number of binned spectra per galaxy (Poisson, at least 3); `dlog10_wave`
    sets the spectral grid (coarser grids keep million-spectrum bundles small on disk).
    """
    unknown = set(sections) - set(ALL_SECTIONS)
    if unknown:
        raise ValueError(f"unknown bundle sections {sorted(unknown)}; known: {list(ALL_SECTIONS)}")
    if "fingerprints" in sections and "desom1" not in sections:
        raise ValueError("the fingerprints section needs the desom1 section")
    if "desom2" in sections and "fingerprints" not in sections:
        raise ValueError("the desom2 section needs the fingerprints section")
    if n_galaxies < 4:
        raise ValueError(f"n_galaxies={n_galaxies}: need at least 4 galaxies")
    rng = np.random.default_rng(seed)
    config = load_config(
        seed=seed,
        mock={"galaxies": n_galaxies, "format": "synthetic"},
        prepare={"dlog10_wave": dlog10_wave, "image_size": image_size},
        desom1={"rows": som_shape[0], "cols": som_shape[1]},
        desom2={"rows": som2_shape[0], "cols": som2_shape[1]},
    )
    prep = config["prepare"]
    wave = 10 ** np.arange(np.log10(prep["wave_min"]), np.log10(prep["wave_max"]), dlog10_wave)

    galaxies = _galaxies(rng, n_galaxies, bins_per_galaxy, prep["val_fraction"])
    bins, spaxel_bins = _bins(rng, galaxies, progress)
    galaxies["n_bins"] = np.bincount(bins["galaxy_index"], minlength=n_galaxies).astype(int)
    path = Path(path)
    with BundleWriter(path, config, seed) as writer:
        writer.provenance["synthetic"] = {
            "generator": "precompute.synthetic_bundle",
            "n_galaxies": n_galaxies,
            "n_bins": len(bins),
            "note": "synthetic data, no trained models",
        }
        writer.array("spectra/wave", wave)
        _write_spectra(writer, rng, bins, wave, prep["norm_window"], progress)
        writer.arrays("spaxel_bins", spaxel_bins)
        images = _images(rng, galaxies, image_size)
        writer.array("images/gri", images)
        for gid, png in zip(galaxies["galaxy_id"], _thumbnails(images, progress)):
            writer.blob(f"thumbnails/{gid}.png", png)

        fingerprints = None
        if "desom1" in sections:
            bins = _write_desom1(writer, rng, galaxies, bins, wave, som_shape, progress)
        if "fingerprints" in sections:
            fingerprints = _write_fingerprints(writer, galaxies, bins, som_shape)
        if "desom2" in sections:
            galaxies = _write_desom2(writer, galaxies, fingerprints, som2_shape)
        if "embeddings" in sections:
            _write_embeddings(writer, rng, galaxies, fingerprints, embeddings)
        writer.table("galaxies", galaxies)
        writer.table("bins", bins)
    return path


# -- galaxies and their binned spectra ---------------------------------------------------------------------------

def _galaxies(rng, n: int, bins_per_galaxy: int, val_fraction: float) -> pd.DataFrame:
    q = rng.beta(1.2, 1.2, n)  # hidden "quenching" variable: 0 = star-forming disc, 1 = passive spheroid
    morph_index = np.clip(np.round((1 - q) * 6.2 + rng.normal(0, 0.8, n)), 0, 7).astype(int)
    morphology = np.array(MORPHOLOGIES)[morph_index]
    log_mstar = rng.normal(10.1, 0.55, n) + 0.6 * (q - 0.5)
    log_age_lw = 8.9 + 1.2 * q + rng.normal(0, 0.12, n)
    log_ssfr = -9.4 - 2.6 * q + rng.normal(0, 0.25, n)
    ew_halpha = np.maximum(10 ** (1.7 - 2.0 * q + rng.normal(0, 0.15, n)) - 1.0, -3 + rng.random(n))
    agn = rng.random(n) < 0.08
    log_nii_ha = -0.6 + 0.5 * q + 0.4 * agn + rng.normal(0, 0.1, n)
    log_oiii_hb = 0.1 - 0.5 * q + 0.6 * agn + rng.normal(0, 0.2, n)
    inclination = np.degrees(np.arccos(rng.random(n)))
    re_arcsec = rng.lognormal(np.log(4.0), 0.3, n)
    redshift = rng.uniform(0.01, 0.08, n)
    frame = pd.DataFrame({
        "galaxy_id": [f"synth-{i:05d}" for i in range(n)],
        "split": np.where(rng.random(n) < val_fraction, "val", "train"),
        "source": [f"synthetic:{i}" for i in range(n)],
        "redshift": redshift,
        "ra": rng.uniform(120, 240, n),
        "dec": np.degrees(np.arcsin(rng.uniform(-0.1, 0.9, n))),
        "n_bins": np.maximum(rng.poisson(bins_per_galaxy, n), 3),  # target; replaced by the kept count
        "thumbnail": [f"thumbnails/synth-{i:05d}.png" for i in range(n)],
        "morphology": morphology,
        "log_mstar": log_mstar,
        "bt": np.clip(0.9 - morph_index * 0.13 + rng.normal(0, 0.05, n), 0, 1),
        "log_age_lw": log_age_lw,
        "log_age_mw": log_age_lw + 0.15 + rng.normal(0, 0.05, n),
        "logz_lw": -0.3 + 0.25 * (log_mstar - 10) + rng.normal(0, 0.08, n),
        "logz_mw": -0.2 + 0.25 * (log_mstar - 10) + rng.normal(0, 0.08, n),
        "log_sfr": log_ssfr + log_mstar,
        "log_ssfr": log_ssfr,
        "ew_halpha": ew_halpha,
        "d4000": 1.15 + 0.75 * q + rng.normal(0, 0.04, n),
        "log_nii_ha": log_nii_ha,
        "log_oiii_hb": log_oiii_hb,
        "bpt_class": _bpt(log_nii_ha, log_oiii_hb, ew_halpha),
        "whan_class": _whan(log_nii_ha, ew_halpha),
        "agn": agn,
        "quenched": log_ssfr < -11,
        "inclination_deg": inclination,
        "ellipticity": 1 - np.sqrt(np.cos(np.radians(inclination)) ** 2 * 0.96 + 0.04),
        "pa_deg": rng.uniform(0, 180, n),
        "re_arcsec": re_arcsec,
        "re_kpc": re_arcsec * redshift * 4.26e3 / 206.265,  # small-z: D ≈ cz/H0 with H0 = 70
        "environment": rng.choice(["cluster", "filament-wall", "void"], n, p=[0.25, 0.6, 0.15]),
        "av": np.clip(rng.normal(0.8 - 0.6 * q, 0.2, n), 0, None),
        "vrot_kms": np.clip(rng.normal(220 - 120 * q, 30, n), 10, None),
        "sigma_kms": np.clip(rng.normal(80 + 120 * q, 20, n), 30, None),
        "disturbed": rng.random(n) < 0.03,
        "extreme_emission": rng.random(n) < 0.02,
    })
    return frame


def _bpt(nii_ha, oiii_hb, ew):
    kauffmann = 0.61 / (nii_ha - 0.05) + 1.3
    kewley = 0.61 / (nii_ha - 0.47) + 1.19
    out = np.where((nii_ha < 0.05) & (oiii_hb < kauffmann), "star-forming",
                   np.where((nii_ha < 0.47) & (oiii_hb < kewley), "composite",
                            np.where(oiii_hb > 1.05 * nii_ha + 0.45, "seyfert", "liner")))
    return np.where(ew < 1.0, "none", out)


def _whan(nii_ha, ew):
    return np.select(
        [ew < 0.5, ew < 3, nii_ha < -0.4, ew > 6],
        ["passive", "retired", "SF", "sAGN"],
        default="wAGN",
    )


def _bins(rng, galaxies: pd.DataFrame, progress: bool):
    """Voronoi-like bins: seeds on spaxels inside 1.5 R_e, every spaxel to its nearest seed."""
    rows, maps = [], {}
    for g, gal in enumerate(tqdm(galaxies.itertuples(), total=len(galaxies), disable=not progress, desc="bins")):
        n_bins = int(gal.n_bins)
        axis_ratio = 1 - gal.ellipticity
        side = int(np.ceil(np.sqrt(n_bins * 3 / axis_ratio))) + 6
        yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
        pa = np.radians(gal.pa_deg)
        major = xx * np.cos(pa) + yy * np.sin(pa)
        minor = -xx * np.sin(pa) + yy * np.cos(pa)
        r = np.hypot(major, minor / axis_ratio)
        inside = np.flatnonzero(r.ravel() <= r.ravel()[np.argsort(r.ravel())[min(3 * n_bins, r.size - 1)]])
        seeds = rng.choice(inside, size=n_bins, replace=False)
        d2 = (xx.ravel()[inside, None] - xx.ravel()[seeds]) ** 2 + (yy.ravel()[inside, None] - yy.ravel()[seeds]) ** 2
        owner = np.argmin(d2, axis=1)
        bin_map = np.full(side * side, -1, np.int32)
        bin_map[inside] = owner
        maps[gal.galaxy_id] = bin_map.reshape(side, side)
        n_spax = np.bincount(owner, minlength=n_bins)
        cx = np.bincount(owner, xx.ravel()[inside], n_bins) / n_spax
        cy = np.bincount(owner, yy.ravel()[inside], n_bins) / n_spax
        pixel = 0.5  # arcsec per spaxel, as MaNGA
        radius_re = np.hypot(cx, cy) * pixel / gal.re_arcsec
        rows.append(pd.DataFrame({
            "galaxy_id": gal.galaxy_id,
            "galaxy_index": np.full(n_bins, g, np.int32),
            "bin_id": np.arange(n_bins, dtype=np.int32),
            "x_arcsec": cx * pixel,
            "y_arcsec": cy * pixel,
            "radius_re": radius_re,
            "n_spaxels": n_spax.astype(int),
            # radial gradients: older, more metal-poor and less star-forming outwards in quenched galaxies
            "log_age_lw": gal.log_age_lw + 0.15 * (0.8 - radius_re) + rng.normal(0, 0.1, n_bins),
            "logz_lw": gal.logz_lw - 0.1 * radius_re + rng.normal(0, 0.05, n_bins),
            "log_ssfr": gal.log_ssfr + 0.3 * (radius_re - 0.8) + rng.normal(0, 0.2, n_bins),
            "ew_halpha": gal.ew_halpha * np.exp(rng.normal(0, 0.3, n_bins)),
            "av": np.clip(gal.av * np.exp(-radius_re) + rng.normal(0, 0.05, n_bins), 0, None),
            "velocity_kms": gal.vrot_kms * np.sin(np.radians(gal.inclination_deg)) * np.tanh(cx * pixel / 2)
            + rng.normal(0, 10, n_bins),
            "sigma_kms": gal.sigma_kms * np.exp(-0.3 * radius_re) + rng.normal(0, 5, n_bins),
        }))
    bins = pd.concat(rows, ignore_index=True)
    bins["snr"] = np.clip(rng.normal(22, 6, len(bins)) + 10 / (0.3 + bins["radius_re"]), 10, None)
    return bins, maps


def _spectrum_components(wave: np.ndarray) -> np.ndarray:
    """Three base spectra on `wave`: young continuum, old continuum (4000 Å break, absorption), emission lines."""
    young = (wave / 5500.0) ** -1.6
    old = (wave / 5500.0) ** 0.4 * (1 - 0.45 / (1 + np.exp((wave - 4000.0) / 25.0)))
    for centre, depth, width in ((3934.8, 0.5, 6), (3969.6, 0.45, 6), (4102.9, 0.15, 8), (4305.6, 0.15, 10),
                                 (4862.7, 0.12, 8), (5176.7, 0.12, 10), (5891.6, 0.1, 8), (5270.0, 0.06, 8)):
        old = old * (1 - depth * np.exp(-0.5 * ((wave - centre) / width) ** 2))
    lines = np.zeros_like(wave)
    for centre, strength in ((3727.1, 1.2), (3729.9, 1.0), (4862.7, 1.0), (4960.3, 0.35), (5008.2, 1.0),
                             (6549.9, 0.3), (6564.6, 3.0), (6585.3, 0.9), (6718.3, 0.4), (6732.7, 0.3)):
        lines += strength * np.exp(-0.5 * ((wave - centre) / 2.5) ** 2)
    return np.stack([young, old, lines / 30.0])


def _write_spectra(writer, rng, bins: pd.DataFrame, wave, norm_window, progress: bool, chunk: int = 50_000):
    """Flux and ivar written chunk by chunk into .npy memmaps, so a million spectra need little memory."""
    components = _spectrum_components(wave).astype(np.float32)
    norm = (wave >= norm_window[0]) & (wave <= norm_window[1])
    n = len(bins)
    flux = np.lib.format.open_memmap(writer._file("spectra/flux.npy"), "w+", np.float32, (n, wave.size))
    ivar = np.lib.format.open_memmap(writer._file("spectra/ivar.npy"), "w+", np.float32, (n, wave.size))
    old_weight = np.clip((bins["log_age_lw"].to_numpy() - 8.5) / 1.8, 0, 1)
    emission = np.clip(bins["ew_halpha"].to_numpy(), 0, None)
    snr = bins["snr"].to_numpy()
    for start in tqdm(range(0, n, chunk), disable=not progress, desc="spectra"):
        sl = slice(start, min(start + chunk, n))
        weights = np.stack([1 - old_weight[sl], old_weight[sl], emission[sl]], axis=1).astype(np.float32)
        model = weights @ components
        model /= model[:, norm].mean(axis=1, keepdims=True)
        sigma = (1.0 / snr[sl, None]).astype(np.float32) * np.sqrt(np.clip(model, 0.05, None))
        flux[sl] = model + sigma * rng.standard_normal(model.shape, dtype=np.float32)
        ivar[sl] = 1.0 / sigma**2
    flux.flush()
    ivar.flush()


def _images(rng, galaxies: pd.DataFrame, size: int) -> np.ndarray:
    """g, r, i exponential discs plus de Vaucouleurs-like bulges, redder when quenched."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    images = np.empty((len(galaxies), 3, size, size), np.float32)
    scale = size / 64  # images span the same sky area at every size
    for g, gal in enumerate(galaxies.itertuples()):
        pa = np.radians(gal.pa_deg)
        major = xx * np.cos(pa) + yy * np.sin(pa)
        minor = -xx * np.sin(pa) + yy * np.cos(pa)
        r = np.hypot(major, minor / max(1 - gal.ellipticity, 0.15)) / (gal.re_arcsec / 0.396 * scale / 2)
        disc = np.exp(-1.68 * r)
        bulge = np.exp(-7.67 * (np.hypot(xx, yy) / (gal.re_arcsec / 0.396 * scale / 2) / 0.5 + 1e-3) ** 0.25)
        red = np.clip((gal.log_age_lw - 8.8) / 1.4, 0, 1)
        for band, colour in enumerate((1.0 - 0.55 * red, 1.0, 1.0 + 0.35 * red)):
            light = colour * ((1 - gal.bt) * disc + gal.bt * 40 * bulge)
            images[g, band] = 2.0 * light + rng.normal(0, 0.01, (size, size))
    return images


def _thumbnails(images: np.ndarray, progress: bool):
    from astropy.visualization import make_lupton_rgb
    from PIL import Image

    for gri in tqdm(images, disable=not progress, desc="thumbnails"):
        rgb = make_lupton_rgb(gri[2], gri[1], gri[0], stretch=0.5, Q=8)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        yield buffer.getvalue()


# -- model sections ----------------------------------------------------------------------------------------------

def _grid_coordinates(u: np.ndarray, v: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Node k = row * cols + col from two values in [0, 1]."""
    r = np.clip((u * rows).astype(int), 0, rows - 1)
    c = np.clip((v * cols).astype(int), 0, cols - 1)
    return (r * cols + c).astype(np.int32)


def _ranks(x: np.ndarray) -> np.ndarray:
    return (np.argsort(np.argsort(x, kind="stable"), kind="stable") + 0.5) / len(x)


def _umatrix(prototypes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    grid = prototypes.reshape(rows, cols, -1)
    total = np.zeros((rows, cols))
    count = np.zeros((rows, cols))
    for dr, dc in ((0, 1), (1, 0)):
        d = np.linalg.norm(grid[dr:, dc:] - grid[: rows - dr, : cols - dc], axis=-1)
        total[dr:, dc:] += d
        count[dr:, dc:] += 1
        total[: rows - dr, : cols - dc] += d
        count[: rows - dr, : cols - dc] += 1
    return (total / count).astype(np.float32)


def _write_desom1(writer, rng, galaxies, bins, wave, shape, progress):
    rows, cols = shape
    k = rows * cols
    latent_dim = 16
    # node rows follow stellar age, columns Hα emission: smooth property maps as a trained map would give
    u = _ranks(bins["log_age_lw"].to_numpy() + rng.normal(0, 0.05, len(bins)))
    v = _ranks(np.log10(np.clip(bins["ew_halpha"].to_numpy(), 0, None) + 1) + rng.normal(0, 0.05, len(bins)))
    bins = bins.copy()
    bins["desom1_node"] = _grid_coordinates(u, v, rows, cols)
    bins["desom1_qe"] = np.abs(rng.normal(0.3, 0.1, len(bins))).astype(np.float32)
    node = bins["desom1_node"].to_numpy()

    rr, cc = np.divmod(np.arange(k), cols)
    basis = np.stack([rr / rows, cc / cols, (rr / rows) ** 2, (cc / cols) ** 2, rr * cc / k], axis=1)
    prototypes_latent = (basis @ rng.normal(0, 1, (5, latent_dim)) + rng.normal(0, 0.02, (k, latent_dim)))
    hits = np.bincount(node, minlength=k).astype(np.int64)

    components = _spectrum_components(wave)
    norm = (wave >= writer.config["prepare"]["norm_window"][0]) & (wave <= writer.config["prepare"]["norm_window"][1])
    flux = np.load(writer._file("spectra/flux.npy"), mmap_mode="r")
    member_spectra = np.full((4, k, wave.size), np.nan, np.float32)
    prototype_spectra = np.empty((k, wave.size), np.float32)
    order = np.argsort(node, kind="stable")
    starts = np.concatenate([[0], np.cumsum(hits)])
    for j in tqdm(range(k), disable=not progress, desc="node spectra"):
        members = order[starts[j]: starts[j + 1]]
        if members.size:
            sample = np.sort(rng.choice(members, size=min(members.size, 64), replace=False))
            spectra = np.asarray(flux[sample])
            member_spectra[0, j] = spectra.mean(axis=0)
            member_spectra[1:, j] = np.percentile(spectra, [16, 50, 84], axis=0)
            old = np.median(np.clip((bins["log_age_lw"].to_numpy()[sample] - 8.5) / 1.8, 0, 1))
            ew = np.median(np.clip(bins["ew_halpha"].to_numpy()[sample], 0, None))
        else:
            old, ew = (rr[j] + 0.5) / rows, 0.0
        model = np.array([1 - old, old, ew]) @ components
        prototype_spectra[j] = model / model[norm].mean()

    # per-node distributions of every numeric bin property and galaxy property joined to the bins
    per_galaxy = galaxies.drop(columns=["galaxy_id"]).add_prefix(GALAXY_PREFIX)
    joined = bins.join(per_galaxy, on="galaxy_index")
    numeric = [c for c in joined.columns if pd.api.types.is_numeric_dtype(joined[c])
               and not pd.api.types.is_bool_dtype(joined[c])
               and c not in ("galaxy_index", "bin_id", "desom1_node", "desom1_qe")]
    quantiles = joined.groupby("desom1_node")[numeric].quantile([0.16, 0.5, 0.84]).unstack()
    counts = joined.groupby("desom1_node")[numeric].count()
    records, histograms = [], {}
    for prop in numeric:
        values = joined[prop].to_numpy(float)
        good = np.isfinite(values)
        lo, hi = np.percentile(values[good], [0.5, 99.5]) if good.any() else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1, N_HIST + 1)
        which = np.clip(np.searchsorted(edges, values[good], side="right") - 1, 0, N_HIST - 1)
        hist = np.bincount(node[good] * N_HIST + which, minlength=k * N_HIST).reshape(k, N_HIST).astype(np.float32)
        hist /= np.clip(hist.sum(axis=1, keepdims=True), 1, None) * np.diff(edges)  # PDF per node
        histograms[prop], histograms[f"{prop}__edges"] = hist, edges
        records.append(pd.DataFrame({
            "node": counts.index.to_numpy(),
            "property": prop,
            "n": counts[prop].to_numpy(),
            "median": quantiles[(prop, 0.5)].to_numpy(),
            "p16": quantiles[(prop, 0.16)].to_numpy(),
            "p84": quantiles[(prop, 0.84)].to_numpy(),
        }))

    writer.json("desom1/grid.json", {"rows": rows, "cols": cols, "topology": "rectangular",
                                     "latent_dim": latent_dim, "gamma": 5e-4})
    writer.blob("desom1/model.pt", b"")  # synthetic: no trained model to store
    writer.array("desom1/prototypes_latent", prototypes_latent.astype(np.float32))
    writer.array("desom1/prototype_spectra", prototype_spectra)
    writer.array("desom1/member_spectra", member_spectra)
    writer.array("desom1/hits", hits)
    writer.array("desom1/umatrix", _umatrix(prototypes_latent, rows, cols))
    writer.table("desom1/node_properties", pd.concat(records, ignore_index=True))
    writer.arrays("desom1/node_histograms", histograms)
    writer.metrics["desom1"] = {"quantization_error": float(bins["desom1_qe"].mean())}
    writer.section("desom1")
    return bins


def _write_fingerprints(writer, galaxies, bins, shape):
    rows, cols = shape
    k = rows * cols
    counts = fingerprint_counts(bins["galaxy_index"].to_numpy(), bins["desom1_node"].to_numpy(), len(galaxies), k)
    scale = node_scale(counts[galaxies["split"].to_numpy() == "train"])
    fingerprints = normalise_fingerprints(counts, scale, rows, cols)
    writer.array("fingerprints/counts", counts)
    writer.array("fingerprints/fingerprints", fingerprints)
    writer.array("fingerprints/node_scale", scale)
    writer.section("fingerprints")
    return fingerprints


def _write_desom2(writer, galaxies, fingerprints, shape):
    rows, cols = shape
    k = rows * cols
    n = len(galaxies)
    flat = fingerprints.reshape(n, -1)
    # place galaxies by the first two principal components of their fingerprints
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:2].T
    node = _grid_coordinates(_ranks(pcs[:, 0]), _ranks(pcs[:, 1]), rows, cols)
    hits = np.bincount(node, minlength=k).astype(np.int64)
    sums = np.zeros((k, flat.shape[1]))
    np.add.at(sums, node, flat)
    prototypes = np.where(hits[:, None] > 0, sums / np.clip(hits[:, None], 1, None), flat.mean(axis=0))
    writer.json("desom2/grid.json", {"rows": rows, "cols": cols, "topology": "rectangular",
                                     "latent_dim": 8, "backend": "desom"})
    writer.array("desom2/prototypes", prototypes.reshape(k, *fingerprints.shape[1:]).astype(np.float32))
    writer.array("desom2/hits", hits)
    writer.array("desom2/umatrix", _umatrix(prototypes, rows, cols))
    writer.section("desom2")
    galaxies = galaxies.copy()
    galaxies["desom2_node"] = node
    return galaxies


def _write_embeddings(writer, rng, galaxies, fingerprints, names, k_neighbours: int = 15):
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import NearestNeighbors

    n = len(galaxies)
    numeric = [c for c in galaxies.columns if pd.api.types.is_numeric_dtype(galaxies[c])
               and not pd.api.types.is_bool_dtype(galaxies[c]) and c != "desom2_node"]
    props = galaxies[numeric].to_numpy(float)
    standard = (props - props.mean(axis=0)) / np.where(props.std(axis=0) > 0, props.std(axis=0), 1)
    train = np.flatnonzero(galaxies["split"].to_numpy() == "train")
    index = {}
    for name in names:
        if name == "fingerprint":
            if fingerprints is None:
                continue
            vectors, metric = fingerprints.reshape(n, -1), "euclidean"
        else:
            dim = 32
            vectors = np.tanh(standard @ rng.normal(0, 0.4, (len(numeric), dim))) + rng.normal(0, 0.05, (n, dim))
            metric = "cosine"
        vectors = vectors.astype(np.float32)
        centred = vectors - vectors[train].mean(axis=0)
        _, s, vt = np.linalg.svd(centred[train], full_matrices=False)
        pcs = centred @ vt[:2].T
        umap = np.stack([pcs[:, 0] + 0.3 * np.sin(2 * pcs[:, 1]), pcs[:, 1] + 0.2 * pcs[:, 0] ** 2], axis=1)
        k = min(k_neighbours, len(train) - 1)
        nn = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(vectors[train])
        distance, neighbour = nn.kneighbors(vectors)
        neighbour = train[neighbour]
        # drop each galaxy itself from its own neighbour list (training galaxies find themselves first)
        keep = neighbour != np.arange(n)[:, None]
        keep[keep.sum(axis=1) > k, -1] = False
        knn = neighbour[keep].reshape(n, k).astype(np.int32)
        knn_distance = distance[keep].reshape(n, k).astype(np.float32)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
        clusters = {}
        for n_clusters in range(2, 6):
            clusters[f"kmeans_k{n_clusters}"] = KMeans(n_clusters, n_init=3, random_state=0).fit_predict(unit)
        for n_clusters in range(2, 6):
            gmm = GaussianMixture(n_clusters, covariance_type="diag", random_state=0).fit(pcs[train])
            clusters[f"gmm_k{n_clusters}"] = gmm.predict(pcs)
        n_components = min(10, vt.shape[0])
        components = centred @ vt[:n_components].T
        correlation = pd.DataFrame({"component": np.arange(n_components),
                                    "explained_variance": (s[:n_components] ** 2 / (s**2).sum())})
        for j, prop in enumerate(numeric):
            x = props[:, j]
            correlation[prop] = [np.corrcoef(components[:, c], x)[0, 1] if x.std() > 0 else np.nan
                                 for c in range(n_components)]
        writer.array(f"embeddings/{name}/vectors", vectors)
        writer.array(f"embeddings/{name}/umap", umap.astype(np.float32))
        writer.array(f"embeddings/{name}/knn", knn)
        writer.array(f"embeddings/{name}/knn_distance", knn_distance)
        writer.table(f"embeddings/{name}/clusters", pd.DataFrame(clusters).astype(np.int32))
        writer.table(f"embeddings/{name}/property_correlation", correlation)
        index[name] = {"dim": int(vectors.shape[1]), "metric": metric,
                       "description": f"synthetic {name} embedding (no trained model)"}
    writer.json("embeddings/index.json", index)
    writer.section("embeddings")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute.synthetic_bundle", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="bundle folder to write")
    parser.add_argument("--galaxies", type=int, default=160)
    parser.add_argument("--bins-per-galaxy", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dlog10-wave", type=float, default=2.0e-4, help="log10 step of the spectral grid")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--sections", default=",".join(ALL_SECTIONS), help="comma-separated optional sections")
    args = parser.parse_args(argv)
    sections = tuple(s for s in args.sections.split(",") if s)
    path = write_synthetic_bundle(args.out, args.galaxies, args.bins_per_galaxy, args.seed, sections,
                                  dlog10_wave=args.dlog10_wave, image_size=args.image_size, progress=True)
    print(f"wrote synthetic bundle {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
