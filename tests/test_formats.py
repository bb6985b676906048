"""Readers on format-faithful tiny files: written by our writers AND built by hand the way the survey
pipelines write them, read back by content (not name); every kind of bad file gives a one-line error."""
import gzip
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

import precompute.formats as F
from precompute.observation import InputError

NY, NX = 5, 6  # different sizes so a swapped spatial axis cannot pass
C_KMS = 299792.458


# ---------------------------------------------------------------- tiny files built like the pipelines do
def cube_values(nw, ny=NY, nx=NX):
    """FITS-order [nw, ny, nx] cube whose value encodes its position: 100*y + x + 0.001*k."""
    k, y, x = np.meshgrid(np.arange(nw), np.arange(ny), np.arange(nx), indexing="ij")
    return (100.0 * y + x + 1e-3 * k + 1.0).astype(np.float32)


def drp_logcube(path, *, wave=None, flux=None, ivar=None, mask=None, plateifu="8485-1901"):
    """A LOGCUBE as the MaNGA DRP writes it (HDU order, header keys, CD-matrix WCS, extra extensions)."""
    wave = F.manga_wave() if wave is None else wave
    flux = cube_values(wave.size) if flux is None else flux
    ivar = np.full(flux.shape, 4.0, np.float32) if ivar is None else ivar
    mask = np.zeros(flux.shape, np.int32) if mask is None else mask
    primary = fits.PrimaryHDU()
    primary.header.update({"PLATEIFU": plateifu, "MANGAID": "1-209232", "OBJRA": 132.65, "OBJDEC": 57.36,
                           "IFURA": 132.66, "IFUDEC": 57.37, "DRP3QUAL": 0, "EBVGAL": 0.04})
    sky = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 3.5, "CRPIX2": 3.0, "CRVAL1": 132.66,
           "CRVAL2": 57.37, "CD1_1": -0.000138889, "CD2_2": 0.000138889, "CUNIT1": "deg", "CUNIT2": "deg"}
    spec = {"CTYPE3": "WAVE-LOG", "CUNIT3": "Angstrom", "CRPIX3": 1, "CRVAL3": float(wave[0]), "CD3_3": float(wave[1] - wave[0])}
    hdus = [primary]
    for name, data in (("FLUX", flux), ("IVAR", ivar), ("MASK", mask), ("DISP", np.ones_like(flux)), ("PREDISP", np.ones_like(flux))):
        hdu = fits.ImageHDU(data, name=name)
        hdu.header.update({**sky, **spec})
        hdus.append(hdu)
    hdus.append(fits.ImageHDU(wave, name="WAVE"))
    for name in ("REDCORR", "SPECRES", "SPECRESD", "PRESPECRES", "PRESPECRESD"):
        hdus.append(fits.ImageHDU(np.full(wave.size, 1.5), name=name))
    hdus.append(fits.BinTableHDU(Table({"IFUDESIGN": [1901], "EXPNUM": [177381]}), name="OBSINFO"))
    for i, band in enumerate("GRIZ"):
        img = fits.ImageHDU(np.full(flux.shape[1:], i + 1.0, np.float32), name=f"{band}IMG")
        img.header.update(sky)
        hdus.append(img)
        hdus.append(fits.ImageHDU(np.zeros(flux.shape[1:], np.float32), name=f"{band}PSF"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def pipeline_califa(path, *, n_wave=1877, flux=None, error=None, badpix=None):
    """A V500 cube as the CALIFA pipeline writes it: flux in PRIMARY, then ERROR, ERRWEIGHT, BADPIX, FIBCOVER."""
    flux = cube_values(n_wave) if flux is None else flux
    error = np.full(flux.shape, 0.5, np.float32) if error is None else error
    badpix = np.zeros(flux.shape, np.uint8) if badpix is None else badpix
    primary = fits.PrimaryHDU(flux)
    primary.header.update({"CRVAL3": 3749.0, "CDELT3": 2.0, "CRPIX3": 1.0, "CTYPE3": "AWAV", "OBJECT": "NGC2253",
                           "MED_VEL": 3571.0, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 100.9,
                           "CRVAL2": 65.2, "CDELT1": -0.5 / 3600, "CDELT2": 0.5 / 3600, "CRPIX1": 3, "CRPIX2": 3})
    hdus = [primary, fits.ImageHDU(error, name="ERROR"), fits.ImageHDU(np.ones_like(error), name="ERRWEIGHT"),
            fits.ImageHDU(badpix, name="BADPIX"), fits.ImageHDU(np.ones(flux.shape, np.uint8), name="FIBCOVER")]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def dr16_spec(path, *, n=3000):
    """An SDSS spec-PLATE-MJD-FIBER.fits: COADD (lower-case columns), SPECOBJ (upper-case), SPZLINE."""
    loglam = (3.5796 + 1e-4 * np.arange(n)).astype(np.float32)
    flux = np.linspace(1, 2, n).astype(np.float32)
    ivar = np.full(n, 9.0, np.float32)
    ivar[10] = 0.0
    and_mask = np.zeros(n, np.int32)
    and_mask[20:25] = 1 << 16
    coadd = fits.BinTableHDU(Table({"flux": flux, "loglam": loglam, "ivar": ivar, "and_mask": and_mask,
                                    "or_mask": and_mask, "wdisp": np.ones(n, np.float32), "sky": np.zeros(n, np.float32),
                                    "model": flux}), name="COADD")
    specobj = fits.BinTableHDU(Table({"PLATE": [266], "MJD": [51602], "FIBERID": [3], "Z": [np.float32(0.0213)],
                                      "Z_ERR": [1e-5], "CLASS": ["GALAXY"], "SUBCLASS": ["STARFORMING"],
                                      "PLUG_RA": [146.7], "PLUG_DEC": [-0.76], "VDISP": [120.0]}), name="SPECOBJ")
    primary = fits.PrimaryHDU()
    primary.header.update({"PLATEID": 266, "MJD": 51602, "FIBERID": 3, "PLUG_RA": 146.7, "PLUG_DEC": -0.76})
    fits.HDUList([primary, coadd, specobj, fits.BinTableHDU(Table({"LINENAME": ["Ha"]}), name="SPZLINE")]).writeto(path)
    return path, loglam, flux, ivar, and_mask


def dap_spectra(path, n=4, nw=300):
    """Spectra-set layout of the MaNGA DAP test spectra."""
    wave = np.linspace(3700.0, 7000.0, nw)
    flux = np.tile(np.arange(nw, dtype=np.float32), (n, 1)) + np.arange(n)[:, None]
    mask = np.zeros((n, nw), np.int16)
    mask[1, :50] = 1
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(wave, name="WAVE"), fits.ImageHDU(flux, name="FLUX"),
            fits.ImageHDU(np.ones((n, nw), np.float32), name="IVAR"), fits.ImageHDU(mask, name="MASK"),
            fits.ImageHDU(np.full((n, nw), 2000.0), name="SRES"), fits.ImageHDU(np.linspace(0.01, 0.04, n), name="Z")]
    fits.HDUList(hdus).writeto(path)
    return path, wave, flux, mask


def error_of(path, **kwargs):
    with pytest.raises(InputError) as info:
        F.read_observation(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


# ---------------------------------------------------------------- units and bits
def test_mask_bits_and_manga_bad():
    assert (F.NOCOV, F.LOWCOV, F.DEADFIBER, F.FORESTAR, F.DONOTUSE) == (1, 2, 4, 8, 1024)
    mask = np.array([0, F.NOCOV, F.LOWCOV, F.DEADFIBER, F.FORESTAR, F.DONOTUSE, F.LOWCOV | F.DONOTUSE])
    assert F.manga_bad(mask).tolist() == [False, True, False, False, False, True, True]


def test_air_to_vacuum_matches_known_lines_and_inverts():
    # Vacuum wavelengths of Halpha and [OIII]5007 (Morton 2000 / NIST): 6564.61, 5008.24 Å.
    assert F.air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)
    assert F.air_to_vacuum(5006.843) == pytest.approx(5008.24, abs=0.01)
    air = F.califa_wave_air()
    assert np.max(np.abs(F.vacuum_to_air(F.air_to_vacuum(air)) - air)) < 1e-8


def test_manga_wave_grid():
    wave = F.manga_wave()
    assert wave.size == 4563 and wave[0] == pytest.approx(3621.6, abs=0.05) and wave[-1] == pytest.approx(10353.8, abs=0.05)


# ---------------------------------------------------------------- MaNGA
def test_drp_logcube_reads_by_content_wavelength_last(tmp_path):
    mask = np.zeros((4563, NY, NX), np.int32)
    mask[:, 0, 0] = F.NOCOV
    mask[:, 4, 5] = F.DONOTUSE | F.FORESTAR
    mask[:, 2, 3] = F.FORESTAR
    mask[:, 1, 1] = F.LOWCOV
    path = drp_logcube(tmp_path / "renamed.txt", mask=mask)  # not a FITS name: detection is by content
    assert F.detect_format(path) == "manga"
    obs = F.read_observation(path)
    assert obs.format == "manga" and obs.id == "8485-1901" and obs.flux.shape == (NY, NX, 4563)
    assert obs.flux[2, 3, 10] == pytest.approx(100 * 2 + 3 + 0.010 + 1, rel=1e-6)  # FITS [k, y, x] -> [y, x, k]
    np.testing.assert_allclose(obs.wave, F.manga_wave())
    assert obs.bad[0, 0].all() and obs.bad[4, 5].all() and not obs.bad[1, 1].any() and not obs.bad[2, 3].any()
    assert obs.bad.sum() == 2 * 4563
    assert (obs.flux[obs.bad] == 0).all() and (obs.ivar[obs.bad] == 0).all() and (obs.ivar[~obs.bad] == 4).all()
    assert obs.foreground_star.tolist() == [[y == 2 and x == 3 or (y, x) == (4, 5) for x in range(NX)] for y in range(NY)]
    assert obs.pixel_scale == pytest.approx(0.5, abs=1e-3)
    assert sorted(obs.images) == ["g", "i", "r"] and obs.images["r"].shape == (NY, NX) and obs.images["i"][0, 0] == 3
    assert obs.meta["ra"] == 132.65 and obs.meta["dec"] == 57.36 and obs.meta["mangaid"] == "1-209232"
    assert obs.meta["specres"].shape == (4563,)
    assert np.isnan(obs.redshift)
    assert obs.flux.dtype == np.float32 and obs.flux.dtype.isnative


def test_manga_writer_round_trip_gz_and_drpall_redshift(tmp_path):
    rng = np.random.default_rng(1)
    wave = F.manga_wave()
    flux = rng.normal(1.0, 0.1, (NY, NX, wave.size)).astype(np.float32)
    ivar = rng.uniform(50, 100, flux.shape).astype(np.float32)
    mask = np.zeros(flux.shape, np.int32)
    mask[0, :, :] = F.NOCOV
    mask[3, 3, 100:200] = F.DONOTUSE
    images = {b: rng.uniform(0, 1, (NY, NX)) for b in "griz"}
    path = tmp_path / "manga-7443-12703-LOGCUBE.fits.gz"
    F.write_manga_cube(path, wave=wave, flux=flux, ivar=ivar, mask=mask, images=images, specres=np.full(wave.size, 2000.0),
                       header={"PLATEIFU": "7443-12703", "MANGAID": "12-193481", "OBJRA": 229.5, "OBJDEC": 42.7,
                               "IFURA": 229.5, "IFUDEC": 42.7})
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    with fits.open(path) as hdul:
        assert hdul["FLUX"].data.shape == (wave.size, NY, NX) and hdul["FLUX"].header["CTYPE1"] == "RA---TAN"
    drpall = tmp_path / "drpall.fits"
    F.write_drpall(drpall, pd.DataFrame({"plateifu": ["7443-12703", "8485-1901"], "nsa_z": [0.0413, 0.0365],
                                         "nsa_elpetro_absmag": [np.arange(7.0), np.arange(7.0) - 20]}))
    obs = F.read_manga_cube(path, catalogue=drpall)
    assert obs.redshift == pytest.approx(0.0413)
    good = ~F.manga_bad(mask)
    np.testing.assert_array_equal(obs.bad, ~good)
    np.testing.assert_allclose(obs.flux[good], flux[good])
    np.testing.assert_allclose(obs.ivar[good], ivar[good])
    np.testing.assert_allclose(obs.images["g"], images["g"], rtol=1e-6)
    assert obs.pixel_scale == pytest.approx(0.5)
    # Precedence: redshift= over the catalogue; an object the catalogue lacks stays unknown.
    assert F.read_observation(path, redshift=0.1, catalogue=drpall).redshift == 0.1
    other = pd.DataFrame({"plateifu": ["1-1"], "nsa_z": [0.2]})
    assert np.isnan(F.read_observation(path, catalogue=other).redshift)


def test_manga_bad_cases(tmp_path):
    wave = F.manga_wave()
    flux = cube_values(wave.size)
    flux[:, 2, 2] = np.nan
    assert "unmasked pixels have NaN/inf" in error_of(drp_logcube(tmp_path / "nan.fits", flux=flux))
    masked = np.zeros(flux.shape, np.int32)
    masked[:, 2, 2] = F.DONOTUSE  # NaN under the mask is fine, and is zeroed
    obs = F.read_observation(drp_logcube(tmp_path / "nan_masked.fits", flux=flux, mask=masked))
    assert np.isfinite(obs.flux).all() and (obs.flux[2, 2] == 0).all()
    all_masked = np.full(flux.shape, F.NOCOV, np.int32)
    assert "every pixel is masked" in error_of(drp_logcube(tmp_path / "masked.fits", mask=all_masked))
    assert "every pixel is masked" in error_of(drp_logcube(tmp_path / "noivar.fits", ivar=np.zeros(flux.shape, np.float32)))
    short = wave[:4000]
    assert "WAVE has 4000 points" in error_of(drp_logcube(tmp_path / "short.fits", wave=short, flux=cube_values(4000)))
    linear = np.linspace(3621.6, 10353.8, 4563)
    assert "not the MaNGA grid" in error_of(drp_logcube(tmp_path / "linear.fits", wave=linear))
    ivar = np.ones((wave.size, NY - 1, NX), np.float32)
    assert "inconsistent shapes" in error_of(drp_logcube(tmp_path / "shape.fits", ivar=ivar))
    path = drp_logcube(tmp_path / "nomask.fits")
    with fits.open(path) as hdul:
        del hdul["MASK"]
        hdul.writeto(tmp_path / "nomask2.fits")
    assert "no MASK extension" in error_of(tmp_path / "nomask2.fits")


# ---------------------------------------------------------------- CALIFA
def test_califa_pipeline_cube_air_to_vacuum_and_units(tmp_path):
    badpix = np.zeros((1877, NY, NX), np.uint8)
    badpix[:100, 1, 2] = 1
    error = np.full((1877, NY, NX), 0.5, np.float32)
    error[5, 0, 0] = 0.0  # no error estimate: unusable, not infinite weight
    path = pipeline_califa(tmp_path / "NGC2253.V500.rscube.fits.gz", badpix=badpix, error=error)
    assert F.detect_format(path) == "califa"
    obs = F.read_observation(path)
    assert obs.format == "califa" and obs.id == "NGC2253" and obs.flux.shape == (NY, NX, 1877)
    np.testing.assert_allclose(obs.wave, F.air_to_vacuum(3749.0 + 2.0 * np.arange(1877)))
    assert obs.wave[0] > 3749.0 + 1.0  # vacuum is ~1 Å redder than air here
    assert obs.flux[3, 4, 7] == pytest.approx(10 * (300 + 4 + 0.007 + 1), rel=1e-6)  # 1e-16 -> 1e-17 units
    assert obs.ivar[3, 4, 7] == pytest.approx(1 / (10 * 0.5) ** 2)
    assert obs.bad[1, 2, :100].all() and not obs.bad[1, 2, 100:].any() and obs.bad[0, 0, 5]
    assert obs.bad.sum() == 101 and (obs.ivar[obs.bad] == 0).all()
    assert obs.redshift == pytest.approx(3571.0 / C_KMS)
    assert obs.pixel_scale == pytest.approx(0.5, abs=1e-3)
    assert F.read_observation(path, catalogue=pd.DataFrame({"name": ["NGC2253"], "z": [0.0119]})).redshift == 0.0119


def test_califa_writer_round_trip_and_coverage_error(tmp_path):
    rng = np.random.default_rng(2)
    wave_air = F.califa_wave_air()
    flux = rng.normal(2.0, 0.1, (3, 4, wave_air.size)).astype(np.float32)
    error = np.full(flux.shape, 0.2, np.float32)
    badpix = np.zeros(flux.shape, np.uint8)
    badpix[0, 0] = 1
    path = tmp_path / "cube.fits"
    F.write_califa_cube(path, wave_air=wave_air, flux=flux, error=error, badpix=badpix,
                        header={"OBJECT": "UGC00005", "MED_VEL": 7300.0, "RA": 0.1, "DEC": -1.5})
    obs = F.read_califa_cube(path)
    assert obs.id == "UGC00005" and obs.meta["ra"] == 0.1 and obs.redshift == pytest.approx(7300.0 / C_KMS)
    np.testing.assert_allclose(obs.flux[1:], 10 * flux[1:], rtol=1e-6)
    assert obs.bad[0, 0].all() and obs.bad.sum() == wave_air.size
    short = pipeline_califa(tmp_path / "short.fits", n_wave=1800)
    assert "1877" in error_of(short)
    with pytest.raises(InputError, match="inconsistent shapes"):
        F.read_califa_cube(pipeline_califa(tmp_path / "bad.fits", error=np.ones((1877, NY, NX + 1), np.float32)))


# ---------------------------------------------------------------- spectra sets and SDSS
def test_dap_spectra_set_by_content(tmp_path):
    path, wave, flux, mask = dap_spectra(tmp_path / "spectra.dat")
    assert F.detect_format(path) == "spectra"
    obs = F.read_observation(path)
    assert obs.format == "spectra" and obs.flux.shape == (4, 300) and obs.n_spectra == 4
    np.testing.assert_allclose(obs.wave, wave)
    np.testing.assert_array_equal(obs.bad, mask != 0)
    np.testing.assert_allclose(obs.flux[2], flux[2])
    np.testing.assert_allclose(obs.redshift, np.linspace(0.01, 0.04, 4))
    assert obs.meta["sres"].shape == (4, 300)
    np.testing.assert_allclose(F.read_observation(path, redshift=0.02).redshift, np.full(4, 0.02))


def test_spectra_set_writer_round_trip_and_errors(tmp_path):
    wave = np.linspace(3600, 9000, 200)
    flux = np.random.default_rng(3).normal(1, 0.1, (3, 200))
    mask = np.zeros((3, 200), int)
    mask[2, -10:] = 4
    F.write_spectra_set(tmp_path / "set.fits", wave=wave, flux=flux, ivar=np.ones((3, 200)), mask=mask)
    obs = F.read_spectra_set(tmp_path / "set.fits")
    assert np.isnan(obs.redshift).all() and obs.redshift.shape == (3,) and obs.bad.sum() == 10
    np.testing.assert_allclose(obs.flux[0], flux[0], rtol=1e-6)
    F.write_spectra_set(tmp_path / "nan.fits", wave=wave, flux=np.full((3, 200), np.nan), ivar=np.ones((3, 200)), mask=0 * mask)
    assert "NaN/inf" in error_of(tmp_path / "nan.fits")
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(wave[:150], name="WAVE"), fits.ImageHDU(flux, name="FLUX"),
                         fits.ImageHDU(np.ones((3, 200)), name="IVAR"), fits.ImageHDU(mask, name="MASK")])
    hdus.writeto(tmp_path / "mismatch.fits")
    assert "inconsistent shapes" in error_of(tmp_path / "mismatch.fits")


def test_sdss_spec_file(tmp_path):
    path, loglam, flux, ivar, and_mask = dr16_spec(tmp_path / "spec-0266-51602-0003.fits")
    assert F.detect_format(path) == "sdss"
    obs = F.read_observation(path)
    assert obs.format == "sdss" and obs.id == "spec-0266-51602-0003" and obs.flux.shape == (1, loglam.size)
    np.testing.assert_allclose(obs.wave, 10.0 ** loglam.astype(np.float64))
    assert obs.bad[0, 10] and obs.bad[0, 20:25].all() and obs.bad.sum() == 6
    assert obs.redshift.tolist() == [pytest.approx(0.0213)]
    assert obs.meta["class"] == "GALAXY" and obs.meta["ra"] == 146.7
    np.testing.assert_allclose(obs.flux[0, :10], flux[:10])


def test_sdss_writer_round_trip(tmp_path):
    loglam = 3.58 + 1e-4 * np.arange(500)
    flux = np.linspace(5, 6, 500)
    F.write_sdss_spec(tmp_path / "s.fits", loglam=loglam, flux=flux, ivar=np.ones(500), and_mask=np.zeros(500, int),
                      z=0.1, plate=1000, mjd=52000, fiber=12, ra=10.0, dec=1.0)
    obs = F.read_sdss_spec(tmp_path / "s.fits")
    assert obs.id == "spec-1000-52000-0012" and obs.redshift[0] == pytest.approx(0.1)
    np.testing.assert_allclose(obs.flux[0], flux, rtol=1e-6)
    np.testing.assert_allclose(obs.wave, 10.0**loglam, rtol=1e-6)


# ---------------------------------------------------------------- broken files
def test_broken_files_give_one_line_errors(tmp_path):
    junk = tmp_path / "junk.fits"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    assert "not a FITS file" in error_of(junk)
    gz_junk = tmp_path / "junk.fits.gz"
    gz_junk.write_bytes(gzip.compress(b"this is not FITS " * 200))
    assert "not a FITS file" in error_of(gz_junk)
    assert "no such file" in error_of(tmp_path / "missing.fits")

    whole = drp_logcube(tmp_path / "cube.fits.gz")
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.fits.gz"
    truncated.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt gzip" in error_of(truncated)
    with pytest.raises(InputError, match="truncated"):
        F.detect_format(truncated)
    plain = drp_logcube(tmp_path / "cube.fits").read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(plain[: len(plain) // 2])  # inside FLUX/IVAR data
    assert "truncated FITS file" in error_of(cut)
    cut.write_bytes(plain[: len(plain) - 4000])  # inside the header of a trailing image
    assert "bytes after the last complete HDU" in error_of(cut)

    other = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4))), fits.ImageHDU(np.ones(3), name="SOMETHING")]).writeto(other)
    message = error_of(other)
    assert "none of manga, califa, spectra-set, sdss" in message and "SOMETHING" in message and "PRIMARY 4x4" in message


# ---------------------------------------------------------------- catalogues
@pytest.fixture
def catalogue_frame():
    return pd.DataFrame({"plateifu": ["8485-1901", "7443-12703", "9000-3701"], "nsa_z": [0.0365, 0.0413, 0.02],
                         "nsa_elpetro_mass": [3.1e10, 5.0e9, 1e11], "nsa_sersic_n": [1.2, 4.0, 2.5],
                         "morphology": ["E ", " Sa", "Sb"]})


def test_catalogue_formats_read_alike(tmp_path, catalogue_frame):
    paths = {"fits": tmp_path / "cat.fits", "vot": tmp_path / "cat.xml", "csv": tmp_path / "cat.csv",
             "tsv": tmp_path / "cat.txt", "parquet": tmp_path / "cat.dat"}  # names say nothing: content decides
    Table.from_pandas(catalogue_frame).write(paths["fits"])
    Table.from_pandas(catalogue_frame).write(paths["vot"], format="votable")
    paths["csv"].write_text("# drpall extract\n" + catalogue_frame.to_csv(index=False))
    catalogue_frame.to_csv(paths["tsv"], sep="\t", index=False)
    catalogue_frame.to_parquet(paths["parquet"])
    mapping = {"nsa_elpetro_mass": "mstar", "nsa_sersic_n": "sersic_n"}
    for kind, path in paths.items():
        frame = F.read_catalogue(path, key="plateifu", column_map=mapping)
        assert list(frame.columns) == ["plateifu", "nsa_z", "mstar", "sersic_n", "morphology"], kind
        assert frame["morphology"].tolist() == ["E", "Sa", "Sb"], kind  # padding stripped, str not bytes
        assert frame["plateifu"].tolist() == catalogue_frame["plateifu"].tolist(), kind
        np.testing.assert_allclose(frame["mstar"], catalogue_frame["nsa_elpetro_mass"], err_msg=kind)


def test_drpall_vector_columns_split_by_band(tmp_path):
    path = tmp_path / "drpall.fits"
    F.write_drpall(path, pd.DataFrame({"plateifu": ["  8485-1901", "1-2"], "nsa_z": [0.03, 0.1],
                                       "nsa_elpetro_absmag": [np.arange(7.0), np.arange(7.0) + 1]}))
    frame = F.read_catalogue(path, key="plateifu")
    assert frame["plateifu"].tolist() == ["8485-1901", "1-2"]  # FITS string padding stripped
    assert frame["nsa_elpetro_absmag_r"].tolist() == [4.0, 5.0] and "nsa_elpetro_absmag_F" in frame


def test_catalogue_errors_name_file_and_column(tmp_path, catalogue_frame, capsys):
    path = tmp_path / "cat.csv"
    catalogue_frame.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"cat\.csv: column 'log_mass' named in the column mapping is not in the table"):
        F.read_catalogue(path, key="plateifu", column_map={"log_mass": "mstar"})
    with pytest.raises(InputError, match=r"cat\.csv: key column 'galaxy_id' is not in the table; columns are \['plateifu'"):
        F.read_catalogue(path, key="galaxy_id")
    catalogue_frame.iloc[[0, 0, 1]].to_csv(path, index=False)
    with pytest.raises(InputError, match="duplicate values"):
        F.read_catalogue(path, key="plateifu")
    # A catalogue without redshifts is fine to pass to a reader (z stays the file's), but not as --drpall.
    cube = drp_logcube(tmp_path / "c.fits")
    assert np.isnan(F.read_observation(cube, catalogue=pd.DataFrame({"plateifu": ["8485-1901"], "mass": [1.0]})).redshift)
    (tmp_path / "noz.csv").write_text("plateifu,mass\n8485-1901,1.0\n")
    assert F.main([str(cube), "--drpall", str(tmp_path / "noz.csv")]) == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path / 'noz.csv'}: needs an id column")


def test_catalogue_key_given_to_read_catalogue_finds_redshift(tmp_path):
    path = tmp_path / "props.csv"
    pd.DataFrame({"survey_name": ["NGC2253"], "zhelio": [0.0118]}).to_csv(path, index=False)
    frame = F.read_catalogue(path, key="califa_id", column_map={"survey_name": "califa_id", "zhelio": "z"})
    cube = pipeline_califa(tmp_path / "cube.fits")
    assert F.read_observation(cube, catalogue=frame).redshift == 0.0118


# ---------------------------------------------------------------- inspect CLI
def test_inspect_batch_continues_past_a_bad_file(tmp_path, capsys):
    cube = drp_logcube(tmp_path / "cube.fits")
    spectra, *_ = dap_spectra(tmp_path / "set.fits")
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    drpall = tmp_path / "drpall.csv"
    pd.DataFrame({"plateifu": ["8485-1901"], "nsa_z": [0.0365]}).to_csv(drpall, index=False)
    code = F.main([str(cube), str(bad), str(spectra), "--drpall", str(drpall)])
    out, err = capsys.readouterr()
    assert code != 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["format"] for r in rows] == ["manga", "spectra"]
    assert rows[0] == {**rows[0], "id": "8485-1901", "n_spectra": NY * NX, "shape": [NY, NX, 4563], "n_wave": 4563,
                       "redshift": 0.0365, "bad_fraction": 0.0}
    assert rows[0]["wave_min"] == pytest.approx(3621.6, abs=0.05) and rows[0]["wave_max"] == pytest.approx(10353.8, abs=0.05)
    assert rows[1]["redshift"] == pytest.approx([0.01, 0.02, 0.03, 0.04]) and rows[1]["bad_fraction"] == pytest.approx(50 / 1200)
    assert err.strip().startswith(f"{bad}: not a FITS file")
    assert F.main([str(cube)]) == 0


def test_inspect_command_line(tmp_path):
    path = pipeline_califa(tmp_path / "cube.fits")
    result = subprocess.run([sys.executable, "-m", "precompute", "inspect", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["format"] == "califa" and row["id"] == "NGC2253" and row["shape"] == [NY, NX, 1877]
    assert row["redshift"] == pytest.approx(3571.0 / C_KMS)
    missing = subprocess.run([sys.executable, "-m", "precompute", "inspect", str(tmp_path / "nope.fits")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and missing.stdout == "" and "nope.fits: no such file" in missing.stderr
