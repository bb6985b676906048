"""Preparation: rest-frame resampling, masking, normalisation, Voronoi binning, images and the core bundle."""
import copy
import io

import numpy as np
import pytest
from PIL import Image

from precompute import images, prepare, schema
from precompute.bundle import Bundle, BundleWriter
from precompute.config import DEFAULT_CONFIG
from precompute.observation import InputError, Observation

HALPHA = 6564.61  # vacuum Å
PREP = DEFAULT_CONFIG["prepare"]


def observed_wave(lo=3600.0, hi=7600.0, dlog=1e-4):
    return 10 ** np.arange(np.log10(lo), np.log10(hi), dlog)


def continuum(rest):
    """A 4000 Å break, a slope and an Hα emission line: enough structure to test resampling."""
    return 1.0 + 0.6 * (rest > 4000) + 1e-4 * (rest - 4000) + 4.0 * np.exp(-0.5 * ((rest - HALPHA) / 2.5) ** 2)


def make_cube(ny=12, nx=12, z=0.03, peak_snr=40.0, seed=0, path="tiny-cube.fits", scale_length=2.5):
    """An exponential disc of identical spectra with Gaussian noise; the centre spaxel has S/N ≈ peak_snr."""
    rng = np.random.default_rng(seed)
    wave = observed_wave()
    yy, xx = np.indices((ny, nx))
    amp = np.exp(-np.hypot(xx - (nx - 1) / 2, yy - (ny - 1) / 2) / scale_length)
    model = amp[..., None] * continuum(wave / (1 + z))[None, None, :]
    sigma = np.full(model.shape, 1.6 / peak_snr)
    flux = model + rng.normal(size=model.shape) * sigma
    return Observation(
        id=path.split(".")[0], format="manga", wave=wave, flux=flux.astype(np.float32),
        ivar=(1 / sigma**2).astype(np.float32), bad=np.zeros(model.shape, bool), redshift=z, pixel_scale=0.5,
        meta={"path": path},
    )


def make_set(n=3, z=(0.02, 0.05, 0.08), seed=1, path="fibres.fits"):
    rng = np.random.default_rng(seed)
    wave = observed_wave(3600, 8000)
    model = np.stack([continuum(wave / (1 + zi)) for zi in z[:n]])
    sigma = np.full(model.shape, 0.05)
    return Observation(
        id="fibres", format="spectra", wave=wave, flux=model + rng.normal(size=model.shape) * sigma,
        ivar=1 / sigma**2, bad=np.zeros(model.shape, bool), redshift=np.array(z[:n]), meta={"path": path},
    )


def resample(wave, flux, ivar, z, bad=None):
    grid = prepare.rest_frame_grid(PREP)
    bad = np.zeros(flux.shape, bool) if bad is None else bad
    return grid, *prepare.to_rest_frame(wave, flux, ivar, bad, z, grid, "test")


# --- resampling ------------------------------------------------------------------------------------------


def test_rest_frame_grid_is_log_spaced_within_limits():
    grid = prepare.rest_frame_grid(PREP)
    assert grid[0] == pytest.approx(PREP["wave_min"]) and grid[-1] <= PREP["wave_max"]
    assert np.allclose(np.diff(np.log10(grid)), PREP["dlog10_wave"])


def test_resampling_conserves_flux_over_a_band():
    z = 0.07
    wave = observed_wave(3600, 8000)
    rng = np.random.default_rng(3)
    flux = continuum(wave / (1 + z)) * (1 + 0.2 * rng.random(wave.size))  # rough, so interpolation would fail
    grid, out, _, bad = resample(wave, flux[None], np.ones((1, wave.size)), z)
    edges_out = prepare.pixel_edges(grid)
    for j0, j1 in [(100, 400), (37, 38), (1100, grid.size)]:  # bands clear of the masked sky lines
        assert not bad[0, j0:j1].any()
        rest_integral = np.sum(out[0, j0:j1] * np.diff(edges_out)[j0:j1])
        # The same band in the observed frame, integrated exactly from the piecewise-constant input
        edges_in = prepare.pixel_edges(wave)
        cumulative = np.concatenate([[0.0], np.cumsum(flux * np.diff(edges_in))])
        lo, hi = edges_out[j0] * (1 + z), edges_out[j1] * (1 + z)
        observed_integral = np.interp(hi, edges_in, cumulative) - np.interp(lo, edges_in, cumulative)
        # (1+z) f_λ per rest-frame Å over a (1+z)-times narrower band: the same energy
        assert rest_integral == pytest.approx(observed_integral, rel=1e-9)


def test_line_lands_at_its_rest_wavelength():
    wave = observed_wave(3600, 8000, dlog=0.7e-4)
    for z in (0.0, 0.0312, 0.11):
        grid, out, _, _ = resample(wave, continuum(wave / (1 + z))[None], np.ones((1, wave.size)), z)
        near = np.abs(grid - HALPHA) < 15
        excess = out[0, near] - np.median(out[0, near])
        assert np.sum(grid[near] * excess) / np.sum(excess) == pytest.approx(HALPHA, abs=0.15)


def test_ivar_propagation_gives_unit_chi2():
    z, n = 0.05, 300
    rng = np.random.default_rng(4)
    wave = observed_wave(3600, 8000)
    model = np.tile(continuum(wave / (1 + z)), (n, 1))
    sigma = 0.05 * (1 + rng.random(model.shape))  # heteroscedastic on purpose
    noisy = model + rng.normal(size=model.shape) * sigma
    _, clean, _, _ = resample(wave, model, 1 / sigma**2, z)
    _, out, ivar, bad = resample(wave, noisy, 1 / sigma**2, z)
    chi2 = np.mean(((out - clean) ** 2 * ivar)[~bad])
    assert chi2 == pytest.approx(1.0, abs=0.03)


def test_bad_pixels_and_sky_lines_propagate():
    z = 0.04
    wave = observed_wave(3600, 8000)
    flux = np.tile(continuum(wave / (1 + z)), (2, 1))
    bad = np.zeros(flux.shape, bool)
    k = np.searchsorted(wave, 5000 * (1 + z))
    bad[0, k] = True
    flux[0, k] = np.nan  # a bad pixel's value must never leak into the output
    grid, out, ivar, bad_out = resample(wave, flux, np.ones(flux.shape), z, bad)
    edges = prepare.pixel_edges(grid) * (1 + z)
    in_edges = prepare.pixel_edges(wave)
    touching = (edges[1:] > in_edges[k]) & (edges[:-1] < in_edges[k + 1])
    assert bad_out[0, touching].all() and not bad_out[1, touching].any()
    assert np.isfinite(out).all() and (out[bad_out] == 0).all() and (ivar[bad_out] == 0).all()
    for sky in prepare.SKY_LINES:
        j = np.argmin(np.abs(grid * (1 + z) - sky))
        assert bad_out[:, j].all()
    # Away from the bad pixel and the sky lines both spectra agree
    clear = ~bad_out[0]
    assert clear.mean() > 0.9 and np.allclose(out[0, clear], out[1, clear])


def test_coverage_error_names_the_source_and_ranges():
    obs = make_cube(z=0.3, path="far-away.fits")
    with pytest.raises(InputError, match=r"far-away\.fits: covers .*–.* Å rest-frame .* grid needs 3650–7000 Å"):
        prepare.prepare_galaxy(obs, PREP)


def test_all_masked_and_unknown_redshift_errors_name_the_source():
    obs = make_cube(path="masked.fits")
    obs.bad[..., :] = sky = prepare.sky_line_mask(obs.wave)[None, None, :] | (obs.wave > 4000)
    assert sky.any()
    with pytest.raises(InputError, match=r"masked\.fits: "):
        prepare.prepare_galaxy(obs, PREP)
    obs = make_cube(path="no-z.fits")
    obs.redshift = np.nan
    with pytest.raises(InputError, match=r"no-z\.fits: redshift"):
        prepare.prepare_galaxy(obs, PREP)


# --- one galaxy ------------------------------------------------------------------------------------------


def window_means(flux, ivar, grid, window=PREP["norm_window"]):
    inside = (grid >= window[0]) & (grid <= window[1])
    good = ivar[..., inside] > 0
    return np.where(good, flux[..., inside], 0).sum(-1) / good.sum(-1)


@pytest.fixture(scope="module")
def galaxy():
    truth_maps = {"av": np.indices((12, 12))[1].astype(float)}  # av = column index: easy to average
    return prepare.prepare_galaxy(make_cube(), PREP, truth={"re_arcsec": 2.0, "morphology": "Sb"},
                                  truth_maps=truth_maps)


def test_normalisation_window_mean_is_one(galaxy):
    grid = prepare.rest_frame_grid(PREP)
    assert np.allclose(window_means(galaxy.bin_flux, galaxy.bin_ivar, grid), 1.0, atol=1e-5)
    used = galaxy.spaxel_ivar.any(axis=-1)
    assert used.sum() > 50
    assert np.allclose(window_means(galaxy.spaxel_flux[used], galaxy.spaxel_ivar[used], grid), 1.0, atol=1e-5)


def test_voronoi_bins_reach_target_and_partition_the_spaxels(galaxy):
    bins, spaxel_bins = galaxy.bins, galaxy.spaxel_bins
    assert spaxel_bins.dtype == np.int32 and spaxel_bins.shape == (12, 12)
    assert list(bins.bin_id) == list(range(len(bins)))
    counts = np.bincount(spaxel_bins[spaxel_bins >= 0], minlength=len(bins))
    assert (counts == bins.n_spaxels).all() and (counts > 0).all()
    assert (bins.snr >= PREP["min_bin_snr"]).all()
    assert bins.n_spaxels.max() > 1, "the faint outskirts must be binned"
    multi = bins[bins.n_spaxels > 1]
    assert 0.7 * PREP["target_snr"] < multi.snr.median() < 1.5 * PREP["target_snr"]
    assert (bins.iloc[:4].n_spaxels == 1).all(), "the bright centre reaches the target in single spaxels"
    assert len(galaxy.bin_flux) == len(bins) == galaxy.row["n_bins"]


def test_bin_positions_and_truth_are_flux_weighted(galaxy):
    bins, spaxel_bins = galaxy.bins, galaxy.spaxel_bins
    central = bins.iloc[0]
    assert np.hypot(central.x_arcsec, central.y_arcsec) < 0.5
    assert np.allclose(bins.radius_re, np.hypot(bins.x_arcsec, bins.y_arcsec) / 2.0)
    cols = np.indices((12, 12))[1]
    for b in bins.itertuples():
        members = spaxel_bins == b.bin_id
        assert cols[members].min() - 1e-9 <= b.av <= cols[members].max() + 1e-9
        # av is the column index, so its flux-weighted mean maps straight to the x centroid
        assert b.x_arcsec == pytest.approx((b.av - 5.5) * 0.5)


def test_low_snr_bins_are_dropped():
    strict = dict(PREP, min_bin_snr=30.0)
    g = prepare.prepare_galaxy(make_cube(), strict)
    assert (g.bins.snr >= 30).all() and len(g.bins) > 0
    loose = prepare.prepare_galaxy(make_cube(), PREP)
    assert (g.spaxel_bins >= 0).sum() < (loose.spaxel_bins >= 0).sum()
    with pytest.raises(InputError, match=r"tiny-cube\.fits: no Voronoi bin reaches S/N 1000"):
        prepare.prepare_galaxy(make_cube(), dict(PREP, min_bin_snr=1000.0))


def test_foreground_star_spaxels_are_excluded():
    obs = make_cube()
    obs.foreground_star = np.zeros((12, 12), bool)
    obs.foreground_star[2:4, 2:4] = True
    g = prepare.prepare_galaxy(obs, PREP)
    assert (g.spaxel_bins[2:4, 2:4] == -1).all() and not g.spaxel_ivar[2:4, 2:4].any()


def test_masked_median_matches_numpy():
    rng = np.random.default_rng(8)
    values, good = rng.normal(size=(50, 31)), rng.random((50, 31)) > 0.3
    good[0] = False
    expected = [np.median(v[g]) if g.any() else np.nan for v, g in zip(values, good)]
    assert np.allclose(prepare.masked_median(values, good), expected, equal_nan=True)


def test_voronoi_edge_cases():
    x, y = np.meshgrid(np.arange(4.0), np.arange(4.0))
    x, y = x.ravel(), y.ravel()
    bright = prepare.voronoi_bins(x, y, np.full(16, 50.0), np.ones(16), 20.0)
    assert sorted(bright) == list(range(16))
    faint = prepare.voronoi_bins(x, y, np.full(16, 1.0), np.ones(16), 20.0)
    assert (faint == 0).all()
    assert list(prepare.voronoi_bins(x[:1], y[:1], np.ones(1), np.ones(1), 20.0)) == [0]
    mixed = prepare.voronoi_bins(x, y, np.linspace(1, 30, 16), np.ones(16), 20.0)
    assert set(mixed) == set(range(mixed.max() + 1)) and 1 < mixed.max() + 1 < 16


def test_sets_give_one_galaxy_and_one_bin_per_spectrum():
    galaxies = [prepare.prepare_galaxy(o, PREP) for o in prepare.split_spectra(make_set())]
    assert [g.galaxy_id for g in galaxies] == ["fibres:0", "fibres:1", "fibres:2"]
    assert [g.row["redshift"] for g in galaxies] == [0.02, 0.05, 0.08]
    for g in galaxies:
        assert g.bin_flux.shape == (1, prepare.rest_frame_grid(PREP).size) and g.spaxel_bins.tolist() == [[0]]
        assert np.isnan(g.bins.x_arcsec[0]) and g.image.shape == (3, 64, 64)
    # The same rest-frame spectrum whatever the redshift
    both = np.flatnonzero((galaxies[0].bin_ivar[0] > 0) & (galaxies[2].bin_ivar[0] > 0))
    assert np.median(np.abs(galaxies[0].bin_flux[0, both] - galaxies[2].bin_flux[0, both])) < 0.05


# --- images ----------------------------------------------------------------------------------------------


def test_rebin_conserves_flux_and_keeps_aspect():
    rng = np.random.default_rng(5)
    image = rng.random((3, 30, 20))
    out = images.rebin_flux(image, 64)
    assert out.shape == (3, 64, 64) and np.allclose(out.sum(axis=(1, 2)), image.sum(axis=(1, 2)), rtol=1e-5)
    assert out[:, :, :10].sum() == 0 and out[:, :, -10:].sum() == 0  # padded left and right, not stretched
    down = images.rebin_flux(rng.random((1, 128, 128)), 64)
    assert down.shape == (1, 64, 64)


def test_synthetic_photometry_matches_speclite():
    wave = observed_wave(3500, 9000)
    flambda = 3631e-23 * 2.99792458e18 / wave**2 / 1e-17 * 1e-9 * (wave / 5000) ** 0.5  # ~1 nanomaggy
    bad = np.zeros(wave.size, bool)
    ours = images.synthesise_gri(wave, flambda[None], bad[None])[:, 0]
    import astropy.units as u

    theirs = images._sdss_filters().get_ab_maggies(flambda * 1e-17 * u.erg / u.s / u.cm**2 / u.AA, wave * u.AA)
    assert np.allclose(ours, [1e9 * theirs[f][0] for f in images.SDSS_FILTERS], rtol=2e-3)
    # Bad pixels are left out, not read as zero flux
    bad[(wave > 4500) & (wave < 4700)] = True
    assert np.allclose(images.synthesise_gri(wave, flambda[None], bad[None])[:, 0], ours, rtol=0.02)


def test_thumbnail_keeps_noise_dark_and_the_galaxy_bright():
    rng = np.random.default_rng(9)
    yy, xx = np.indices((128, 128))
    galaxy = 2.0 * np.exp(-np.hypot(xx - 64, yy - 64) / 6.0)
    gri = np.stack([k * galaxy + rng.normal(0, 0.03, galaxy.shape) for k in (0.2, 0.6, 1.0)])  # a red galaxy
    rgb = np.asarray(Image.open(io.BytesIO(images.thumbnail_png(gri))), dtype=float)
    grey = rgb.mean(axis=-1)
    assert rgb.shape == (128, 128, 3)
    assert np.median(grey[:20, :20]) < 25 and grey[60:68, 60:68].mean() > 180
    ring = np.abs(np.hypot(xx - 64, yy - 64) - 10) < 1
    assert rgb[ring, 0].mean() > 1.2 * rgb[ring, 2].mean(), "i-bright light must show red, not blue"


def test_thumbnail_is_an_rgb_png():
    png = images.thumbnail_png(np.random.default_rng(6).random((3, 20, 20)))
    picture = Image.open(io.BytesIO(png))
    assert picture.mode == "RGB" and picture.size[0] >= images.THUMBNAIL_MIN_SIZE


# --- bundle ----------------------------------------------------------------------------------------------


def test_split_is_stratified_and_seeded():
    groups = ["E"] * 50 + ["Sb"] * 100 + ["Irr"] * 14
    split = prepare.assign_split(groups, 0.14, seed=7)
    assert (split == "val").sum() == round(0.14 * 164)
    for g, n in [("E", 50), ("Sb", 100), ("Irr", 14)]:
        share = (split[np.array(groups) == g] == "val").sum() / n
        assert abs(share - 0.14) < 0.05
    assert (prepare.assign_split(groups, 0.14, seed=7) == split).all()
    assert (prepare.assign_split(groups, 0.14, seed=8) != split).any()


def test_write_core_round_trip(tmp_path, galaxy):
    others = [prepare.prepare_galaxy(o, PREP) for o in prepare.split_spectra(make_set(n=2))]
    galaxies = [galaxy, *others]
    config = copy.deepcopy(DEFAULT_CONFIG)
    with BundleWriter(tmp_path / "core", config, seed=config["seed"]) as writer:
        prepare.write_core(writer, galaxies, config)
    bundle = Bundle(tmp_path / "core")
    table, bins = bundle.galaxies, bundle.bins
    assert list(table.galaxy_id) == ["tiny-cube", "fibres:0", "fibres:1"]
    assert list(table.columns[:8]) == prepare.GALAXY_COLUMNS and table.morphology[0] == "Sb"
    assert set(table.split) <= {"train", "val"} and list(table.n_bins) == [len(galaxy.bins), 1, 1]
    assert len(bins) == table.n_bins.sum() == bundle.read(schema.FLUX).shape[0]
    assert (bins.galaxy_id == table.galaxy_id[bins.galaxy_index].to_numpy()).all()
    assert bundle.read(schema.FLUX).dtype == np.float32
    assert np.array_equal(bundle.read(schema.IVAR)[: len(galaxy.bins)], galaxy.bin_ivar)
    assert np.array_equal(bundle.wave, prepare.rest_frame_grid(PREP))
    assert np.array_equal(bundle.read(schema.SPAXEL_BINS)["tiny-cube"], galaxy.spaxel_bins)
    assert bundle.read(schema.IMAGES).shape == (3, 3, 64, 64)
    for path in table.thumbnail:
        assert Image.open(bundle.path / path).mode == "RGB"
    assert bundle.metrics["prepare"]["binned_spectra"] == len(bins)


# --- files and the command line --------------------------------------------------------------------------


def test_cli_prepares_files_skips_a_bad_one_and_uses_the_catalogue(tmp_path, capsys):
    import json

    import pandas as pd

    from precompute import formats

    cube = make_cube(ny=10, nx=10, z=0.0365)
    wave = formats.manga_wave()
    flux = np.stack([np.interp(wave, cube.wave, s) for s in cube.flux.reshape(100, -1)]).reshape(10, 10, -1)
    gimg = np.ones((10, 10), np.float32)
    formats.write_manga_cube(
        tmp_path / "manga-8485-1901-LOGCUBE.fits", wave=wave, flux=flux, ivar=np.full(flux.shape, cube.ivar.max()),
        mask=np.zeros(flux.shape, np.int32), header={"PLATEIFU": "8485-1901", "OBJRA": 132.6, "OBJDEC": 57.4},
        images={"g": gimg, "r": 2 * gimg, "i": 3 * gimg},
    )
    fibres = make_set(n=2)
    formats.write_spectra_set(tmp_path / "fibres.fits", wave=fibres.wave, flux=fibres.flux, ivar=fibres.ivar,
                              mask=np.zeros(fibres.flux.shape), z=fibres.redshift)
    (tmp_path / "broken.fits").write_bytes(b"not a FITS file at all")
    pd.DataFrame({"plateifu": ["8485-1901"], "nsa_z": [0.0365], "nsa_elpetro_th50_r": [2.5]}).to_csv(
        tmp_path / "drpall.csv", index=False)
    (tmp_path / "config.json").write_text(json.dumps({"inputs": {"column_map": {"nsa_elpetro_th50_r": "re_arcsec"}}}))

    files = [str(tmp_path / name) for name in ("manga-8485-1901-LOGCUBE.fits", "broken.fits", "fibres.fits")]
    code = prepare.main([*files, "--catalogue", str(tmp_path / "drpall.csv"), "--key", "plateifu",
                         "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "bundle")])
    assert code == 0
    err = capsys.readouterr().err
    assert "skipped" in err and f"{tmp_path / 'broken.fits'}: " in err and "skipped 1" in err
    bundle = Bundle(tmp_path / "bundle")
    table = bundle.galaxies.set_index("galaxy_id")
    # inputs are resolved into one sorted list of paths, so the galaxies follow the files' names
    assert list(table.index) == ["fibres:0", "fibres:1", "8485-1901"]
    assert table.loc["8485-1901", "re_arcsec"] == 2.5 and table.loc["8485-1901", "ra"] == 132.6
    assert table.loc["fibres:1", "redshift"] == pytest.approx(0.05)
    cube_bins = bundle.bins[bundle.bins.galaxy_id == "8485-1901"]
    assert np.allclose(cube_bins.radius_re, np.hypot(cube_bins.x_arcsec, cube_bins.y_arcsec) / 2.5)
    assert bundle.metrics["prepare"]["skipped"] == 1
    skipped, = bundle.manifest["provenance"]["skipped"]  # listed in the manifest, one line naming the file
    assert skipped.startswith(f"{tmp_path / 'broken.fits'}: ")
    # The cube's own GIMG/RIMG/IIMG are used, rebinned with their total flux kept
    cube_row = list(table.index).index("8485-1901")
    assert np.allclose(bundle.read(schema.IMAGES)[cube_row].sum(axis=(1, 2)), [100, 200, 300], rtol=1e-5)


def test_cli_prepares_the_mock_survey_with_its_truth(tmp_path):
    assert prepare.main(["--mock", "2", "--seed", "3", "--out", str(tmp_path / "mock"), "--workers", "0"]) == 0
    bundle = Bundle(tmp_path / "mock")
    table, bins = bundle.galaxies, bundle.bins
    assert list(table.source) == ["mock:3:0", "mock:3:1"] and bundle.manifest["seed"] == 3
    assert {"morphology", "log_mstar", "re_arcsec", "quenched"} <= set(table.columns)
    assert {"log_age_lw", "ew_halpha", "velocity_kms", "sigma_kms"} <= set(bins.columns)
    assert bins.log_age_lw.notna().all() and bins.radius_re.notna().all()
    for g, row in table.iterrows():
        spaxel_bins = bundle.read(schema.SPAXEL_BINS)[row.galaxy_id]
        own = bins[bins.galaxy_index == g]
        assert (np.bincount(spaxel_bins[spaxel_bins >= 0]) == own.n_spaxels.to_numpy()).all()
    assert (bins.snr >= DEFAULT_CONFIG["prepare"]["min_bin_snr"]).all()
    assert bundle.read(schema.IMAGES).shape == (2, 3, 64, 64)
