"""Opening FITS files safely: every way a file can be broken becomes one InputError naming the file.

astropy silently stops listing HDUs at the point where a gzip stream ends early, and only warns about a
truncated uncompressed file, so both are checked here rather than left to surface as a confusing
"extension not found" later.
"""
from __future__ import annotations

import gzip
import io
import re
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from ..observation import InputError

GZIP_MAGIC = b"\x1f\x8b"


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a file")


def _read_start(path: Path, n: int) -> bytes:
    """The first n raw bytes. Any reason the file cannot be opened (no read permission, an I/O error) is one
    InputError naming it, so a batch reports that file and goes on."""
    _check_exists(path)
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as err:
        raise InputError(path, f"cannot be read ({(err.strerror or _one_line(err)).lower()})") from None


def read_head(path: Path, n: int = 2880) -> bytes:
    """First n bytes of the file's content, decompressing gzip, for recognising a format by content."""
    head = _read_start(path, n)
    if head[:2] == GZIP_MAGIC:
        try:
            with gzip.open(path) as g:
                head = g.read(n)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(path, f"truncated or corrupt gzip file ({err})") from None
    return head


@contextmanager
def open_fits(path):
    """Open a FITS file (optionally gzip-compressed) with all HDUs listed; closes it on exit.

    A gzip file is decompressed in one pass into memory: gzip's own check then catches truncation, and
    astropy reads each extension without re-decompressing the stream from the start.
    """
    path = Path(path)
    compressed = _read_start(path, 2) == GZIP_MAGIC
    try:
        if compressed:
            with gzip.open(path) as g:
                source = io.BytesIO(g.read())
        else:
            source = path
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AstropyWarning)
            hdul = fits.open(source, memmap=not compressed, lazy_load_hdus=False)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(path, f"truncated or corrupt gzip file ({err})") from None
    except (OSError, ValueError, fits.VerifyError) as err:
        raise InputError(path, f"not a FITS file or corrupt ({_one_line(err)})") from None
    try:
        for w in caught:
            if "truncated" in str(w.message):
                raise InputError(path, f"truncated FITS file ({w.message})")
        _check_tail(hdul, source, path)
        yield hdul
    finally:
        hdul.close()


def _check_tail(hdul, source, path: Path) -> None:
    """A file cut inside a later HDU's header leaves bytes astropy skips without a word: report them.

    Trailing zero or blank padding, which some writers add, is accepted.
    """
    info = hdul.fileinfo(len(hdul) - 1)
    end = info["datLoc"] + info["datSpan"]
    if isinstance(source, io.BytesIO):
        tail = source.getbuffer()[end:].tobytes()
    else:
        with open(source, "rb") as f:
            f.seek(end)
            tail = f.read()
    if tail.strip(b"\0 "):
        raise InputError(path, f"truncated or corrupt FITS file: {len(tail)} bytes after the last complete HDU "
                               f"{hdul[-1].name or len(hdul) - 1} cannot be read")


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def hdu_names(hdul) -> list[str]:
    return [h.name.upper() for h in hdul]


def describe_hdus(hdul) -> str:
    """'[PRIMARY, FLUX 4563x6x6, ...]': names with their data shapes (numpy order), for error messages."""
    parts = []
    for h in hdul:
        naxis = h.header.get("NAXIS", 0)
        dims = "x".join(str(h.header.get(f"NAXIS{i}", "?")) for i in range(naxis, 0, -1))
        kind = "table " if isinstance(h, (fits.BinTableHDU, fits.TableHDU)) else ""
        parts.append(f"{h.name or '?'} {kind}{dims}".strip() if naxis else h.name or "?")
    return "[" + ", ".join(parts) + "]"


def extension(hdul, name: str, path):
    """The HDU called name, or a clear error listing what the file has."""
    if name not in hdu_names(hdul):
        raise InputError(path, f"no {name} extension; HDUs are {describe_hdus(hdul)}")
    return hdul[name]


def image(hdul, name: str, path, dtype) -> np.ndarray:
    """Data of an image extension as a native-byte-order copy (FITS is big-endian; torch refuses that)."""
    hdu = extension(hdul, name, path)
    try:
        data = hdu.data
    except (OSError, EOFError, ValueError, TypeError, zlib.error) as err:
        raise InputError(path, f"cannot read {name} data, file truncated or corrupt ({_one_line(err)})") from None
    if data is None:
        raise InputError(path, f"{name} extension has no data")
    return np.array(data, dtype=dtype)


def table(hdul, name_or_index, path):
    hdu = hdul[name_or_index] if isinstance(name_or_index, int) else extension(hdul, name_or_index, path)
    try:
        data = hdu.data
    except (OSError, EOFError, ValueError, TypeError, zlib.error) as err:
        raise InputError(path, f"cannot read table {hdu.name}, file truncated or corrupt ({_one_line(err)})") from None
    if data is None or not hasattr(data, "columns"):
        raise InputError(path, f"{hdu.name} is not a table")
    return data


def column(data, name: str, hdu_name: str, path, dtype=np.float64) -> np.ndarray:
    """A table column by case-insensitive name (SDSS mixes lower- and upper-case names)."""
    names = {n.lower(): n for n in data.columns.names}
    if name.lower() not in names:
        raise InputError(path, f"{hdu_name} table has no column {name!r}; columns are {data.columns.names}")
    return np.array(data[names[name.lower()]], dtype=dtype)


def pixel_scale_arcsec(header) -> float | None:
    """Spaxel size in arcsec from the celestial WCS of a header, or None when it has none."""
    if not any(k in header for k in ("CD1_1", "CDELT1", "CD2_2", "CDELT2")):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:  # astropy.wcs raises many types for malformed headers; treat all as "no WCS"
            return None
    if not wcs.has_celestial:
        return None
    return round(float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0), 6)


def header_value(header, key: str, default=None):
    """A header value with string padding removed, or default when absent or blank."""
    value = header.get(key, default)
    if isinstance(value, str):
        value = value.strip()
        return value if value else default
    return value


def file_stem(path) -> str:
    """File name without compression and FITS suffixes (and CALIFA's '.V500.rscube'-like tail)."""
    name = Path(path).name
    name = re.sub(r"\.(gz|bz2|fz)$", "", name, flags=re.I)
    name = re.sub(r"\.(fits|fit|fts)$", "", name, flags=re.I)
    return re.sub(r"\.V\d+\.\w*cube$", "", name, flags=re.I)


def finish(obs):
    """Common last step of every reader: non-positive ivar is bad, check the data, then zero bad pixels.

    A negative inverse variance is invalid (no error estimate could give it): those pixels are masked like
    ivar = 0, and the ones not already masked are counted per spectrum in ``meta['negative_ivar']`` so that
    inspect and prepare report them rather than drop them silently.
    The check runs before zeroing so NaN/inf in unmasked pixels is reported, not hidden; zeroing afterwards
    keeps NaNs of masked pixels from leaking into resampling downstream.
    """
    with np.errstate(invalid="ignore"):
        negative = (obs.ivar < 0) & ~obs.bad
    if negative.any():
        obs.meta["negative_ivar"] = negative.sum(axis=-1)
    obs.bad |= obs.ivar <= 0
    obs.validate(obs.meta.get("path"))
    obs.flux[obs.bad] = 0.0
    obs.ivar[obs.bad] = 0.0
    return obs
