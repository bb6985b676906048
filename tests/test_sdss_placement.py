"""SDSS spec files placed on the frozen DESOM-1 map (issue 12): a star-forming and a passive integrated spectrum of
the mock SED library, observed at z = 0.004 through the SDSS spectrograph's 3800–9200 Å and written by the
project's own writer in the DR8+ layout (COADD: loglam, flux, ivar, and_mask, ...; SPECOBJ: Z, ...).

At z = 0.004 the spectrum starts at ~3785 Å rest-frame, redder than the bundle's 3650 Å grid, so `assign` places it
through the gappy path (precompute.placement); the nodes it lands on must order the two by their members' median
EW(Hα) and sSFR. Runs on the spectral-map test bundle (`survey_bundle`: slow)."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from precompute import assign, formats, prepare
from precompute.formats import write_sdss_spec
from precompute.mock.sed_library import make_sed_library
from precompute.placement import has_wide_gap, place_spectra

Z = 0.004
LOGLAM = 3.5794 + 1e-4 * np.arange(3847)  # the SDSS spectrograph's observed range: 3800–9200 Å, Δlog10 λ = 1e-4
SNR = 15.0  # per pixel at 5400–5600 Å observed: a typical main-sample galaxy
LEVEL = 20.0  # mean flux there, 1e-17 erg s⁻¹ cm⁻² Å⁻¹ (r ≈ 17)
BRIGHTSKY = 1 << 23  # SPPIXMASK bit, set around the [OI] 5577 Å sky line
LIBRARY_SIZE, LIBRARY_SEED = 200, 0


def _pick(truth):
    """Rows of the library by truth alone: the continuously star-forming spectrum with the strongest Hα, and the
    old (early, short star formation) one with the lowest sSFR (then the weakest Hα)."""
    star_forming = truth[truth["sfh"] == "constant"].sort_values("ew_halpha", ascending=False).index[0]
    passive = truth[truth["sfh"] == "old"].sort_values(["log_ssfr", "ew_halpha"]).index[0]
    return {"star_forming": star_forming, "passive": passive}


@pytest.fixture(scope="module")
def sdss_files(tmp_path_factory):
    """{kind: (path, truth row)} of two spec-*.fits files written from the library's rest-frame spectra."""
    wave, flux, truth = make_sed_library(LIBRARY_SIZE, LIBRARY_SEED)
    observed = 10.0 ** LOGLAM
    # Redshifted (f_λ per observed Å is the rest-frame one / (1 + z)), resampled flux-conserving onto SDSS pixels.
    matrix = prepare.resampling_matrix(prepare.pixel_edges(wave * (1 + Z)), prepare.pixel_edges(observed))
    window = (observed > 5400.0) & (observed < 5600.0)
    rng = np.random.default_rng(12)
    out = tmp_path_factory.mktemp("sdss")
    files = {}
    for fiber, (kind, row) in enumerate(_pick(truth).items(), start=1):
        model = matrix @ (flux[row] / (1 + Z))
        model *= LEVEL / model[window].mean()
        sigma = LEVEL / SNR
        and_mask = np.where(np.abs(observed - 5578.9) < 4.0, BRIGHTSKY, 0).astype(np.int32)
        path = out / f"spec-0500-51994-{fiber:04d}.fits"
        write_sdss_spec(path, loglam=LOGLAM, flux=(model + sigma * rng.standard_normal(model.size)).astype(np.float32),
                        ivar=np.full(model.size, sigma**-2, np.float32), and_mask=and_mask,
                        wdisp=np.full(model.size, 1.05, np.float32), model=model.astype(np.float32), z=Z,
                        z_err=1e-5, plate=500, mjd=51994, fiber=fiber, ra=150.0, dec=2.0)
        files[kind] = (path, truth.loc[row])
    return files


def test_the_files_are_in_the_dr8_layout_and_read_as_sdss_spectra(sdss_files):
    for path, _ in sdss_files.values():
        with fits.open(path) as hdul:
            assert [h.name for h in hdul[1:3]] == ["COADD", "SPECOBJ"]
            coadd = {"flux", "loglam", "ivar", "and_mask", "or_mask", "wdisp", "sky", "model"}
            assert coadd <= set(hdul["COADD"].columns.names)
            assert {"Z", "Z_ERR", "CLASS", "PLUG_RA", "PLUG_DEC", "VDISP"} <= set(hdul["SPECOBJ"].columns.names)
            assert hdul["SPECOBJ"].data["Z"][0] == pytest.approx(Z)
        obs = formats.read_observation(path)
        assert obs.format == "sdss" and obs.n_spectra == 1 and obs.redshift == pytest.approx(Z)
        np.testing.assert_allclose(obs.wave, 10.0**LOGLAM, rtol=1e-6)  # loglam is float32 (E) in DR8+ files
        assert 3790.0 < obs.wave[0] < 3810.0 and 9190.0 < obs.wave[-1] < 9210.0
        assert obs.wave[0] / (1 + Z) > 3780.0  # rest-frame: redder than the bundle's 3650 Å blue end
        assert obs.bad[0].sum() == (np.abs(obs.wave - 5578.9) < 4.0).sum() > 0  # and_mask != 0


def test_star_forming_and_passive_spectra_land_on_nodes_that_order_them(survey_bundle, sdss_files):
    kinds = list(sdss_files)
    placed = assign.assign_files(survey_bundle.path, [sdss_files[k][0] for k in kinds]).set_index(
        np.array(kinds))
    print()
    for kind in kinds:
        truth, row = sdss_files[kind][1], placed.loc[kind]
        print(f"{kind}: truth sfh {truth['sfh']}, EW(Hα) {truth['ew_halpha']:.2f} Å, log sSFR {truth['log_ssfr']:.2f}"
              f" -> node {row['node']}, coverage {row['coverage']:.3f}, recon error {row['recon_error']:.3f}, "
              f"confidence {row['confidence']:.2f}; node medians EW(Hα) {row['median_ew_halpha']:.2f} Å, "
              f"log sSFR {row['median_log_ssfr']:.2f}, galaxy EW(Hα) {row['median_galaxy.ew_halpha']:.2f} Å, "
              f"galaxy log sSFR {row['median_galaxy.log_ssfr']:.2f}, log age {row['median_log_age_lw']:.2f}")
    assert (placed["error"] == "").all()
    # The blue end below ~3785 Å rest-frame (and the masked sky lines) is missing: the gappy path placed them.
    assert placed["coverage"].between(0.9, 0.97).all()
    assert (placed["recon_error"] < 0.2).all()
    sf, passive = placed.loc["star_forming"], placed.loc["passive"]
    assert sf["node"] != passive["node"]
    for prop in ("ew_halpha", "log_ssfr", "galaxy.ew_halpha", "galaxy.log_ssfr"):
        assert sf[f"median_{prop}"] > passive[f"median_{prop}"], prop
    assert sf["median_log_age_lw"] < passive["median_log_age_lw"]

    # The same placement by hand: the prepared spectra miss the grid's blue end, so the code is the gappy fixed
    # point (iterations >= 1), not one encoding with the training mean in the gap.
    maps, config = assign.frozen_maps(str(survey_bundle.path), "cpu"), survey_bundle.config["prepare"]
    wave = prepare.rest_frame_grid(config)
    for kind in kinds:
        galaxy = prepare.prepare_galaxy(formats.read_observation(sdss_files[kind][0]), config, partial_coverage=True)
        good = galaxy.bin_ivar > 0
        assert not good[0, wave < 3780.0].any() and good[0, wave > 3790.0].mean() > 0.98
        assert has_wide_gap(good, wave).all()
        again = place_spectra(maps.desom1, galaxy.bin_flux, galaxy.bin_ivar, wave, config["norm_window"])
        assert again.iterations[0] >= 1 and again.scale[0] == 1.0  # (the 4050–4150 Å window is observed)
        assert again.node[0] == placed.loc[kind, "node"]
