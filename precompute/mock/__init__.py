"""The embedded mock survey: galaxies from real SSP templates, observed like MaNGA or CALIFA, with truth.

population.py draws each galaxy's physical parameters, synthesis.py turns them into component spectra,
observe.py into a cube, truth maps and an image, survey.py streams or writes them, sed_library.py makes
integrated spectra, cli.py is `python -m precompute mock`.
"""
from .sed_library import make_sed_library
from .survey import TRUTH_COLUMNS, TRUTH_MAPS, MockGalaxy, iter_mock_survey, make_galaxy, write_mock_survey

__all__ = ["MockGalaxy", "iter_mock_survey", "make_galaxy", "write_mock_survey", "make_sed_library",
           "TRUTH_COLUMNS", "TRUTH_MAPS"]
