"""Gappy placement (precompute.placement): spectra missing part of the rest-frame grid placed on the frozen DESOM-1
map of the spectral-map test bundle, against the placement of the same spectra in full."""
from __future__ import annotations

import io

import numpy as np
import pytest

from precompute import assign, prepare, schema
from precompute.formats import write_spectra_set
from precompute.models.desom import DESOM
from precompute.models.som import adjacency
from precompute.placement import NARROW_GAP, has_wide_gap, place_spectra

N_SPECTRA = 300  # held-out binned spectra per case: the fractions to ±2 %


@pytest.fixture(scope="module")
def held_out(survey_bundle):
    """(model, wave, norm_window, flux, ivar, full placement) for a sample of the held-out galaxies' bins."""
    model = DESOM.load(io.BytesIO(survey_bundle.read(schema.DESOM1_MODEL)))
    prepare_config = survey_bundle.config["prepare"]
    wave = prepare.rest_frame_grid(prepare_config)
    bins = survey_bundle.bins
    val = np.flatnonzero(survey_bundle.galaxies["split"].to_numpy()[bins["galaxy_index"].to_numpy()] == "val")
    rows = np.sort(np.random.default_rng(0).choice(val, min(N_SPECTRA, val.size), replace=False))
    flux = np.asarray(survey_bundle.read(schema.FLUX))[rows]
    ivar = np.asarray(survey_bundle.read(schema.IVAR))[rows]
    full = place_spectra(model, flux, ivar, wave, prepare_config["norm_window"])
    return model, wave, prepare_config["norm_window"], flux, ivar, full


def _missing(wave, case: str) -> np.ndarray:
    """Pixels a spectrum does not observe: the bluest share of the (log-λ) grid, or 200 Å in the middle."""
    if case == "gap":
        return np.abs(wave - 0.5 * (wave[0] + wave[-1])) < 100.0
    return np.arange(wave.size) < round(float(case) * wave.size)


@pytest.mark.parametrize("case", ["0.05", "0.10", "0.20", "gap"])
def test_spectra_missing_part_of_the_grid_land_near_their_full_spectrums_node(held_out, case):
    model, wave, norm_window, flux, ivar, full = held_out
    missing = _missing(wave, case)
    cut_flux, cut_ivar = np.where(missing, 0.0, flux), np.where(missing, 0.0, ivar)
    window_lost = wave[missing].max() > norm_window[1] if case != "gap" else False
    level = np.ones(len(flux))
    if window_lost:  # 4050–4150 Å cut away: the spectra cannot be normalised as the build's are; any level
        level = np.random.default_rng(1).uniform(0.2, 5.0, len(flux))
    placed = place_spectra(model, cut_flux * level[:, None], cut_ivar / level[:, None] ** 2, wave, norm_window)

    assert (placed.error == "").all()
    np.testing.assert_allclose(placed.coverage, ((ivar > 0) & ~missing).mean(axis=1))
    near = (adjacency(model.rows, model.cols, model.topology).numpy() | np.eye(model.rows * model.cols, dtype=bool))
    landed = near[placed.node, full.node]
    ratio = placed.recon_error / full.recon_error
    print(f"\ncut {case}: coverage {placed.coverage.mean():.3f}, same node {np.mean(placed.node == full.node):.3f}, "
          f"same or neighbour {landed.mean():.3f}; recon error ratio median {np.median(ratio):.3f}, "
          f"90th percentile {np.quantile(ratio, 0.9):.3f}, max {ratio.max():.3f}")
    assert landed.mean() >= 0.9
    assert np.quantile(ratio, 0.9) <= 1.5 and np.median(ratio) <= 1.5
    if window_lost:  # the fitted level is the one the spectra were given, to ~1 %
        assert np.median(np.abs(np.log(placed.scale / level))) < 0.02
    else:
        assert (placed.scale == 1).all()
    assert ((placed.second_node != placed.node) & (placed.confidence >= 0) & (placed.confidence <= 1)).all()


def test_full_spectra_are_encoded_as_before_and_masked_pixels_filled(held_out):
    model, wave, norm_window, flux, ivar, full = held_out
    unmasked = ivar.copy()
    unmasked[ivar <= 0] = 1.0  # every pixel observed: one plain encoding, no iteration
    plain = place_spectra(model, flux, unmasked, wave, norm_window)
    np.testing.assert_array_equal(plain.iterations, 0)
    np.testing.assert_allclose(plain.latent, model.encode(flux), rtol=1e-5, atol=1e-6)
    # Narrow masks (sky lines, bad pixels) are what the build's spectra miss: encoded once as the build encodes
    # them; wider gaps are refilled from the decoded spectrum until the code settles.
    good = ivar > 0
    wide = has_wide_gap(good, wave)
    narrow = ~wide & ~good.all(axis=1)
    assert narrow.any()
    np.testing.assert_array_equal(full.iterations[narrow], 0)
    np.testing.assert_allclose(full.latent[narrow], model.encode(flux[narrow], good[narrow]), rtol=1e-5, atol=1e-6)
    assert (full.iterations[wide] >= 1).all()
    assert np.median(full.recon_error) < 0.1


def test_too_little_coverage_is_an_error_naming_the_shortfall(held_out):
    model, wave, norm_window, flux, ivar, _ = held_out
    red_half = wave > 5000.0
    placed = place_spectra(model, flux[:2], np.where(red_half, ivar[:2], 0.0), wave, norm_window)
    assert (placed.node == -1).all() and np.isnan(placed.qe).all()
    assert placed.error[0].startswith("covers only 50% of the rest-frame grid 3650–7000 Å (observed 5001–7000 Å")
    assert "at least 60%" in placed.error[0]
    lenient = place_spectra(model, flux[:2], np.where(red_half, ivar[:2], 0.0), wave, norm_window, min_coverage=0.4)
    assert (lenient.error == "").all() and (lenient.node >= 0).all()


def test_assign_places_a_spectrum_that_starts_redder_than_the_grid(survey_bundle, tmp_path):
    """An SDSS-like coverage: from 3811 Å rest-frame at z = 0.004, while the grid starts at 3650 Å; a second
    spectrum of the file covers only the red half and gets an error row naming the file and the spectrum."""
    wave = np.asarray(survey_bundle.wave)
    flux = np.asarray(survey_bundle.read(schema.FLUX))[:2].astype(float)
    ivar = np.asarray(survey_bundle.read(schema.IVAR))[:2].astype(float)
    z = 0.004
    observed = wave * (1 + z)
    blue_cut = (wave >= 3811.0)[None, :] & np.array([[True], [False]]) | (wave >= 5100.0)[None, :]
    spec = tmp_path / "sdss-like.fits"
    write_spectra_set(spec, wave=observed, flux=np.where(blue_cut, flux / (1 + z), 0.0),
                      ivar=np.where(blue_cut, ivar * (1 + z) ** 2, 0.0),
                      mask=(~blue_cut).astype(np.int32), z=[z, z])

    placed = assign.assign_files(survey_bundle.path, [spec])
    good, short = placed.iloc[0], placed.iloc[1]
    assert good["error"] == "" and 0.9 < good["coverage"] < 0.97
    cols = survey_bundle.read(schema.DESOM1_GRID)["cols"]
    own = survey_bundle.bins["desom1_node"].iloc[0]
    assert abs(good["node"] // cols - own // cols) + abs(good["node"] % cols - own % cols) <= 1
    assert good["recon_error"] < 0.2 and 0 <= good["confidence"] <= 1 and good["second_node"] != good["node"]
    assert short["error"].startswith(f"{spec}[1]: covers only") and "60%" in short["error"]
    assert np.isnan(short["qe"]) and short["coverage"] < 0.6


def test_rest_frame_resampling_leaves_uncovered_pixels_missing_only_when_asked():
    grid = prepare.rest_frame_grid({"wave_min": 3650.0, "wave_max": 7000.0, "dlog10_wave": 2e-4})
    wave = np.geomspace(4000.0, 8000.0, 3000)
    flux, ivar, bad = np.ones((1, wave.size)), np.ones((1, wave.size)), np.zeros((1, wave.size), bool)
    with pytest.raises(prepare.InputError, match=r"covers \d+–\d+ Å rest-frame \(z = 0.0000\), grid needs 3650"):
        prepare.to_rest_frame(wave, flux, ivar, bad, 0.0, grid)
    _, out_ivar, out_bad = prepare.to_rest_frame(wave, flux, ivar, bad, 0.0, grid, partial_coverage=True)
    uncovered = prepare.pixel_edges(grid)[:-1] < prepare.pixel_edges(wave)[0]  # a grid pixel partly covered too
    assert out_bad[0][uncovered].all() and uncovered.sum() > 0
    assert not out_bad[0][~uncovered & (grid < 5500)].any()  # (the [OI] 5577 Å sky line beyond is masked)
    assert (out_ivar[0][out_bad[0]] == 0).all()
    with pytest.raises(prepare.InputError, match="covers"):  # no overlap at all: still refused
        prepare.to_rest_frame(wave * 3, flux, ivar, bad, 0.0, grid, partial_coverage=True)


def _wide_gap_reference(good, wave, narrow):
    """has_wide_gap one spectrum and one run at a time."""
    out = []
    for row in good:
        wide, start = bool(not row[0] or not row[-1]), None
        for i, ok in enumerate(row):
            if not ok and start is None:
                start = i
            if start is not None and (ok or i == row.size - 1):
                end = i - 1 if ok else i
                wide |= bool(wave[end] - wave[start] > narrow)
                start = None
        out.append(wide)
    return np.array(out)


def test_has_wide_gap_matches_a_run_by_run_reference():
    wave = prepare.rest_frame_grid({"wave_min": 3650.0, "wave_max": 7000.0, "dlog10_wave": 2e-4})
    rng = np.random.default_rng(3)
    rows = [np.ones(wave.size, bool), np.zeros(wave.size, bool)]  # nothing masked; everything masked
    for first, last in [(0, 5), (wave.size - 5, wave.size), (0, 1), (wave.size - 1, wave.size), (700, 701)]:
        row = np.ones(wave.size, bool)
        row[first:last] = False  # runs touching an end (wide whatever their width); one pixel inside
        rows.append(row)
    # Inner runs spanning just under, exactly and just over `narrow` Å: the threshold is exclusive.
    narrow = float(wave[710] - wave[700])
    for start, end in [(700, 709), (700, 710), (700, 711)]:
        row = np.ones(wave.size, bool)
        row[start:end + 1] = False
        row[100:103] = False  # and a narrow one elsewhere
        rows.append(row)
    # Random masks: sparse bad pixels, runs of random lengths, some at the ends.
    for _ in range(300):
        row = rng.random(wave.size) > rng.choice([0.0, 0.002, 0.02, 0.3])
        for _ in range(rng.integers(0, 4)):
            start = rng.integers(0, wave.size)
            row[start:start + rng.integers(1, 30)] = False
        rows.append(row)
    good = np.array(rows)

    for gap in (narrow, NARROW_GAP):
        np.testing.assert_array_equal(has_wide_gap(good, wave, gap), _wide_gap_reference(good, wave, gap))
    assert has_wide_gap(good, wave, narrow)[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]].tolist() == [
        False, True, True, True, True, True, False, False, False, True]
    assert not has_wide_gap(good[:0], wave).size
