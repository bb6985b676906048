"""The one in-memory structure every reader, the mock survey and preparation share."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class InputError(ValueError):
    """Bad input: the message names the file (or source) and the problem in one line."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = str(source), problem
        super().__init__(f"{source}: {problem}")


@dataclass
class Observation:
    """Spectra of one source file, wavelength last.

    A cube has ``flux.shape == (ny, nx, n_wave)``; a set of spectra ``(n_spectra, n_wave)``.
    Wavelengths are observed-frame vacuum Å (air wavelengths are converted by the reader).
    ``redshift`` is one number for a cube, one per spectrum for a set (NaN where unknown).
    """

    id: str
    format: str  # manga | califa | spectra | sdss
    wave: np.ndarray  # (n_wave,) Å, vacuum, observed frame
    flux: np.ndarray  # (*spatial, n_wave), 1e-17 erg s^-1 cm^-2 Å^-1 (per spaxel for cubes)
    ivar: np.ndarray  # same shape, inverse variance of flux
    bad: np.ndarray  # bool, same shape: True where the pixel must not be used
    redshift: float | np.ndarray = np.nan
    pixel_scale: float | None = None  # arcsec per spaxel, cubes only
    images: dict[str, np.ndarray] = field(default_factory=dict)  # {'g','r','i'}: (ny, nx) nanomaggies
    foreground_star: np.ndarray | None = None  # bool (*spatial,), MaNGA FORESTAR
    meta: dict = field(default_factory=dict)  # header values worth keeping (ra, dec, source path, ...)

    @property
    def is_cube(self) -> bool:
        return self.flux.ndim == 3

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.flux.shape[:-1]

    @property
    def n_spectra(self) -> int:
        return int(np.prod(self.spatial_shape))

    @property
    def bad_fraction(self) -> float:
        return float(self.bad.mean())

    def validate(self, source: str | None = None) -> "Observation":
        """Raise InputError on inconsistent shapes, non-finite values where pixels are good, or nothing usable."""
        src = source or self.meta.get("path", self.id)
        if self.wave.ndim != 1 or self.flux.shape[-1] != self.wave.size:
            raise InputError(src, f"wavelength axis has {self.wave.size} points but flux has shape {self.flux.shape}")
        for name in ("ivar", "bad"):
            if getattr(self, name).shape != self.flux.shape:
                raise InputError(src, f"{name} shape {getattr(self, name).shape} differs from flux shape {self.flux.shape}")
        if not np.all(np.diff(self.wave) > 0):
            raise InputError(src, "wavelengths are not strictly increasing")
        if not np.all(np.isfinite(self.wave)):
            raise InputError(src, "wavelength array contains NaN/inf")
        good = ~self.bad
        if not good.any():
            raise InputError(src, "every pixel is masked: no usable spectrum")
        if not (np.isfinite(self.flux[good]).all() and np.isfinite(self.ivar[good]).all()):
            n = int((~np.isfinite(self.flux[good])).sum() + (~np.isfinite(self.ivar[good])).sum())
            raise InputError(src, f"{n} unmasked pixels have NaN/inf flux or ivar")
        return self
