"""Catalogues of galaxy properties: FITS binary tables, VOTable, CSV, Parquet, recognised by content.

Columns are renamed by a user mapping ``{name in the file: name we use}`` (the pandas ``rename`` direction),
so nothing downstream hard-codes a survey's column names. Vector columns (e.g. drpall's 7-band
``nsa_elpetro_absmag``) are split into one scalar column per element, named by band for the NSA's
F N u g r i z bands, so each band can colour the dashboard.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from ..observation import InputError
from .fitsfile import GZIP_MAGIC, open_fits, read_head

NSA_BANDS = ("F", "N", "u", "g", "r", "i", "z")
# Columns that identify an object and carry its redshift, tried in this order (drpall first).
KEY_COLUMNS = ("plateifu", "galaxy_id", "id", "name", "object")
REDSHIFT_COLUMNS = ("nsa_z", "z", "redshift")


def read_catalogue(path, *, key: str | None = None, column_map: dict | None = None) -> pd.DataFrame:
    """Read a catalogue table, rename its columns by ``column_map`` and check the key column.

    ``key`` names the identifier column after renaming (None: the id column beside the redshift, as for
    ``inspect --drpall``); its values become stripped strings (ids are strings everywhere, e.g. MaNGA
    plate-IFU) and must be unique. Cells of number columns that are not numbers are read as unknown and
    listed, one line per column, in ``frame.attrs['problems']`` (see ``_read_numbers``).
    """
    path = Path(path)
    frame = read_table(path)
    column_map = dict(column_map or {})
    missing = [c for c in column_map if c not in frame.columns]
    if missing:
        raise InputError(path, f"column {missing[0]!r} named in the column mapping is not in the table; {_columns(frame)}")
    frame = frame.rename(columns=column_map)
    key = key or redshift_columns(frame, path)[0]
    if key not in frame.columns:
        raise InputError(path, f"key column {key!r} is not in the table; {_columns(frame)}")
    if frame[key].isna().any():
        raise InputError(path, f"key column {key!r} has {int(frame[key].isna().sum())} empty values")
    frame[key] = frame[key].astype(str).str.strip()
    duplicated = frame[key][frame[key].duplicated()].unique()
    if len(duplicated):
        raise InputError(path, f"key column {key!r} has duplicate values, e.g. {list(duplicated[:3])}")
    frame.attrs["key"] = key  # lets readers find an object's redshift by the same key
    return _read_numbers(frame, path, key)


def _read_numbers(frame: pd.DataFrame, source, key: str) -> pd.DataFrame:
    """Columns of numbers with a few cells that are not (``nsa_z = abc`` in a CSV) become numbers, those cells
    unknown (NaN), so one bad cell neither turns a column into text nor stops a batch. A redshift column is
    always numbers; another text column is when most of its cells are. Each such column gives one line in
    ``attrs['problems']``, naming the rows; ``attrs['unparsed']`` keeps {column: {id: text}} so a reader can
    say why an object's redshift is unknown."""
    ids = frame[key].astype(str).str.strip()
    unparsed, problems = {}, []
    for name in frame.columns:
        values = frame[name]
        if name == key or not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        blank = values.isna() | (values.astype(str).str.strip() == "")
        junk = np.flatnonzero((~blank & numbers.isna()).to_numpy())
        if not junk.size or (str(name).lower() not in REDSHIFT_COLUMNS and numbers.notna().sum() <= junk.size):
            continue
        frame[name] = numbers
        unparsed[name] = {ids.iat[i]: values.iat[i] for i in junk}
        rows = ", ".join(f"row {i + 1} ({key} {ids.iat[i]}) {values.iat[i]!r}" for i in junk[:3])
        more = f" and {junk.size - 3} more" if junk.size > 3 else ""
        problems.append(f"{source}: column {name!r}: {junk.size} value{'s' if junk.size > 1 else ''} not a number, "
                        f"read as unknown: {rows}{more}")
    frame.attrs.update(source=str(source), unparsed=unparsed, problems=problems)
    return frame


def read_table(path) -> pd.DataFrame:
    """Any supported table as a DataFrame with scalar columns and str (not bytes) text."""
    path = Path(path)
    head = read_head(path, 1024)
    try:
        if head.startswith(b"SIMPLE"):
            frame = _read_fits_table(path)
        elif head.startswith(b"PAR1"):
            frame = pd.read_parquet(path)
        elif b"<VOTABLE" in head.upper() or head.lstrip().startswith(b"<?xml"):
            frame = _to_frame(Table.read(path, format="votable"))
        else:
            frame = _read_csv(path, head)
    except InputError:
        raise
    except Exception as err:  # pandas/pyarrow/astropy raise many types for unreadable tables
        raise InputError(path, f"cannot read as a FITS, VOTable, CSV or Parquet table ({' '.join(str(err).split())})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for name in frame.columns:
        if frame[name].dtype == object or isinstance(frame[name].dtype, pd.StringDtype):
            frame[name] = frame[name].map(_clean_text)
    return frame


def _clean_text(value):
    """FITS and fixed-width tables pad text with blanks, and some give bytes."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value.strip() if isinstance(value, str) else value


def _read_fits_table(path: Path) -> pd.DataFrame:
    with open_fits(path) as hdul:
        tables = [i for i, h in enumerate(hdul) if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
        if not tables:
            raise InputError(path, "FITS file has no table extension")
        return _to_frame(Table.read(hdul, hdu=tables[0], character_as_bytes=False))


def _to_frame(table: Table) -> pd.DataFrame:
    columns = {}
    for name in table.colnames:
        values = table[name]
        if values.ndim == 1:
            columns[name] = values
        else:
            flat = np.asarray(values).reshape(len(values), -1)
            suffixes = NSA_BANDS if name.lower().startswith("nsa_") and flat.shape[1] == 7 else range(flat.shape[1])
            for j, suffix in enumerate(suffixes):
                columns[f"{name}_{suffix}"] = flat[:, j]
    return Table(columns).to_pandas()


def _read_csv(path: Path, head: bytes) -> pd.DataFrame:
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines()
    n_comments = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    first = lines[n_comments] if n_comments < len(lines) else ""
    sep = "\t" if "\t" in first and "," not in first else ","
    return pd.read_csv(path, sep=sep, skiprows=n_comments, compression="gzip" if head[:2] == GZIP_MAGIC else "infer")


def _columns(frame: pd.DataFrame) -> str:
    names = list(frame.columns)
    return f"columns are {names[:25]}" + (f" and {len(names) - 25} more" if len(names) > 25 else "")


def redshift_columns(frame: pd.DataFrame, source) -> tuple[str, str]:
    """Names of the id and redshift columns of a catalogue: the key given to read_catalogue, else the first
    of KEY_COLUMNS, and the first of REDSHIFT_COLUMNS (any case), so drpall and mapped tables both work."""
    lower = {str(c).lower(): c for c in frame.columns}
    key = frame.attrs.get("key") or next((lower[c] for c in KEY_COLUMNS if c in lower), None)
    zcol = next((lower[c] for c in REDSHIFT_COLUMNS if c in lower), None)
    if key is None or zcol is None:
        raise InputError(source, f"needs an id column (one of {list(KEY_COLUMNS)}) and a redshift column (one of {list(REDSHIFT_COLUMNS)}); {_columns(frame)}")
    return key, zcol


def catalogue_redshift(catalogue, object_id: str) -> float | None:
    """Redshift of object_id in a catalogue (DataFrame or path); None when the object is not listed or the
    catalogue has no redshift column (a catalogue of other properties is fine to pass). InputError naming the
    catalogue, row and column when the object's redshift is there but not a number."""
    is_path = isinstance(catalogue, (str, os.PathLike))
    frame = read_table(catalogue) if is_path else catalogue
    source = catalogue if is_path else frame.attrs.get("source", "catalogue")
    try:
        key, zcol = redshift_columns(frame, source)
    except InputError:
        return None
    if is_path:
        frame = _read_numbers(frame, source, key)
    rows = np.flatnonzero((frame[key].astype(str).str.strip() == object_id).to_numpy())
    if not rows.size:
        return None
    value = frame.attrs.get("unparsed", {}).get(zcol, {}).get(object_id, frame[zcol].iat[rows[0]])
    try:
        return float("nan") if pd.isna(value) else float(value)
    except (TypeError, ValueError):
        raise InputError(source, f"row {rows[0] + 1} ({key} {object_id}): {zcol} {value!r} is not a number") from None


def resolve_redshift(object_id: str, from_file, redshift=None, catalogue=None, n_spectra: int | None = None,
                     source=None):
    """The redshift to use: ``redshift=`` wins, then the catalogue (if it lists the object), then the file.

    Returns one float for a cube (``n_spectra=None``), else an array of n_spectra values; NaN = unknown.
    A catalogue redshift that is not a number is an InputError naming ``source`` (the file read) and the
    catalogue's row: the file's own redshift would be a guess.
    """
    if redshift is not None:
        z = redshift
    else:
        try:
            listed = catalogue_redshift(catalogue, object_id) if catalogue is not None else None
        except InputError as err:
            raise InputError(source or object_id, f"redshift unknown: {err}") from None
        z = from_file if listed is None else listed
    if n_spectra is None:
        return float(z)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim and z.shape != (n_spectra,):
        raise ValueError(f"{object_id}: {z.size} redshifts given for {n_spectra} spectra")
    return np.broadcast_to(z, (n_spectra,)).copy()
