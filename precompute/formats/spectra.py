"""Sets of single spectra: a spectra-set FITS (WAVE/FLUX/IVAR/MASK[/SRES/Z], as the MaNGA DAP test spectra)
and SDSS spec-<plate>-<mjd>-<fiber>.fits files (COADD + SPECOBJ tables). Both read as (n_spectra, n_wave)."""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..observation import InputError, Observation
from .catalogue import resolve_redshift
from .fitsfile import column, file_stem, finish, hdu_names, header_value, image, open_fits, table


def read_spectra_set(path, *, redshift=None, catalogue=None) -> Observation:
    """Read a spectra-set FITS. MASK non-zero = bad; Z gives one redshift per spectrum (NaN without it)."""
    with open_fits(path) as hdul:
        return _read_spectra_set(hdul, path, redshift, catalogue)


def _read_spectra_set(hdul, path, redshift=None, catalogue=None) -> Observation:
    names = hdu_names(hdul)
    wave = image(hdul, "WAVE", path, np.float64)
    flux = image(hdul, "FLUX", path, np.float32)
    ivar = image(hdul, "IVAR", path, np.float32)
    mask = image(hdul, "MASK", path, np.int64) if "MASK" in names else np.zeros(flux.shape, np.int64)
    flux, ivar, mask = (np.atleast_2d(a) for a in (flux, ivar, mask))  # one spectrum may be stored 1-D
    if wave.ndim != 1 or flux.ndim != 2:
        raise InputError(path, f"need WAVE [NW] and FLUX [N, NW]; got WAVE {wave.shape}, FLUX {flux.shape}")
    if not (ivar.shape == mask.shape == flux.shape and flux.shape[1] == wave.size):
        raise InputError(path, f"inconsistent shapes: FLUX {flux.shape}, IVAR {ivar.shape}, MASK {mask.shape}, WAVE {wave.shape}")
    n = flux.shape[0]
    z_file = np.full(n, np.nan)
    if "Z" in names:
        z_file = image(hdul, "Z", path, np.float64).ravel()
        if z_file.shape != (n,):
            raise InputError(path, f"Z has {z_file.size} values for {n} spectra")
    name = header_value(hdul[0].header, "OBJECT") or file_stem(path)
    meta = {"path": str(path), "ra": header_value(hdul[0].header, "RA", np.nan), "dec": header_value(hdul[0].header, "DEC", np.nan)}
    if "SRES" in names:
        sres = np.atleast_2d(image(hdul, "SRES", path, np.float64))
        if sres.shape != flux.shape:
            raise InputError(path, f"SRES shape {sres.shape} differs from FLUX shape {flux.shape}")
        meta["sres"] = sres
    obs = Observation(
        id=name, format="spectra", wave=wave, flux=flux, ivar=ivar, bad=mask != 0,
        redshift=resolve_redshift(name, z_file, redshift, catalogue, n_spectra=n, source=path), meta=meta,
    )
    return finish(obs)


def write_spectra_set(path, *, wave, flux, ivar, mask, z=None, sres=None) -> None:
    """Write (n, n_wave) spectra as WAVE/FLUX/IVAR/MASK image extensions, plus SRES and Z when given."""
    wave = np.asarray(wave, np.float64)
    flux, ivar, mask = np.asarray(flux, np.float32), np.asarray(ivar, np.float32), np.asarray(mask, np.int32)
    if flux.ndim != 2 or ivar.shape != flux.shape or mask.shape != flux.shape or flux.shape[1] != wave.size:
        raise ValueError(f"{path}: need flux, ivar, mask of one shape (n, {wave.size}); got {flux.shape}, {ivar.shape}, {mask.shape}")
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(wave, name="WAVE"), fits.ImageHDU(flux, name="FLUX"),
            fits.ImageHDU(ivar, name="IVAR"), fits.ImageHDU(mask, name="MASK")]
    hdus[1].header["BUNIT"] = "Angstrom"
    hdus[2].header["BUNIT"] = "1E-17 erg/s/cm^2/Ang"
    if sres is not None:
        hdus.append(fits.ImageHDU(np.asarray(sres, np.float64), name="SRES"))
    if z is not None:
        hdus.append(fits.ImageHDU(np.asarray(z, np.float64).reshape(flux.shape[0]), name="Z"))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def read_sdss_spec(path, *, redshift=None, catalogue=None) -> Observation:
    """Read an SDSS spec-PLATE-MJD-FIBER.fits as a set of one spectrum. Bad: and_mask != 0 or ivar <= 0."""
    with open_fits(path) as hdul:
        return _read_sdss(hdul, path, redshift, catalogue)


def _read_sdss(hdul, path, redshift=None, catalogue=None) -> Observation:
    # DR8+ names the table COADD; older reductions leave HDU 1 unnamed.
    coadd_name = 1 if "COADD" not in hdu_names(hdul) and len(hdul) > 1 else "COADD"
    coadd = table(hdul, coadd_name, path)
    present = {c.lower() for c in coadd.columns.names}
    loglam = column(coadd, "loglam", "COADD", path)
    flux = column(coadd, "flux", "COADD", path, np.float32)
    ivar = column(coadd, "ivar", "COADD", path, np.float32)
    and_mask = column(coadd, "and_mask", "COADD", path, np.int64) if "and_mask" in present else np.zeros(loglam.shape, np.int64)

    primary = hdul[0].header
    specobj = table(hdul, "SPECOBJ", path) if "SPECOBJ" in hdu_names(hdul) else None
    info = {k.lower(): _scalar(specobj[k]) for k in specobj.columns.names} if specobj is not None else {}
    plate = header_value(primary, "PLATEID", info.get("plate"))
    mjd, fiber = header_value(primary, "MJD", info.get("mjd")), header_value(primary, "FIBERID", info.get("fiberid"))
    name = f"spec-{int(plate):04d}-{int(mjd):05d}-{int(fiber):04d}" if None not in (plate, mjd, fiber) else file_stem(path)
    meta = {"path": str(path), "ra": info.get("plug_ra", header_value(primary, "PLUG_RA", np.nan)),
            "dec": info.get("plug_dec", header_value(primary, "PLUG_DEC", np.nan))}
    meta.update({k: info[k] for k in ("z_err", "class", "subclass", "vdisp") if k in info})
    if "wdisp" in present:
        meta["wdisp"] = column(coadd, "wdisp", "COADD", path)
    obs = Observation(
        id=name, format="sdss", wave=10.0**loglam, flux=flux[None], ivar=ivar[None], bad=(and_mask != 0)[None],
        redshift=resolve_redshift(name, info.get("z", np.nan), redshift, catalogue, n_spectra=1, source=path), meta=meta,
    )
    return finish(obs)


def _scalar(values):
    """First row of a SPECOBJ column as a plain Python value (str without padding)."""
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return value.strip()
    return value.item() if hasattr(value, "item") and np.ndim(value) == 0 else value


def write_sdss_spec(path, *, loglam, flux, ivar, and_mask, z, or_mask=None, wdisp=None, sky=None, model=None,
                    plate: int = 0, mjd: int = 0, fiber: int = 0, ra: float = 0.0, dec: float = 0.0,
                    z_err: float = 0.0, spec_class: str = "GALAXY") -> None:
    """Write a DR8+ spec file: PRIMARY header, COADD table (lower-case columns), SPECOBJ table (upper-case)."""
    loglam = np.asarray(loglam, np.float32)
    n = loglam.size
    zeros = np.zeros(n, np.float32)
    columns = [
        ("flux", "E", flux), ("loglam", "E", loglam), ("ivar", "E", ivar), ("and_mask", "J", and_mask),
        ("or_mask", "J", and_mask if or_mask is None else or_mask), ("wdisp", "E", zeros if wdisp is None else wdisp),
        ("sky", "E", zeros if sky is None else sky), ("model", "E", zeros if model is None else model),
    ]
    for name, _, values in columns:
        if np.shape(values) != (n,):
            raise ValueError(f"{path}: {name} has shape {np.shape(values)}, loglam has {n} points")
    coadd = fits.BinTableHDU.from_columns([fits.Column(name=c, format=f, array=np.asarray(v)) for c, f, v in columns], name="COADD")
    specobj = fits.BinTableHDU.from_columns([
        fits.Column(name="PLATE", format="J", array=[plate]), fits.Column(name="MJD", format="J", array=[mjd]),
        fits.Column(name="FIBERID", format="J", array=[fiber]), fits.Column(name="Z", format="E", array=[z]),
        fits.Column(name="Z_ERR", format="E", array=[z_err]), fits.Column(name="CLASS", format="6A", array=[spec_class]),
        fits.Column(name="SUBCLASS", format="21A", array=[""]), fits.Column(name="PLUG_RA", format="D", array=[ra]),
        fits.Column(name="PLUG_DEC", format="D", array=[dec]), fits.Column(name="VDISP", format="E", array=[0.0]),
    ], name="SPECOBJ")
    primary = fits.PrimaryHDU()
    primary.header.update({"PLATEID": plate, "MJD": mjd, "FIBERID": fiber, "PLUG_RA": ra, "PLUG_DEC": dec})
    fits.HDUList([primary, coadd, specobj]).writeto(path, overwrite=True)
