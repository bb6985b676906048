"""The embedded mock survey: galaxies streamed in memory, or written as survey files with their truth.

Galaxy ``index`` of survey ``seed`` is generated from its own seed sequence (seed, index), so it is the
same whether streamed or written, and whatever the number of galaxies asked for. Each galaxy's draws are
split into independent streams (population, synthesis, observation, and one per artefact), so a satellite trail
(``satellite_trail_fraction``, config ``mock.satellite_trail_fraction``, default 0) changes that galaxy's image
and nothing else, and an unflagged foreground star (``unflagged_star_fraction``, config
``mock.unflagged_star_fraction``, default 0) its cube and image and nothing else.

    for galaxy in iter_mock_survey(20, seed=42):
        galaxy.observation   # precompute.observation.Observation, as the reader returns the written file
        galaxy.truth         # galaxy_id + the truth columns of docs/bundle-schema.md
        galaxy.truth_maps    # [ny, nx] maps: log_age_lw, logz_lw, log_ssfr, ew_halpha, av, velocity_kms, sigma_kms
        galaxy.image         # float32 [3, 128, 128] g, r, i cutout in nanomaggies
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table
from tqdm import tqdm

from ..formats import manga as manga_format
from ..formats.califa import C_KMS, califa_wave_air, write_califa_cube
from ..observation import Observation
from ..ssp import load_templates
from .observe import CUTOUT_SCALE, INSTRUMENTS, ObservedGalaxy, add_satellite_trail, add_unflagged_star, observe
from .population import GalaxyParams, draw_galaxy
from .synthesis import synthesize

TRUTH_COLUMNS = (
    "morphology", "log_mstar", "bt", "log_age_lw", "log_age_mw", "logz_lw", "logz_mw", "log_sfr", "log_ssfr",
    "ew_halpha", "d4000", "log_nii_ha", "log_oiii_hb", "bpt_class", "whan_class", "agn", "quenched",
    "inclination_deg", "ellipticity", "pa_deg", "re_arcsec", "re_kpc", "environment", "av", "vrot_kms",
    "sigma_kms", "disturbed", "extreme_emission", "satellite_trail", "unflagged_star",
)
TRUTH_MAPS = ("log_age_lw", "logz_lw", "log_ssfr", "ew_halpha", "av", "velocity_kms", "sigma_kms")
FORMATS = ("manga", "califa")
# make_galaxy's survey options, named as their config keys under "mock"
SURVEY_OPTIONS = ("rare_fraction_scale", "satellite_trail_fraction", "unflagged_star_fraction")
IFUS_PER_PLATE = 17  # MaNGA plates carry 17 science bundles
H = 0.6766  # Planck 2018 h, for the NSA's h = 1 conventions in the drpall-like catalogue


@dataclass
class MockGalaxy:
    """One streamed mock galaxy: what a reader would return for its file, and the truth behind it."""

    galaxy_id: str
    index: int
    seed: int
    observation: Observation
    truth: dict
    truth_maps: dict
    image: np.ndarray  # float32 [3, 128, 128]
    header: dict  # PRIMARY keywords of the survey file
    catalogue_row: dict  # the galaxy's row in the drpall-like catalogue
    observed: ObservedGalaxy = field(repr=False, default=None)  # the raw arrays, for writing the file

    @property
    def source(self) -> str:
        return f"mock:{self.seed}:{self.index}"


def galaxy_id(index: int, fmt: str, footprint: str) -> str:
    """MaNGA-style plate-IFU (mock plates 90000+, IFU design = bundle size and slot) or a CALIFA-like name."""
    if fmt == "califa":
        return f"MOCK{index:05d}"
    return f"{90000 + index // IFUS_PER_PLATE}-{footprint}{index % IFUS_PER_PLATE + 1:02d}"


def _draw(seed: int, index: int, fmt: str, rare_fraction_scale: float):
    """The population draws of galaxy ``index``: (footprint, radius, params, synthesis rng, observation rng,
    satellite-trail rng, unflagged-star rng)."""
    if fmt not in FORMATS:
        raise ValueError(f"mock survey format must be one of {FORMATS}, got {fmt!r}")
    # spawn(n)'s first children are spawn(n - 1)'s: each artefact's stream left every earlier galaxy as it was
    rng_population, rng_synthesis, rng_observation, rng_trail, rng_star = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(5))
    footprint, radius, re_target = INSTRUMENTS[fmt].draw_footprint(rng_population)
    params = draw_galaxy(rng_population, re_target, rare_fraction_scale)
    return footprint, radius, params, rng_synthesis, rng_observation, rng_trail, rng_star


def galaxy_params(seed: int, index: int, fmt: str = "manga",
                  rare_fraction_scale: float = 1.0) -> tuple[str, GalaxyParams]:
    """(galaxy_id, physical parameters) of galaxy ``index`` without synthesising it (milliseconds, not a second):
    the truth flags ``agn``, ``disturbed`` and ``extreme_emission`` of its `make_galaxy` are these parameters'."""
    footprint, _, params, *_ = _draw(seed, index, fmt, rare_fraction_scale)
    return galaxy_id(index, fmt, footprint), params


def make_galaxy(seed: int, index: int, fmt: str = "manga", rare_fraction_scale: float = 1.0,
                satellite_trail_fraction: float = 0.0, unflagged_star_fraction: float = 0.0) -> MockGalaxy:
    """Generate galaxy ``index`` of the survey with ``seed`` (``rare_fraction_scale``: config
    ``mock.rare_fraction_scale``, see precompute.mock.population; 1 = the default survey). A share
    ``satellite_trail_fraction`` of the galaxies (config ``mock.satellite_trail_fraction``; 0 = the default survey)
    has a satellite trail across its image (`precompute.mock.observe.add_satellite_trail`), truth
    ``satellite_trail``. A share ``unflagged_star_fraction`` (config ``mock.unflagged_star_fraction``; 0 = the
    default survey; MaNGA format only) has a foreground star in its cube and image that no FORESTAR bit flags
    (`precompute.mock.observe.add_unflagged_star`), truth ``unflagged_star``."""
    for name, fraction in (("satellite_trail_fraction", satellite_trail_fraction),
                           ("unflagged_star_fraction", unflagged_star_fraction)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {fraction!r}")
    if unflagged_star_fraction and fmt != "manga":
        raise ValueError(f"unflagged_star_fraction needs the manga format, got {fmt!r}")
    footprint, radius, params, rng_synthesis, rng_observation, rng_trail, rng_star = _draw(seed, index, fmt,
                                                                                           rare_fraction_scale)
    instrument = INSTRUMENTS[fmt]
    model = synthesize(params, rng_synthesis, load_templates())
    observed = observe(model, instrument, radius, rng_observation)
    gid = galaxy_id(index, fmt, footprint)
    trail = bool(rng_trail.uniform() < satellite_trail_fraction)
    if trail:
        observed.info["satellite_trail"] = add_satellite_trail(observed.cutout, rng_trail)
    unflagged_star = bool(rng_star.uniform() < unflagged_star_fraction)
    if unflagged_star:
        observed.info["unflagged_star"] = add_unflagged_star(observed, instrument.pixel_scale, rng_star)

    truth = {"galaxy_id": gid, **model.truth, **observed.truth, "satellite_trail": trail,
             "unflagged_star": unflagged_star}
    truth = {"galaxy_id": gid, **{k: _plain(truth[k]) for k in TRUTH_COLUMNS}}
    source = f"mock:{seed}:{index}"
    if fmt == "manga":
        header = {"PLATEIFU": gid, "MANGAID": f"90-{index + 1:06d}", "OBJRA": params.ra, "OBJDEC": params.dec,
                  "IFURA": params.ra, "IFUDEC": params.dec, "DRP3QUAL": 0, "EBVGAL": 0.0}
        meta = {"ra": params.ra, "dec": params.dec, **{k.lower(): v for k, v in header.items()},
                "specres": observed.specres, "redcorr": np.ones(observed.wave.size), "source": source}
        # Bad exactly where manga_bad(mask) is: no coverage, low coverage or no template coverage.
        bad = (observed.mask & (manga_format.NOCOV | manga_format.DONOTUSE)) != 0
        observation = Observation(gid, "manga", observed.wave, observed.flux, observed.ivar, bad,
                                  redshift=params.redshift, pixel_scale=instrument.pixel_scale,
                                  images=observed.images, foreground_star=observed.foreground_star, meta=meta)
    else:
        med_vel = params.redshift * C_KMS
        header = {"OBJECT": gid, "MED_VEL": med_vel, "RA": params.ra, "DEC": params.dec}
        meta = {"ra": params.ra, "dec": params.dec, "object": gid, "med_vel": med_vel, "source": source}
        observation = Observation(gid, "califa", observed.wave, observed.flux, observed.ivar, observed.mask != 0,
                                  redshift=med_vel / C_KMS, pixel_scale=instrument.pixel_scale,
                                  foreground_star=observed.foreground_star, meta=meta)
    return MockGalaxy(gid, index, seed, observation, truth, observed.truth_maps, observed.cutout, header,
                      catalogue_row(gid, header, params, model, truth, fmt), observed)


def _plain(value):
    """numpy scalars to Python ones, so truth rows serialise everywhere."""
    return value.item() if isinstance(value, np.generic) else value


def catalogue_row(gid: str, header: dict, params, model, truth: dict, fmt: str) -> dict:
    """A drpall-like row (NSA conventions: masses in M☉ h⁻², absolute magnitudes for h = 1, bands F N u g r i z)."""
    absmag = np.full(7, np.nan)
    absmag[3:6] = model.absolute_magnitudes() - 5 * np.log10(H)
    n_eff = truth["bt"] * params.bulge_sersic + (1 - truth["bt"]) * 1.0
    row = {
        "nsa_z": params.redshift, "nsa_zdist": params.redshift,
        "nsa_elpetro_mass": 10**params.log_mstar * H**2, "nsa_sersic_n": n_eff,
        "nsa_elpetro_ba": 1 - truth["ellipticity"], "nsa_elpetro_phi": truth["pa_deg"],
        "nsa_elpetro_th50_r": truth["re_arcsec"], "nsa_elpetro_absmag": absmag,
    }
    if fmt == "manga":
        return {"plateifu": gid, "mangaid": header["MANGAID"], "objra": params.ra, "objdec": params.dec,
                "ifura": params.ra, "ifudec": params.dec, "ifudsgn": gid.split("-")[1], **row}
    return {"name": gid, "ra": params.ra, "dec": params.dec, "med_vel": header["MED_VEL"], **row}


def iter_mock_survey(n_galaxies: int, seed: int, fmt: str = "manga", **options) -> Iterator[MockGalaxy]:
    """Stream ``n_galaxies`` mock galaxies (indices 0..n−1) of survey ``seed``; ``options``: `make_galaxy`'s
    SURVEY_OPTIONS."""
    for index in range(n_galaxies):
        yield make_galaxy(seed, index, fmt, **options)


def cube_filename(galaxy: MockGalaxy, fmt: str) -> str:
    """Survey file names, uncompressed: noisy float data gzips by only ~7% at ~3 s per cube."""
    return f"manga-{galaxy.galaxy_id}-LOGCUBE.fits" if fmt == "manga" else f"{galaxy.galaxy_id}.V500.rscube.fits"


def write_galaxy(galaxy: MockGalaxy, out_dir: Path, fmt: str) -> Path:
    """Write one galaxy's cube, truth maps and gri cutout under ``out_dir``; returns the cube path."""
    out_dir = Path(out_dir)
    (out_dir / "truth").mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    obs, raw = galaxy.observation, galaxy.observed
    path = out_dir / cube_filename(galaxy, fmt)
    if fmt == "manga":
        manga_format.write_manga_cube(path, wave=obs.wave, flux=obs.flux, ivar=obs.ivar, mask=raw.mask,
                                      header=galaxy.header, images=obs.images, specres=obs.meta["specres"],
                                      redcorr=obs.meta["redcorr"], pixel_scale=obs.pixel_scale)
    else:
        califa = raw.info["califa"]
        write_califa_cube(path, wave_air=califa_wave_air(), flux=califa["flux_1e16"], error=califa["error_1e16"],
                          badpix=califa["badpix"], header=galaxy.header, pixel_scale=obs.pixel_scale)
    truth_hdus = [fits.PrimaryHDU()]
    truth_hdus[0].header["GALAXY"] = galaxy.galaxy_id
    truth_hdus[0].header["COMMENT"] = "Per-spaxel truth as seen through the PSF, light-weighted at 5500 A; NaN = no coverage."
    for name in TRUTH_MAPS:
        truth_hdus.append(fits.ImageHDU(galaxy.truth_maps[name], name=name.upper()))
    fits.HDUList(truth_hdus).writeto(out_dir / "truth" / f"{galaxy.galaxy_id}-TRUTH.fits", overwrite=True)
    image = fits.PrimaryHDU(galaxy.image)
    image.header.update({"GALAXY": galaxy.galaxy_id, "BANDS": "g,r,i", "BUNIT": "nanomaggies/pixel",
                         "PIXSCALE": (CUTOUT_SCALE, "arcsec per pixel")})
    image.writeto(out_dir / "images" / f"{galaxy.galaxy_id}-gri.fits", overwrite=True)
    return path


def write_mock_survey(out_dir, n_galaxies: int, seed: int, fmt: str = "manga", progress: bool = True,
                      **options) -> dict:
    """Write ``n_galaxies`` survey files, the catalogue and truth.parquet by streaming; returns the paths.
    ``options``: `make_galaxy`'s SURVEY_OPTIONS."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cubes, truth, rows = [], [], []
    for galaxy in tqdm(iter_mock_survey(n_galaxies, seed, fmt, **options), total=n_galaxies, desc=f"mock {fmt} survey",
                       unit="galaxy", disable=not progress):
        cubes.append(write_galaxy(galaxy, out_dir, fmt))
        truth.append(galaxy.truth)
        rows.append(galaxy.catalogue_row)
    truth_path = out_dir / "truth.parquet"
    pd.DataFrame(truth, columns=("galaxy_id",) + TRUTH_COLUMNS).to_parquet(truth_path, index=False)
    catalogue = pd.DataFrame(rows)
    if fmt == "manga":
        catalogue_path = out_dir / "drpall-mock.fits"
        manga_format.write_drpall(catalogue_path, catalogue)
    else:
        catalogue_path = out_dir / "califa-mock-catalogue.fits"
        columns = {name: (np.stack(values) if name == "nsa_elpetro_absmag" else
                          values.to_numpy() if pd.api.types.is_numeric_dtype(values) else values.to_numpy().astype("U"))
                   for name, values in catalogue.items()}
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table(columns), name="CALIFA")]).writeto(catalogue_path, overwrite=True)
    return {"cubes": cubes, "truth": truth_path, "catalogue": catalogue_path}
