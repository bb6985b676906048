"""Recognise a spectral file by its HDUs and header keywords (never its name) and read it."""
from __future__ import annotations

from astropy.io import fits

from ..observation import InputError, Observation
from .califa import _read_califa
from .fitsfile import describe_hdus, hdu_names, open_fits
from .manga import _read_manga
from .spectra import _read_sdss, _read_spectra_set

READERS = {"manga": _read_manga, "califa": _read_califa, "spectra": _read_spectra_set, "sdss": _read_sdss}


def detect_format(path) -> str:
    """'manga', 'califa', 'spectra' or 'sdss', from the file's content; InputError for anything else."""
    with open_fits(path) as hdul:
        return _detect(hdul, path)


def _detect(hdul, path) -> str:
    names = hdu_names(hdul)
    if "FLUX" in names and "WAVE" in names:
        # A cube is a MaNGA LOGCUBE; 1-D/2-D FLUX is a set of spectra.
        return "manga" if hdul["FLUX"].header.get("NAXIS") == 3 else "spectra"
    first_table = hdul[1] if len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) else None
    if "COADD" in names or (first_table is not None and {"loglam", "flux"} <= {c.lower() for c in first_table.columns.names}):
        return "sdss"
    if hdul[0].header.get("NAXIS") == 3 and "ERROR" in names and "BADPIX" in names:
        return "califa"
    raise InputError(path, f"none of manga, califa, spectra-set, sdss: HDUs are {describe_hdus(hdul)}")


def read_observation(path, *, redshift=None, catalogue=None) -> Observation:
    """Read any supported spectral file into an Observation (wavelength last, vacuum Å, 1e-17 flux units).

    Redshift: ``redshift=`` if given, else the catalogue's (DataFrame or path; drpall ``plateifu``/``nsa_z``
    or id/z columns) when it lists the object, else the file's own (CALIFA MED_VEL, SDSS Z, set Z), else NaN.
    """
    with open_fits(path) as hdul:
        return READERS[_detect(hdul, path)](hdul, path, redshift, catalogue)
