"""`python -m precompute mock`: write a mock IFU survey (MaNGA LOGCUBEs or CALIFA V500 cubes, a drpall-like
catalogue, truth.parquet, truth maps, gri cutouts) and/or an SED library of integrated spectra."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .survey import FORMATS, write_mock_survey


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute mock", description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=None,
                        help="number of IFU galaxies (default 8, or 0 when only --sed-library is asked for)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--format", choices=FORMATS, default="manga")
    parser.add_argument("--rare-scale", type=float, default=1.0,
                        help="multiplies the chance of each rare kind (config mock.rare_fraction_scale; default 1)")
    parser.add_argument("--satellite-trails", type=float, default=0.0, metavar="FRACTION",
                        help="share of the images crossed by a satellite trail (mock.satellite_trail_fraction)")
    parser.add_argument("--unflagged-stars", type=float, default=0.0, metavar="FRACTION",
                        help="share of the cubes with a foreground star no FORESTAR bit flags (manga; "
                             "mock.unflagged_star_fraction)")
    parser.add_argument("--sed-library", type=int, default=0, metavar="N",
                        help="also write N integrated rest-frame spectra (sed_library.fits + sed_truth.parquet)")
    args = parser.parse_args(argv)
    n_galaxies = args.galaxies if args.galaxies is not None else (0 if args.sed_library else 8)
    if n_galaxies < 0 or args.sed_library < 0:
        parser.error("--galaxies and --sed-library must be >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    if n_galaxies:
        paths = write_mock_survey(args.out, n_galaxies, args.seed, args.format, rare_fraction_scale=args.rare_scale,
                                  satellite_trail_fraction=args.satellite_trails,
                                  unflagged_star_fraction=args.unflagged_stars)
        print(f"wrote {len(paths['cubes'])} {args.format} cubes, {paths['catalogue'].name} and truth.parquet to {args.out}")
    if args.sed_library:
        from ..formats import write_spectra_set
        from .sed_library import add_noise, make_sed_library

        wave, flux, truth = make_sed_library(args.sed_library, args.seed)
        noisy, ivar = add_noise(flux, truth["snr"].to_numpy(), args.seed)
        write_spectra_set(args.out / "sed_library.fits", wave=wave, flux=noisy, ivar=ivar,
                          mask=np.zeros(flux.shape, np.int32), z=np.zeros(len(flux)))
        truth.to_parquet(args.out / "sed_truth.parquet", index=False)
        print(f"wrote {len(flux)} spectra to {args.out / 'sed_library.fits'} with sed_truth.parquet")
    return 0
