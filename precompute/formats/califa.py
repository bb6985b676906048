"""CALIFA / eCALIFA V500 cubes: flux in PRIMARY [1877, NY, NX], 1e-16 units, linear air wavelengths.

Readers hand back vacuum wavelengths and 1e-17 flux, like every other format, so one preparation serves all.
"""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..observation import InputError, Observation
from .catalogue import resolve_redshift
from .fitsfile import file_stem, finish, header_value, image, open_fits, pixel_scale_arcsec

# The V500 wavelength grid (air Å): CRVAL3 = 3749, CDELT3 = 2, 1877 points up to 7501 Å.
N_WAVE = 1877
WAVE_START = 3749.0
WAVE_STEP = 2.0
FLUX_TO_1E17 = 10.0  # CALIFA flux unit is 1e-16 erg/s/cm^2/Å; the project's is 1e-17
C_KMS = 299792.458


def vacuum_to_air(wave_vacuum) -> np.ndarray:
    """Air wavelength (Å) of vacuum wavelengths, IAU standard refractive index of Morton (2000, ApJS 130, 403)."""
    wave_vacuum = np.asarray(wave_vacuum, dtype=np.float64)
    s2 = (1.0e4 / wave_vacuum) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return wave_vacuum / n


def air_to_vacuum(wave_air) -> np.ndarray:
    """Vacuum wavelength (Å) of air wavelengths: the exact inverse of vacuum_to_air.

    The refractive index depends on the vacuum wavelength, so solve by fixed-point iteration; each step
    gains ~4 digits, three reach float64 precision in the optical.
    """
    wave_air = np.asarray(wave_air, dtype=np.float64)
    wave_vacuum = wave_air.copy()
    for _ in range(3):
        wave_vacuum = wave_vacuum + (wave_air - vacuum_to_air(wave_vacuum))
    return wave_vacuum


def califa_wave_air() -> np.ndarray:
    """The V500 wavelength grid (air Å)."""
    return WAVE_START + WAVE_STEP * np.arange(N_WAVE)


def read_califa_cube(path, *, redshift=None, catalogue=None) -> Observation:
    """Read a CALIFA/eCALIFA V500 cube. Redshift: ``redshift=``, else catalogue, else MED_VEL / c."""
    with open_fits(path) as hdul:
        return _read_califa(hdul, path, redshift, catalogue)


def _read_califa(hdul, path, redshift=None, catalogue=None) -> Observation:
    primary = hdul[0].header
    flux = image(hdul, "PRIMARY", path, np.float32)
    error = image(hdul, "ERROR", path, np.float32)
    badpix = image(hdul, "BADPIX", path, np.int16)
    if flux.ndim != 3:
        raise InputError(path, f"PRIMARY must be a cube [NWAVE, NY, NX], has shape {flux.shape}")
    if not (error.shape == badpix.shape == flux.shape):
        raise InputError(path, f"inconsistent shapes: PRIMARY {flux.shape}, ERROR {error.shape}, BADPIX {badpix.shape}")
    start, step = primary.get("CRVAL3"), primary.get("CDELT3", primary.get("CD3_3"))
    if start is None or step is None:
        raise InputError(path, "PRIMARY header lacks the wavelength keys CRVAL3 and CDELT3")
    start -= step * (primary.get("CRPIX3", 1.0) - 1.0)
    if flux.shape[0] != N_WAVE or abs(start - WAVE_START) > 0.01 or abs(step - WAVE_STEP) > 1e-4:
        raise InputError(path, f"wavelength axis has {flux.shape[0]} points from {start:g} Å in {step:g} Å steps; "
                               f"a V500 cube has {N_WAVE} points from {WAVE_START:g} Å in {WAVE_STEP:g} Å steps")

    name = header_value(primary, "OBJECT") or file_stem(path)
    # Convert to 1e-17 units; ivar = 1/err^2, 0 (bad) where err = 0. A negative error is as invalid as a
    # negative ivar, so it keeps its sign for finish() to mask and count; NaN is kept so validate reports it.
    error = error * FLUX_TO_1E17
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ivar = np.sign(error) / error**2
    ivar[error == 0] = 0.0
    med_vel = header_value(primary, "MED_VEL", np.nan)
    meta = {"path": str(path), "ra": header_value(primary, "RA", np.nan), "dec": header_value(primary, "DEC", np.nan),
            "object": name, "med_vel": med_vel}
    obs = Observation(
        id=name,
        format="califa",
        wave=air_to_vacuum(start + step * np.arange(flux.shape[0])),
        flux=np.ascontiguousarray(np.moveaxis(flux, 0, -1)) * np.float32(FLUX_TO_1E17),
        ivar=np.ascontiguousarray(np.moveaxis(ivar, 0, -1)),
        bad=np.moveaxis(badpix, 0, -1) != 0,
        redshift=resolve_redshift(name, float(med_vel) / C_KMS, redshift, catalogue, source=path),
        pixel_scale=pixel_scale_arcsec(primary),
        meta=meta,
    )
    return finish(obs)


def write_califa_cube(path, *, wave_air, flux, error, badpix, header: dict, errweight=None, fibcover=None,
                      pixel_scale: float = 0.5) -> None:
    """Write a V500 cube as the CALIFA pipeline does. flux/error/badpix are (ny, nx, n_wave), flux in 1e-16 units.

    ``header`` goes to PRIMARY (OBJECT, MED_VEL, RA, DEC, ...). ERRWEIGHT defaults to 1 (no covariance
    correction) and FIBCOVER to 1 where any pixel of a spaxel is good, else 0.
    """
    wave_air = np.asarray(wave_air, dtype=np.float64)
    flux, error = np.asarray(flux, np.float32), np.asarray(error, np.float32)
    badpix = np.asarray(badpix).astype(np.uint8)
    if flux.ndim != 3 or error.shape != flux.shape or badpix.shape != flux.shape or flux.shape[-1] != wave_air.size:
        raise ValueError(f"{path}: need flux, error, badpix of one shape (ny, nx, {wave_air.size}); got {flux.shape}, {error.shape}, {badpix.shape}")
    step = np.diff(wave_air)
    if not np.allclose(step, step[0], rtol=0, atol=1e-6 * step[0]):
        raise ValueError(f"{path}: CALIFA wavelengths must be linear (one CDELT3)")
    ny, nx = flux.shape[:2]
    errweight = np.ones_like(flux) if errweight is None else np.asarray(errweight, np.float32)
    if fibcover is None:
        fibcover = np.broadcast_to((badpix == 0).any(axis=-1, keepdims=True), badpix.shape)
    fibcover = np.asarray(fibcover, np.uint8)

    primary = fits.PrimaryHDU(np.moveaxis(flux, -1, 0))
    primary.header.update({
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CTYPE3": "AWAV", "CUNIT1": "deg", "CUNIT2": "deg",
        "CUNIT3": "Angstrom", "CRPIX1": (nx + 1) / 2.0, "CRPIX2": (ny + 1) / 2.0, "CRPIX3": 1.0,
        "CRVAL1": float(header.get("RA", 0.0)), "CRVAL2": float(header.get("DEC", 0.0)), "CRVAL3": wave_air[0],
        "CDELT1": -pixel_scale / 3600.0, "CDELT2": pixel_scale / 3600.0, "CDELT3": float(step[0]),
        "PIXTYPE": "FLUX", "UNITS": "10**(-16) erg s-1 cm-2 A-1",
    })
    for key, value in header.items():
        primary.header[key] = value
    hdus = [primary]
    for name, data in (("ERROR", error), ("ERRWEIGHT", errweight), ("BADPIX", badpix), ("FIBCOVER", fibcover)):
        hdus.append(fits.ImageHDU(np.ascontiguousarray(np.moveaxis(data, -1, 0)), name=name))
    fits.HDUList(hdus).writeto(path, overwrite=True)
