"""A synthetic bundle of any size for the dashboard's tests and benchmark, made by the pipeline's own functions.

Only the inputs are fake: galaxies with mock-truth-like properties driven by one hidden "quenching" variable,
Voronoi-like bins with radial gradients, binned spectra mixing a young and an old continuum with emission lines,
and a fake "encoder" (a fixed linear map of each bin's properties, plus noise) in place of the DESOM-1 autoencoder.
Everything after that is the build's own code: the wavelength grid (`prepare.rest_frame_grid`), the torch SOM
on the fake latent vectors (prototypes, BMUs, U-matrix), `spectral_maps.write_desom1` (member spectra, node
statistics), `write_fingerprints`, `build_desom2` (MiniSom backend), and `embeddings.write_embedding` (UMAP,
k-NN, clusters, correlations). The result passes `precompute.schema.validate`; the manifest says
`provenance.synthetic`, and `desom1/model.pt` is empty (no trained autoencoder).

    python tests/synthetic_bundle.py data/bundles/synthetic --galaxies 160 --bins-per-galaxy 50
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from precompute import schema
from precompute.bundle import BundleWriter
from precompute.config import load_config
from precompute.embeddings import write_embedding
from precompute.images import thumbnail_png
from precompute.models.som import SOM
from precompute.prepare import rest_frame_grid
from precompute.spectral_maps import build_desom2, training_sample_size, write_desom1, write_fingerprints

MORPHOLOGIES = ("E", "S0", "Sa", "Sb", "Sc", "Sd", "Irr", "BCD")
LATENT_DIM = 16
# Bin properties the fake encoder sees (ew_halpha through log1p: it spans decades).
ENCODED = ("log_age_lw", "logz_lw", "log_ssfr", "ew_halpha", "av")


def write_synthetic_bundle(
    path: str | Path,
    n_galaxies: int = 40,
    bins_per_galaxy: int = 30,
    seed: int = 0,
    som_shape: tuple[int, int] = (15, 15),
    som2_shape: tuple[int, int] = (10, 10),
    dlog10_wave: float = 2.0e-4,
    image_size: int = 64,
    embeddings: tuple[str, ...] = ("contrastive", "fingerprint"),
    progress: bool = False,
) -> Path:
    """Write a synthetic bundle to `path` (atomically) and return the path.

    `bins_per_galaxy` is the mean number of binned spectra per galaxy (Poisson, at least 3); `dlog10_wave`
    sets the spectral grid (coarser grids keep million-spectrum bundles small on disk). `embeddings` may hold
    "fingerprint" (the fingerprints, as in a build) and "contrastive" (a fake 32-d cosine embedding of the
    galaxies' properties standing in for the contrastive model).
    """
    if n_galaxies < 16:
        raise ValueError(f"n_galaxies={n_galaxies}: need at least 16 galaxies (neighbours and clusters of the "
                         f"training split)")
    rng = np.random.default_rng(seed)
    config = load_config(
        seed=seed,
        mock={"galaxies": n_galaxies},
        prepare={"dlog10_wave": dlog10_wave, "image_size": image_size},
        desom1={"rows": som_shape[0], "cols": som_shape[1], "latent_dim": LATENT_DIM},
        desom2={"rows": som2_shape[0], "cols": som2_shape[1], "backend": "minisom", "epochs": 5},
        embedding_models=[],
        device="cpu",
    )
    wave = rest_frame_grid(config["prepare"])
    galaxies = _galaxies(rng, n_galaxies, bins_per_galaxy, config["prepare"]["val_fraction"])
    bins, spaxel_bins = _bins(rng, galaxies, progress)
    galaxies["n_bins"] = np.bincount(bins["galaxy_index"], minlength=n_galaxies).astype(np.int32)
    path = Path(path)
    with BundleWriter(path, config, seed) as writer:
        writer.provenance["synthetic"] = {"generator": "tests/synthetic_bundle.py", "n_galaxies": n_galaxies,
                                          "n_bins": len(bins), "note": "fake inputs and encoder, pipeline code after"}
        writer.write(schema.WAVE, wave)
        flux, ivar = _write_spectra(writer, rng, bins, wave, config["prepare"]["norm_window"], progress)
        writer.write(schema.SPAXEL_BINS, spaxel_bins)
        images = _images(rng, galaxies, image_size)
        writer.write(schema.IMAGES, images)
        for gri, thumbnail in zip(tqdm(images, disable=not progress, desc="thumbnails"), galaxies["thumbnail"]):
            writer.write(schema.THUMBNAIL, thumbnail_png(gri), thumbnail=thumbnail)

        bins = _write_spectral_map(writer, rng, galaxies, bins, wave, flux, ivar, config)
        fingerprints = write_fingerprints(writer, galaxies, bins, config)
        galaxies = galaxies.assign(desom2_node=build_desom2(writer, galaxies, fingerprints, config))
        index = {}
        for name in embeddings:
            vectors, metric, text = ((fingerprints.reshape(n_galaxies, -1), "euclidean", "fingerprints")
                                     if name == "fingerprint" else
                                     (_property_embedding(rng, galaxies), "cosine", "synthetic: galaxy properties"))
            writer.metrics.setdefault("embeddings", {})[name] = write_embedding(writer, name, vectors, galaxies,
                                                                                metric, config)
            index[name] = {"dim": int(vectors.shape[1]), "metric": metric, "description": text}
        writer.write(schema.EMBEDDING_INDEX, index)
        writer.section("embeddings")
        writer.write(schema.GALAXIES, galaxies)
        writer.write(schema.BINS, bins)
    return path


# -- fake inputs -------------------------------------------------------------------------------------------------

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


def _write_spectra(writer, rng, bins: pd.DataFrame, wave, norm_window, progress: bool, chunk: int = 50_000):
    """Flux and ivar written chunk by chunk (precompute.rows), so a million spectra need little memory."""
    components = _spectrum_components(wave).astype(np.float32)
    norm = (wave >= norm_window[0]) & (wave <= norm_window[1])
    n = len(bins)
    flux = writer.open_rows(schema.FLUX, (n, wave.size))
    ivar = writer.open_rows(schema.IVAR, (n, wave.size))
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
    flux.close()
    ivar.close()
    return writer.read_rows(schema.FLUX), writer.read_rows(schema.IVAR)


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


# -- model sections: a fake encoder, then the pipeline's own code ---------------------------------------------------

def _encoded_properties(bins: pd.DataFrame) -> np.ndarray:
    values = bins[list(ENCODED)].to_numpy(float, copy=True)
    values[:, ENCODED.index("ew_halpha")] = np.log1p(np.clip(values[:, ENCODED.index("ew_halpha")], 0, None))
    return values


def _write_spectral_map(writer, rng, galaxies, bins, wave, flux, ivar, config) -> pd.DataFrame:
    """Fake latent vectors (a fixed linear map of standardised bin properties, plus noise), then the torch SOM
    and `write_desom1`. Prototype spectra are decoded linearly: properties back from the prototype's latent
    vector (least squares), then the spectrum of those properties."""
    cfg = config["desom1"]
    properties = _encoded_properties(bins)
    mean, std = properties.mean(axis=0), properties.std(axis=0) + 1e-9
    mixing = rng.normal(0, 1, (len(ENCODED), LATENT_DIM))
    latent = ((properties - mean) / std) @ mixing + rng.normal(0, 0.1, (len(bins), LATENT_DIM))
    train = np.flatnonzero(galaxies["split"].to_numpy()[bins["galaxy_index"].to_numpy()] == "train")
    sample = rng.choice(train, size=min(train.size, training_sample_size(cfg, "cpu") or train.size), replace=False)
    som = SOM(cfg["rows"], cfg["cols"], cfg["topology"], sigma_end=cfg["sigma_end"], n_epochs=5,
              seed=int(config["seed"])).fit(latent[sample])
    nodes = som.transform(latent)
    qe = np.linalg.norm(latent - som.weights_[nodes], axis=1)
    bins = bins.assign(desom1_node=nodes.astype(np.int32), desom1_qe=qe.astype(np.float32))

    decoded = np.linalg.lstsq(mixing.T, som.weights_.T, rcond=None)[0].T * std + mean  # [K, properties]
    old = np.clip((decoded[:, ENCODED.index("log_age_lw")] - 8.5) / 1.8, 0, 1)
    emission = np.expm1(np.clip(decoded[:, ENCODED.index("ew_halpha")], 0, None))
    spectra = np.stack([1 - old, old, emission], axis=1) @ _spectrum_components(wave)
    lo, hi = config["prepare"]["norm_window"]
    spectra /= spectra[:, (wave >= lo) & (wave <= hi)].mean(axis=1, keepdims=True)
    write_desom1(writer, cfg, bins, galaxies, flux, ivar, som.weights_, spectra, som.umatrix(), b"")
    writer.metrics["desom1"] = {"quantization_error": float(qe.mean())}
    return bins


def _property_embedding(rng, galaxies: pd.DataFrame, dim: int = 32) -> np.ndarray:
    """A cosine embedding standing in for the contrastive one: a random non-linear map of the galaxy properties."""
    numeric = [c for c in ("log_mstar", "log_age_lw", "log_ssfr", "ew_halpha", "bt", "logz_lw", "d4000")]
    values = galaxies[numeric].to_numpy(float)
    standard = (values - values.mean(axis=0)) / values.std(axis=0)
    return np.tanh(standard @ rng.normal(0, 0.4, (len(numeric), dim))) + rng.normal(0, 0.05, (len(galaxies), dim))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/synthetic_bundle.py", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="bundle folder to write")
    parser.add_argument("--galaxies", type=int, default=160)
    parser.add_argument("--bins-per-galaxy", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dlog10-wave", type=float, default=2.0e-4, help="log10 step of the spectral grid")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    path = write_synthetic_bundle(args.out, args.galaxies, args.bins_per_galaxy, args.seed,
                                  dlog10_wave=args.dlog10_wave, image_size=args.image_size, progress=True)
    print(f"wrote synthetic bundle {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
