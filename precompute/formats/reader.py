"""Recognise a spectral file by its HDUs and header keywords (never its name) and read it."""
from __future__ import annotations

from astropy.io import fits

from ..observation import InputError, Observation
from .califa import _read_califa
from .fitsfile import describe_hdus, hdu_names, open_fits
from .manga import _read_manga
from .spectra import _read_sdss, _read_spectra_set

# The extensions a cube cannot be read without, in the order its pipeline writes them.
MANGA_EXTENSIONS = ("FLUX", "IVAR", "MASK", "WAVE")
CALIFA_EXTENSIONS = ("PRIMARY", "ERROR", "BADPIX")
READERS = {"manga": _read_manga, "califa": _read_califa, "spectra": _read_spectra_set, "sdss": _read_sdss}


def detect_format(path) -> str:
    """'manga', 'califa', 'spectra' or 'sdss', from the file's content; InputError for anything else."""
    with open_fits(path) as hdul:
        return _detect(hdul, path)


def _detect(hdul, path) -> str:
    names = hdu_names(hdul)
    if "FLUX" in names and hdul["FLUX"].header.get("NAXIS") == 3 and ("WAVE" in names or "IVAR" in names):
        # A FLUX cube with its IVAR or WAVE is a MaNGA LOGCUBE
        _check_complete(hdul, path, "MaNGA LOGCUBE", MANGA_EXTENSIONS)
        return "manga"
    if "FLUX" in names and "WAVE" in names:  # 1-D/2-D FLUX is a set of spectra
        return "spectra"
    first_table = hdul[1] if len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) else None
    if "COADD" in names or (first_table is not None and {"loglam", "flux"} <= {c.lower() for c in first_table.columns.names}):
        return "sdss"
    if hdul[0].header.get("NAXIS") == 3 and "ERROR" in names:
        _check_complete(hdul, path, "CALIFA V500 cube", CALIFA_EXTENSIONS)
        return "califa"
    raise InputError(path, f"none of manga, califa, spectra-set, sdss: HDUs are {describe_hdus(hdul)}")


def _check_complete(hdul, path, layout: str, order: tuple[str, ...]) -> None:
    """A file recognised by its first extensions whose later ones are all missing was cut (cleanly, at an HDU
    boundary, so nothing else shows it) or written incompletely: say so, rather than "unknown format". One
    missing between present ones is left to the reader's "no ... extension"."""
    names = hdu_names(hdul)
    n_leading = next((i for i, name in enumerate(order) if name not in names), len(order))
    missing = order[n_leading:]
    if missing and not any(name in names for name in missing):
        raise InputError(path, f"{layout} without its {', '.join(missing)} extension{'s' if len(missing) > 1 else ''}"
                               f": the file ends after {hdul[-1].name or len(hdul) - 1}, truncated or incompletely "
                               f"written; HDUs are {describe_hdus(hdul)}")


def read_observation(path, *, redshift=None, catalogue=None) -> Observation:
    """Read any supported spectral file into an Observation (wavelength last, vacuum Å, 1e-17 flux units).

    Redshift: ``redshift=`` if given, else the catalogue's (DataFrame or path; drpall ``plateifu``/``nsa_z``
    or id/z columns) when it lists the object, else the file's own (CALIFA MED_VEL, SDSS Z, set Z), else NaN.
    """
    with open_fits(path) as hdul:
        return READERS[_detect(hdul, path)](hdul, path, redshift, catalogue)
