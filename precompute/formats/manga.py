"""MaNGA DRP LOGCUBE files and the drpall catalogue (SDSS DR15-DR17 data model).

A LOGCUBE stores FLUX/IVAR/MASK as FITS [NWAVE, NY, NX] (numpy order); the reader turns them into
Observation's wavelength-last (ny, nx, n_wave). Redshift is not in the cube: it comes from drpall.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from ..observation import InputError, Observation
from .catalogue import resolve_redshift
from .fitsfile import file_stem, finish, hdu_names, header_value, image, open_fits, pixel_scale_arcsec

# MANGA_DRP3PIXMASK bits used here.
NOCOV = 1 << 0  # no fibre covers the spaxel
LOWCOV = 1 << 1  # low coverage depth
DEADFIBER = 1 << 2  # a broken fibre contributed
FORESTAR = 1 << 3  # foreground star
DONOTUSE = 1 << 10  # not to be used for science

# The LOGCUBE wavelength grid: 4563 vacuum wavelengths, log10-spaced by 1e-4 from 3621.6 Å to 10353.8 Å.
N_WAVE = 4563
LOG10_WAVE_START = 3.5589
DLOG10_WAVE = 1.0e-4
PIXEL_SCALE = 0.5  # arcsec per spaxel

PRIMARY_KEYS = ("PLATEIFU", "MANGAID", "OBJRA", "OBJDEC", "IFURA", "IFUDEC", "DRP3QUAL", "EBVGAL")


def manga_wave() -> np.ndarray:
    """The LOGCUBE wavelength grid (vacuum Å)."""
    return 10.0 ** (LOG10_WAVE_START + DLOG10_WAVE * np.arange(N_WAVE))


def manga_bad(mask) -> np.ndarray:
    """Pixels a science analysis must skip: no coverage, or flagged DONOTUSE by the pipeline."""
    return (np.asarray(mask).astype(np.int64) & (NOCOV | DONOTUSE)) != 0


def read_manga_cube(path, *, redshift=None, catalogue=None) -> Observation:
    """Read a MaNGA LOGCUBE (.fits or .fits.gz). Redshift: ``redshift=``, else drpall ``nsa_z``, else NaN."""
    with open_fits(path) as hdul:
        return _read_manga(hdul, path, redshift, catalogue)


def _read_manga(hdul, path, redshift=None, catalogue=None) -> Observation:
    wave = image(hdul, "WAVE", path, np.float64)
    flux = image(hdul, "FLUX", path, np.float32)
    ivar = image(hdul, "IVAR", path, np.float32)
    mask = image(hdul, "MASK", path, np.int64)
    if flux.ndim != 3:
        raise InputError(path, f"FLUX must be a cube [NWAVE, NY, NX], has shape {flux.shape}")
    if not (ivar.shape == mask.shape == flux.shape and wave.shape == flux.shape[:1]):
        raise InputError(path, f"inconsistent shapes: FLUX {flux.shape}, IVAR {ivar.shape}, MASK {mask.shape}, WAVE {wave.shape}")
    _check_wave(wave, path)

    primary = hdul[0].header
    plateifu = header_value(primary, "PLATEIFU") or _plateifu_from_name(path)
    ny, nx = flux.shape[1:]
    images = {}
    for band in "gri":
        if f"{band.upper()}IMG" in hdu_names(hdul):
            img = image(hdul, f"{band.upper()}IMG", path, np.float32)
            if img.shape != (ny, nx):
                raise InputError(path, f"{band.upper()}IMG shape {img.shape} differs from the cube's spatial shape {(ny, nx)}")
            images[band] = img

    meta = {"path": str(path), "ra": header_value(primary, "OBJRA", np.nan), "dec": header_value(primary, "OBJDEC", np.nan)}
    meta.update({k.lower(): header_value(primary, k) for k in PRIMARY_KEYS if k in primary})
    for name in ("SPECRES", "SPECRESD", "REDCORR"):
        if name in hdu_names(hdul):
            values = image(hdul, name, path, np.float64)
            if values.shape == wave.shape:  # DR15 stores some as per-spaxel cubes; only the 1-D form is kept
                meta[name.lower()] = values

    mask = np.moveaxis(mask, 0, -1)
    obs = Observation(
        id=plateifu,
        format="manga",
        wave=wave,
        flux=np.ascontiguousarray(np.moveaxis(flux, 0, -1)),
        ivar=np.ascontiguousarray(np.moveaxis(ivar, 0, -1)),
        bad=manga_bad(mask),
        redshift=resolve_redshift(plateifu, np.nan, redshift, catalogue, source=path),
        pixel_scale=pixel_scale_arcsec(hdul["FLUX"].header) or PIXEL_SCALE,
        images=images,
        foreground_star=((mask & FORESTAR) != 0).any(axis=-1),
        meta=meta,
    )
    return finish(obs)


def _check_wave(wave: np.ndarray, path) -> None:
    expected = f"a MaNGA LOGCUBE has {N_WAVE} log-spaced points 3621.6-10353.8 Å"
    if wave.size != N_WAVE:
        raise InputError(path, f"WAVE has {wave.size} points; {expected}")
    with np.errstate(invalid="ignore", divide="ignore"):
        log_wave = np.log10(wave)
    if not np.all(np.isfinite(log_wave)) or abs(log_wave[0] - LOG10_WAVE_START) > DLOG10_WAVE or np.max(np.abs(np.diff(log_wave) - DLOG10_WAVE)) > 1e-6:
        raise InputError(path, f"WAVE runs {wave[0]:.1f}-{wave[-1]:.1f} Å and is not the MaNGA grid; {expected}")


def _plateifu_from_name(path) -> str:
    match = re.search(r"manga-(\d+-\d+)", str(path))
    return match.group(1) if match else file_stem(path)


def _celestial_cards(ny: int, nx: int, ra: float, dec: float, scale: float) -> dict:
    """TAN projection centred on the IFU, north up, east left, as the DRP writes it."""
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRPIX1": (nx + 1) / 2.0, "CRPIX2": (ny + 1) / 2.0, "CRVAL1": float(ra), "CRVAL2": float(dec),
        "CD1_1": -scale / 3600.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": scale / 3600.0,
    }


def write_manga_cube(path, *, wave, flux, ivar, mask, header: dict, images: dict | None = None, specres=None,
                     redcorr=None, pixel_scale: float = PIXEL_SCALE) -> None:
    """Write a LOGCUBE in the DRP layout. flux/ivar/mask are (ny, nx, n_wave); a .gz path is compressed.

    ``header`` goes to PRIMARY (PLATEIFU, MANGAID, OBJRA, OBJDEC, IFURA, IFUDEC, ...); ``images`` maps
    'g', 'r', 'i', 'z' to (ny, nx) nanomaggies images written as GIMG...ZIMG.
    """
    wave = np.asarray(wave, dtype=np.float64)
    flux, ivar, mask = np.asarray(flux, np.float32), np.asarray(ivar, np.float32), np.asarray(mask, np.int32)
    if flux.ndim != 3 or ivar.shape != flux.shape or mask.shape != flux.shape or flux.shape[-1] != wave.size:
        raise ValueError(f"{path}: need flux, ivar, mask of one shape (ny, nx, {wave.size}); got {flux.shape}, {ivar.shape}, {mask.shape}")
    ny, nx = flux.shape[:2]
    primary = fits.PrimaryHDU()
    for key, value in header.items():
        primary.header[key] = value
    sky = _celestial_cards(ny, nx, header.get("IFURA", header.get("OBJRA", 0.0)),
                           header.get("IFUDEC", header.get("OBJDEC", 0.0)), pixel_scale)
    cube_cards = {**sky, "CTYPE3": "WAVE-LOG", "CUNIT3": "Angstrom", "CRPIX3": 1.0, "CRVAL3": wave[0],
                  "CD3_3": wave[1] - wave[0], "HDUCLAS1": "CUBE"}

    def cube(data, name, **cards):
        hdu = fits.ImageHDU(np.ascontiguousarray(np.moveaxis(data, -1, 0)), name=name)
        hdu.header.update({**cube_cards, **cards})
        return hdu

    hdus = [
        primary,
        cube(flux, "FLUX", BUNIT="1E-17 erg/s/cm^2/Ang/spaxel", HDUCLAS2="DATA", ERRDATA="IVAR", QUALDATA="MASK"),
        cube(ivar, "IVAR", BUNIT="1E-17 erg/s/cm^2/Ang/spaxel", HDUCLAS2="ERROR", HDUCLAS3="INVMSE"),
        cube(mask, "MASK", HDUCLAS2="QUALITY", HDUCLAS3="FLAG32BIT"),
        fits.ImageHDU(wave, name="WAVE"),
    ]
    for name, values in (("REDCORR", redcorr), ("SPECRES", specres)):
        if values is not None:
            hdus.append(fits.ImageHDU(np.asarray(values, np.float64), name=name))
    for band, img in (images or {}).items():
        hdu = fits.ImageHDU(np.asarray(img, np.float32), name=f"{band.upper()}IMG")
        hdu.header.update({**sky, "BUNIT": "nanomaggies/pixel"})
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)


def write_drpall(path, table: pd.DataFrame) -> None:
    """Write a drpall-like catalogue: one binary table extension MANGA. Cells holding arrays (e.g. the
    7-band nsa_elpetro_absmag) become vector columns, as in the real drpall."""
    columns = {}
    for name in table.columns:
        values = table[name].to_numpy()
        if values.dtype == object:
            if len(values) and isinstance(values[0], (list, tuple, np.ndarray)):
                values = np.stack([np.asarray(v, dtype=np.float64) for v in values])
            else:
                values = values.astype(str)
        columns[name] = values
    hdu = fits.BinTableHDU(Table(columns), name="MANGA")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
