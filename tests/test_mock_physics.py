"""Physics of the embedded mock survey: each test fails if the named piece of physics broke.

Galaxies are built from drawn parameters with the property under test forced (dataclasses.replace), then
synthesised and observed exactly as the survey does; measurements are made on the cubes themselves.
"""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from precompute.formats import read_catalogue, read_observation
from precompute.mock import lines
from precompute.mock.cli import main as mock_main
from precompute.mock.observe import (CUTOUT_SCALE, MANGA, SIGMA_FWHM, add_satellite_trail, add_shifted, observe,
                                     shift_to_observed, sky_noise_shape)
from precompute.mock.photometry import band_weights
from precompute.mock.population import SFH, draw_galaxy
from precompute.mock.sed_library import make_sed_library
from precompute.mock.survey import TRUTH_COLUMNS, TRUTH_MAPS, iter_mock_survey, make_galaxy
from precompute.mock.synthesis import synthesize
from precompute.ssp import C_KMS, attenuation, broaden, calzetti_k, d4000_narrow, load_templates

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "bundle-schema.md"


def build(seed, footprint=8.75, star_probability=0.0, **forced):
    """Draw a galaxy, force some parameters, synthesise and observe it with MaNGA (37-fibre bundle)."""
    rng = np.random.default_rng(seed)
    params = dataclasses.replace(draw_galaxy(rng, re_target_arcsec=5.0), disturbed=False, companion_fraction=0.0,
                                 tidal_fraction=0.0, **forced)
    model = synthesize(params, np.random.default_rng(seed + 1))
    return model, observe(model, MANGA, footprint, np.random.default_rng(seed + 2), star_probability)


def rest_frame_sum(model, obs, radius_arcsec=None):
    """Sum of the good spaxels (within a radius of the centre), de-redshifted: (wave, flux)."""
    ny, nx = obs.flux.shape[:2]
    y, x = np.mgrid[:ny, :nx]
    r = np.hypot(x - (nx - 1) / 2, y - (ny - 1) / 2) * MANGA.pixel_scale
    use = np.isfinite(obs.truth_maps["av"]) & (r < (radius_arcsec or np.inf))
    return obs.wave / (1 + model.params.redshift), obs.flux[use].sum(axis=0)


def ew_halpha(wave, flux):
    """Hα equivalent width (Å, emission positive) against the mean continuum of two side bands."""
    cont = flux[((wave > 6483) & (wave < 6513)) | ((wave > 6623) & (wave < 6653))].mean()
    line = (wave > 6554) & (wave < 6575)
    return float(((flux[line] - cont) * np.gradient(wave)[line]).sum() / cont)


@pytest.fixture(scope="module")
def passive():
    t = 12.0
    return build(11, morphology="E", log_mstar=11.2, bulge_fraction=1.0, bulge_sersic=4.0, logz_centre=0.1,
                 bulge_sfh=SFH("old", t, tau=0.5), quenched_by_design=True, diffuse_gas_ew=1.0, agn=False)


@pytest.fixture(scope="module")
def star_forming():
    return build(21, morphology="Sc", log_mstar=10.0, bulge_fraction=0.05, quenched_by_design=False,
                 disk_sfh=SFH("constant", 10.0), agn=False, inclination_deg=70.0, vmax_kms=200.0,
                 r_turn_re=0.2, asymmetry=0.0)


@pytest.fixture(scope="module")
def seyfert():
    return build(31, morphology="Sa", log_mstar=10.8, bulge_fraction=0.4, agn=True,
                 disk_sfh=SFH("declining", 11.0, tau=6.0), quenched_by_design=False)


# --- stellar populations ---------------------------------------------------------------------------------

def test_ssp_grid_points_and_weighted_means():
    ssp = load_templates()
    assert np.allclose(ssp.spectrum(9.0, 0.0), ssp.flux[list(ssp.age_gyr).index(9.0), list(ssp.logz).index(0.0)])
    pop = ssp.composite([1.0, 9.0], [1.0, 3.0], [0.0, 0.0])
    assert pop.log_age_mw == pytest.approx((np.log10(1e9) + 3 * np.log10(9e9)) / 4)
    # The young population outshines the old at 5500 Å, so light-weighted ages are younger.
    assert pop.log_age_lw < pop.log_age_mw
    assert np.allclose(pop.flux, ssp.spectrum(1.0, 0.0) + 3 * ssp.spectrum(9.0, 0.0))


def test_older_mixtures_are_redder_and_have_stronger_breaks():
    ssp = load_templates()
    weights = band_weights(ssp.wave)
    colours, breaks = [], []
    for old_fraction in (0.0, 0.5, 0.9, 1.0):
        pop = ssp.composite([0.1, 9.0], [1 - old_fraction, old_fraction], 0.0)
        g, r, _ = pop.flux @ weights
        colours.append(-2.5 * np.log10(g / r))
        breaks.append(d4000_narrow(ssp.wave, pop.flux))
    assert np.all(np.diff(colours) > 0.01), colours
    assert np.all(np.diff(breaks) > 0), breaks


def test_calzetti_dust_and_dispersion_broadening():
    assert calzetti_k(5500.0) == pytest.approx(4.05, abs=0.01)  # k(V) = R_V
    assert attenuation(np.array([5500.0]), 1.0)[0] == pytest.approx(10**-0.4, rel=0.01)
    ssp = load_templates()
    weights = band_weights(ssp.wave)
    spectrum = ssp.spectrum(1.0, 0.0)
    g, r, _ = (spectrum * attenuation(ssp.wave, 1.0)) @ weights
    g0, r0, _ = spectrum @ weights
    assert -2.5 * np.log10(g / r) > -2.5 * np.log10(g0 / r0) + 0.2  # dust reddens
    line = np.zeros(400)
    line[200] = 1.0
    wide = broaden(line, 300.0, ssp.velocity_scale)
    pix = np.arange(400)
    assert wide.sum() == pytest.approx(1.0, rel=1e-6)
    assert np.sqrt((wide * (pix - 200) ** 2).sum()) == pytest.approx(300.0 / ssp.velocity_scale, rel=0.02)


# --- galaxies --------------------------------------------------------------------------------------------

def test_passive_galaxies_have_strong_breaks_and_no_halpha(passive):
    model, obs = passive
    wave, flux = rest_frame_sum(model, obs)
    assert model.truth["quenched"]
    assert d4000_narrow(wave, flux) > 1.5
    assert ew_halpha(wave, flux) < 3.0
    assert model.truth["d4000"] > 1.5 and model.truth["ew_halpha"] < 3.0


def test_star_forming_galaxies_have_halpha_and_sit_below_kauffmann(star_forming):
    model, obs = star_forming
    wave, flux = rest_frame_sum(model, obs)
    assert ew_halpha(wave, flux) > 6.0
    assert d4000_narrow(wave, flux) < 1.4
    truth = {**model.truth, **obs.truth}
    assert truth["bpt_class"] == "star-forming" and truth["whan_class"] == "SF"
    assert truth["log_oiii_hb"] < lines.kauffmann03(truth["log_nii_ha"])


def test_agn_nuclei_lie_above_the_kewley_line(seyfert):
    model, obs = seyfert
    n2, o3 = obs.truth["log_nii_ha"], obs.truth["log_oiii_hb"]
    assert o3 > 0.61 / (n2 - 0.47) + 1.19  # Kewley et al. (2001), written out independently
    assert obs.truth["bpt_class"] == "seyfert"
    # The nucleus shows [OIII] 5007 far above its continuum in the cube itself.
    wave, flux = rest_frame_sum(model, obs, radius_arcsec=1.5)
    peak = flux[(wave > 5003) & (wave < 5013)].max()
    cont = np.median(flux[(wave > 5030) & (wave < 5060)])
    assert peak > 1.5 * cont


def test_velocity_shifts_move_lines_by_v_over_c():
    wave = load_templates().wave
    spectra = np.zeros((2, wave.size))
    flux = np.zeros((2, len(lines.LINES)))
    flux[:, lines.HA] = 100.0
    lines.add_lines(spectra, wave, flux, np.array([0.0, 250.0]), 70.0, 0.05)
    window = (wave > 6800) & (wave < 6960)
    centroid = (spectra[:, window] * wave[window]).sum(axis=1) / spectra[:, window].sum(axis=1)
    expected = lines.LINES["Ha_6564"] * 1.05 * (1 + np.array([0.0, 250.0]) / C_KMS)
    assert np.allclose(centroid, expected, atol=0.05)
    assert (spectra[:, window] * np.gradient(wave)[window]).sum(axis=1) == pytest.approx([100.0, 100.0], rel=1e-3)
    # A stellar spectrum shifted by a fractional number of pixels keeps its shape at the new place.
    rest = np.exp(-0.5 * ((np.arange(300) - 100.0) / 3.0) ** 2)[None, :]
    shifted = shift_to_observed(rest, np.array([10.3]), 320)[0]
    assert (shifted * np.arange(320)).sum() / shifted.sum() == pytest.approx(110.3, abs=0.01)
    # The cube builder mixes node spectra and shifts per spaxel in one step: same result.
    rng = np.random.default_rng(0)
    nodes, amount, shift = rng.random((7, 300)), rng.random((40, 7)), rng.uniform(20.0, 26.0, 40)
    mixed = np.zeros((40, 330))
    add_shifted(mixed, amount, nodes, shift)
    assert np.allclose(mixed, shift_to_observed(amount @ nodes, shift, 330))


def test_rotation_field_shifts_halpha_in_the_cube(star_forming):
    model, obs = star_forming
    velocity, wave = obs.truth_maps["velocity_kms"], obs.wave
    centre = lines.LINES["Ha_6564"] * (1 + model.params.redshift)
    # Usable spaxels of bright Hα that move faster than 100 km/s, on both sides of the disk.
    usable = (obs.ivar[..., np.argmin(np.abs(wave - centre))] > 0) & (np.abs(np.nan_to_num(velocity)) > 100) \
        & (np.nan_to_num(obs.truth_maps["ew_halpha"]) > 20)
    assert (velocity[usable] > 0).sum() > 10 and (velocity[usable] < 0).sum() > 10  # an inclined 200 km/s disk
    near = np.abs(wave - centre) < 8  # clear of [NII] 6550 and 6585 at these velocities
    side = (np.abs(wave - centre) > 40) & (np.abs(wave - centre) < 70)
    spectra = obs.flux[usable]
    spectra = spectra - np.median(spectra[:, side], axis=1, keepdims=True)
    measured = ((spectra[:, near] * wave[near]).sum(axis=1) / spectra[:, near].sum(axis=1) / centre - 1) * C_KMS
    assert np.median(measured - velocity[usable]) == pytest.approx(0.0, abs=15)
    assert np.corrcoef(measured, velocity[usable])[0, 1] > 0.9


def test_noise_levels_and_flags(star_forming):
    model, obs = star_forming
    window = (obs.wave > 4500) & (obs.wave < 5500)
    snr = np.median(obs.flux[..., window] * np.sqrt(obs.ivar[..., window]), axis=-1)
    covered = np.isfinite(obs.truth_maps["av"])
    assert 15 < snr.max() < 80
    assert snr[covered & (snr > 0)].min() < 6  # the outskirts are faint
    ny, nx = obs.flux.shape[:2]
    assert (obs.mask[0, 0] & 1).all() and not obs.ivar[0, 0].any()  # NOCOV corner
    blue = obs.wave < load_templates().wave[0] * (1 + model.params.redshift)
    assert ((obs.mask[ny // 2, nx // 2, blue] & (1 << 10)) != 0).all()  # DONOTUSE: no template coverage
    # Sky lines are left in, with much higher noise (preparation masks them).
    sky = np.argmin(np.abs(obs.wave - 5578.9))
    assert obs.ivar[ny // 2, nx // 2, sky] < obs.ivar[ny // 2, nx // 2, sky + 30] / 100
    assert sky_noise_shape(np.array([5578.9]))[0] > 20


def test_foreground_stars_are_flagged_and_add_light():
    forced = dict(morphology="Sb", log_mstar=10.3, agn=False)
    model, with_star = build(41, star_probability=1.0, **forced)
    _, without = build(41, star_probability=0.0, **forced)
    flagged = (with_star.mask & (1 << 3)).any(axis=-1)
    assert flagged.any() and np.array_equal(flagged, with_star.foreground_star)
    assert not (without.mask & (1 << 3)).any()
    assert with_star.images["r"][flagged].sum() > 1.2 * without.images["r"][flagged].sum()
    assert with_star.cutout[1].sum() > without.cutout[1].sum()


def test_disturbed_systems_have_a_second_nucleus_and_tidal_light():
    rng = np.random.default_rng(51)
    params = dataclasses.replace(draw_galaxy(rng, re_target_arcsec=5.0), disturbed=True, companion_fraction=0.2,
                                 companion_offset_arcsec=(4.0, 0.0), companion_dv_kms=250.0, tidal_fraction=0.05)
    model = synthesize(params, np.random.default_rng(52))
    names = [c.name for c in model.components]
    assert "companion" in names and "tidal" in names
    obs = observe(model, MANGA, 8.75, np.random.default_rng(53))
    ny, nx = obs.flux.shape[:2]
    # The companion (4″ to the west = +x) makes the light lopsided and moves at its own velocity.
    profile = obs.images["r"][ny // 2]
    companion_x = nx // 2 + 8
    assert profile[companion_x] > 1.5 * profile[nx - 1 - companion_x]
    v = obs.truth_maps["velocity_kms"]
    assert v[ny // 2, companion_x] + v[ny // 2, nx - 1 - companion_x] > 50  # rotation cancels, +250 km/s does not


# --- the survey ------------------------------------------------------------------------------------------

def documented_truth_columns():
    text = SCHEMA.read_text().split("## Mock survey truth")[1].split("\n## ")[0]
    return re.findall(r"^\| `(\w+)`", text, flags=re.M) + [
        n for row in re.findall(r"^\| (`\w+`, `\w+`) \|", text, flags=re.M) for n in re.findall(r"`(\w+)`", row)]


def test_streamed_galaxies_carry_documented_truth_and_are_deterministic():
    galaxies = list(iter_mock_survey(2, seed=5))
    documented = set(documented_truth_columns())
    assert len(documented) == len(TRUTH_COLUMNS) and documented == set(TRUTH_COLUMNS)
    for galaxy in galaxies:
        assert list(galaxy.truth) == ["galaxy_id", *TRUTH_COLUMNS]
        assert galaxy.truth["morphology"] in ("E", "S0", "Sa", "Sb", "Sc", "Sd", "Irr", "BCD")
        assert galaxy.truth["satellite_trail"] is False  # the default survey has no imaging artefact
        obs = galaxy.observation.validate()
        assert obs.flux.dtype == np.float32 and obs.flux.shape[-1] == 4563 and obs.pixel_scale == 0.5
        assert set(galaxy.truth_maps) == set(TRUTH_MAPS)
        assert all(m.shape == obs.flux.shape[:2] for m in galaxy.truth_maps.values())
        assert galaxy.image.shape == (3, 128, 128) and galaxy.image.dtype == np.float32
        assert set(obs.images) == {"g", "r", "i"}
    # Galaxy 1 is the same whatever the survey size, and the same seed gives the same cube.
    again = make_galaxy(5, 1)
    assert np.array_equal(again.observation.flux, galaxies[1].observation.flux)
    assert again.truth == galaxies[1].truth
    assert make_galaxy(6, 1).truth["log_mstar"] != again.truth["log_mstar"]


def test_a_satellite_trail_changes_one_band_of_the_image_only_and_is_in_the_truth():
    plain, trailed = make_galaxy(5, 1), make_galaxy(5, 1, satellite_trail_fraction=1.0)
    assert not plain.truth["satellite_trail"] and trailed.truth["satellite_trail"]
    assert {**trailed.truth, "satellite_trail": False} == plain.truth
    assert np.array_equal(plain.observation.flux, trailed.observation.flux)  # an imaging artefact: not in the cube
    changed = np.flatnonzero((trailed.image != plain.image).any(axis=(1, 2)))
    assert changed.tolist() == ["gri".index(trailed.observed.info["satellite_trail"]["band"])]


def test_an_unflagged_star_adds_its_light_and_noise_to_the_cube_and_image_without_a_flag():
    plain, starred = make_galaxy(5, 1), make_galaxy(5, 1, unflagged_star_fraction=1.0)
    assert not plain.truth["unflagged_star"] and starred.truth["unflagged_star"]
    assert {**starred.truth, "unflagged_star": False} == plain.truth
    assert np.array_equal(plain.observed.mask, starred.observed.mask)  # no FORESTAR bit: the reduction missed it
    assert not starred.observation.foreground_star.any()
    star = starred.observed.info["unflagged_star"]
    # the star's r flux (nanomaggies from its magnitude) in the cube's r image and in the cutout; the galaxy's
    # footprint holds all of it for a star at 0.35–0.85 of its radius up to the PSF wings
    r_nmgy = 10 ** ((22.5 - star["r_mag"]) / 2.5)
    for added in (starred.observation.images["r"] - plain.observation.images["r"], starred.image[1] - plain.image[1]):
        assert added.sum() == pytest.approx(r_nmgy, rel=0.08)
    # its photons add noise: the inverse variance drops where the star is bright, nowhere rises
    has_data = plain.observation.ivar > 0
    assert np.array_equal(has_data, starred.observation.ivar > 0)
    assert (starred.observation.ivar[has_data] <= plain.observation.ivar[has_data] * (1 + 1e-6)).all()  # float32 ulps
    peak = np.unravel_index(np.argmax(starred.observation.images["r"] - plain.observation.images["r"]),
                            plain.observation.ivar.shape[:2])
    assert np.median(starred.observation.ivar[peak] / np.where(has_data[peak], plain.observation.ivar[peak], 1)) < 0.9
    with pytest.raises(ValueError, match="needs the manga format"):
        make_galaxy(5, 1, "califa", unflagged_star_fraction=0.5)


def test_a_satellite_trail_carries_its_flux_per_pixel_of_length_as_wide_as_the_seeing():
    measured = 0
    for seed in range(20):
        cutout = np.zeros((3, 128, 128), np.float32)
        trail = add_satellite_trail(cutout, np.random.default_rng(seed))
        assert 0.5 <= trail["nmgy_per_pixel"] <= 20 and abs(trail["offset_pixels"]) <= 64
        if abs(trail["offset_pixels"]) > 48:
            continue  # the streak may run along an edge of the cutout, its wing cut off
        measured += 1
        angle = np.radians(trail["angle_deg"])
        # the length of the trail's centre line inside the cutout, from dense samples along it
        t = np.linspace(-200, 200, 400_001)
        normal = trail["offset_pixels"] * np.array([np.sin(angle), -np.cos(angle)])
        x, y = normal[0] + t * np.cos(angle), normal[1] + t * np.sin(angle)
        length = (t[1] - t[0]) * np.count_nonzero((np.abs(x) <= 64) & (np.abs(y) <= 64))
        band = cutout["gri".index(trail["band"])]
        assert band.sum() == pytest.approx(trail["nmgy_per_pixel"] * length, rel=0.03)
        # across the trail, a Gaussian of the seeing's width (1.2–1.6″ FWHM)
        weights = band / band.sum()
        yy, xx = np.indices(band.shape) - 63.5
        distance = xx * np.sin(angle) - yy * np.cos(angle) - trail["offset_pixels"]
        fwhm = SIGMA_FWHM * np.sqrt((weights * distance**2).sum()) * CUTOUT_SCALE
        assert 1.2 <= fwhm <= 1.6 and np.count_nonzero(cutout.any(axis=(1, 2))) == 1
    assert measured >= 10


# The files carry the survey options too: rare kinds 3× as likely, and the artefacts (stars: MaNGA only)
WRITTEN = {"manga": dict(rare_fraction_scale=3.0, satellite_trail_fraction=1.0, unflagged_star_fraction=1.0),
           "califa": dict(satellite_trail_fraction=1.0)}


@pytest.mark.parametrize("fmt", ["manga", "califa"])
def test_written_files_read_back_as_the_streamed_observation(tmp_path, fmt):
    options = {"rare_fraction_scale": "--rare-scale", "satellite_trail_fraction": "--satellite-trails",
               "unflagged_star_fraction": "--unflagged-stars"}
    assert mock_main(["--galaxies", "1", "--seed", "3", "--out", str(tmp_path), "--format", fmt,
                      "--sed-library", "4", *(f"{options[k]}={v}" for k, v in WRITTEN[fmt].items())]) == 0
    streamed = make_galaxy(3, 0, fmt, **WRITTEN[fmt])
    assert streamed.truth["satellite_trail"] and streamed.truth["unflagged_star"] == (fmt == "manga")
    cube = next(tmp_path.glob("*LOGCUBE.fits" if fmt == "manga" else "*.V500.rscube.fits"))
    catalogue_file = tmp_path / ("drpall-mock.fits" if fmt == "manga" else "califa-mock-catalogue.fits")
    catalogue = read_catalogue(catalogue_file, key="plateifu" if fmt == "manga" else "name")
    read = read_observation(cube, catalogue=catalogue)
    mine = streamed.observation
    assert read.id == mine.id and read.format == fmt
    for name in ("wave", "flux", "ivar", "bad"):
        assert np.array_equal(getattr(read, name), getattr(mine, name)), name
    assert read.redshift == mine.redshift and read.pixel_scale == mine.pixel_scale
    assert np.array_equal(read.foreground_star, mine.foreground_star) or fmt == "califa"
    assert read.images.keys() == mine.images.keys()
    assert all(np.array_equal(read.images[b], mine.images[b]) for b in read.images)

    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert list(truth.columns) == ["galaxy_id", *TRUTH_COLUMNS]
    row = truth.iloc[0]
    for name, value in streamed.truth.items():
        assert row[name] == value or (isinstance(value, float) and np.isnan(value) and np.isnan(row[name])), name
    with fits.open(tmp_path / "truth" / f"{mine.id}-TRUTH.fits") as hdus:
        assert [h.name.lower() for h in hdus[1:]] == list(TRUTH_MAPS)
        assert np.array_equal(hdus["LOG_AGE_LW"].data, streamed.truth_maps["log_age_lw"], equal_nan=True)
    assert np.array_equal(fits.getdata(tmp_path / "images" / f"{mine.id}-gri.fits"), streamed.image)
    sed = read_observation(tmp_path / "sed_library.fits")
    assert sed.flux.shape == (4, load_templates().wave.size)
    assert len(pd.read_parquet(tmp_path / "sed_truth.parquet")) == 4


def test_sed_library_spectra_follow_their_truth():
    wave, flux, truth = make_sed_library(12, seed=2)
    assert flux.shape == (12, wave.size) and len(truth) == 12
    for spectrum, row in zip(flux, truth.itertuples()):
        assert d4000_narrow(wave, spectrum) == pytest.approx(row.d4000, rel=0.05)  # lines do not touch D4000
        if row.log_ssfr > -10.3:
            assert ew_halpha(wave, spectrum) > 6.0
        if row.log_ssfr < -12:
            assert ew_halpha(wave, spectrum) < 1.0
    assert np.corrcoef(truth["log_age_lw"], truth["d4000"])[0, 1] > 0.5
