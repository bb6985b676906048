"""Readers and writers for every supported survey format, and `python -m precompute inspect`.

Every reader returns an :class:`~precompute.observation.Observation` (wavelength last, vacuum Å,
1e-17 erg/s/cm²/Å, boolean bad mask, flux and ivar zero where bad) or raises
:class:`~precompute.observation.InputError` naming the file and the problem. Writers produce
format-faithful files (used by the mock survey and the tests).
"""
from .califa import air_to_vacuum, califa_wave_air, read_califa_cube, vacuum_to_air, write_califa_cube
from .catalogue import read_catalogue, read_table
from .cli import inspect_file, main
from .manga import (DEADFIBER, DONOTUSE, FORESTAR, LOWCOV, NOCOV, manga_bad, manga_wave, read_manga_cube,
                    write_drpall, write_manga_cube)
from .reader import detect_format, read_observation
from .spectra import read_sdss_spec, read_spectra_set, write_sdss_spec, write_spectra_set

__all__ = [
    "NOCOV", "LOWCOV", "DEADFIBER", "FORESTAR", "DONOTUSE", "manga_bad", "manga_wave", "califa_wave_air",
    "air_to_vacuum", "vacuum_to_air", "detect_format", "read_observation", "read_manga_cube",
    "read_califa_cube", "read_spectra_set", "read_sdss_spec", "read_catalogue", "read_table",
    "write_manga_cube", "write_drpall", "write_califa_cube", "write_spectra_set", "write_sdss_spec",
    "inspect_file", "main",
]
