"""`python -m precompute inspect FILE... [--drpall CAT]`: one JSON line per readable file, errors on stderr."""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
from tqdm import tqdm

from ..observation import InputError
from .catalogue import read_catalogue
from .reader import read_observation


def inspect_file(path, *, redshift=None, catalogue=None) -> dict:
    """What a reader makes of a file: format, id, shape, wavelength coverage, redshift, bad-pixel fraction."""
    obs = read_observation(path, redshift=redshift, catalogue=catalogue)
    negative = obs.meta.get("negative_ivar")
    return {
        "path": str(path),
        "format": obs.format,
        "id": obs.id,
        "n_spectra": obs.n_spectra,
        "shape": list(obs.flux.shape),
        "n_wave": int(obs.wave.size),
        "wave_min": float(obs.wave[0]),
        "wave_max": float(obs.wave[-1]),
        "redshift": [_number(z) for z in obs.redshift] if np.ndim(obs.redshift) else _number(obs.redshift),
        "bad_fraction": obs.bad_fraction,
        "pixel_scale": obs.pixel_scale,
        "negative_ivar_masked": 0 if negative is None else int(negative.sum()),
    }


def _number(value) -> float | None:
    """JSON has no NaN: unknown values become null."""
    value = float(value)
    return None if math.isnan(value) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute inspect",
                                     description="Print one JSON object per input file; problems go to stderr.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="MaNGA/CALIFA cubes, spectra sets, SDSS spec files")
    parser.add_argument("--drpall", metavar="CAT", help="catalogue with redshifts (drpall: plateifu, nsa_z)")
    args = parser.parse_args(argv)
    catalogue = None
    if args.drpall:
        try:
            catalogue = read_catalogue(args.drpall)
        except InputError as err:
            print(err, file=sys.stderr)
            return 2
        for line in catalogue.attrs["problems"]:  # cells read as unknown: only their objects are affected
            print(line, file=sys.stderr)
    failed = 0
    for path in tqdm(args.files, desc="inspect", unit="file", disable=None):
        try:
            row = inspect_file(path, catalogue=catalogue)
            print(json.dumps(row), flush=True)
            if row["negative_ivar_masked"]:  # read, but the user should know part of it was invalid
                tqdm.write(f"{path}: {row['negative_ivar_masked']} pixels with negative IVAR (an invalid inverse "
                           f"variance) masked", file=sys.stderr)
        except InputError as err:
            tqdm.write(str(err), file=sys.stderr)
            failed += 1
    return 1 if failed else 0
