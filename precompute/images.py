"""gri images of each galaxy: from a survey cutout, the cube's broadband images, or synthesised from the cube.
An object with one spectrum and no image gets its spectrum drawn as its thumbnail.

Images are in AB nanomaggies per pixel (SDSS convention: 1 nanomaggy = 22.5 mag AB), so rebinning must conserve
the summed flux, not the surface brightness. Thumbnails are Lupton et al. (2004) asinh composites.
"""
from __future__ import annotations

import functools
import io

import numpy as np
from astropy.visualization import make_lupton_rgb
from PIL import Image
from scipy.optimize import brentq

BANDS = ("g", "r", "i")
SDSS_FILTERS = ("sdss2010-g", "sdss2010-r", "sdss2010-i")
AB_ZERO_FNU = 3631e-23  # erg s^-1 cm^-2 Hz^-1: 1 maggy
C_ANGSTROM = 2.99792458e18  # speed of light, Å s^-1
THUMBNAIL_MIN_SIZE = 128  # small IFU images are blown up (nearest pixel) so thumbnails stay legible
LUPTON_WHITE, LUPTON_BLACK = 0.9, 0.06  # map levels (0-1) of the bright end and of the noise
# Colour balance of SDSS gri composites in the Legacy Surveys viewer (legacysurvey/imagine `sdss_rgb`):
# an old population comes out yellow-orange, a star-forming disc blue-white.
COLOUR_WEIGHTS = {"g": 2.5, "r": 1.5, "i": 1.0}


@functools.lru_cache(maxsize=1)
def _sdss_filters():
    import speclite.filters

    return speclite.filters.load_filters(*SDSS_FILTERS)


def synthesise_gri(wave: np.ndarray, flux: np.ndarray, bad: np.ndarray, flux_unit: float = 1e-17) -> np.ndarray:
    """AB nanomaggies in the SDSS g, r, i filters (speclite curves) of spectra ``flux[..., n_wave]``.

    ``flux`` is f_λ in ``flux_unit`` erg s⁻¹ cm⁻² Å⁻¹ on the observed-frame ``wave`` (Å). Bad pixels are
    left out of both the source and the AB reference integrals, so a band is the mean f_ν over its good, covered
    part; a band with no good pixel at all is 0. Returns float32 ``[3, *flux.shape[:-1]]``.
    """
    response = np.stack([f(wave) for f in _sdss_filters()])  # [3, n_wave], zero outside each curve
    weight = response * wave * np.gradient(wave)  # photon-counting detector: ∫ f_λ R λ dλ
    ab_flambda = AB_ZERO_FNU * C_ANGSTROM / wave**2
    good = ~bad.reshape(-1, wave.size)
    source = np.where(good, flux.reshape(-1, wave.size), 0.0) @ (weight * flux_unit).T
    reference = good.astype(float) @ (weight * ab_flambda).T
    with np.errstate(invalid="ignore", divide="ignore"):
        maggies = np.where(reference > 0, source / reference, 0.0)
    return (1e9 * maggies.T).reshape(3, *flux.shape[:-1]).astype(np.float32)


def rebin_flux(image: np.ndarray, size: int) -> np.ndarray:
    """Rebin ``image[..., ny, nx]`` to ``[..., size, size]`` conserving the summed flux.

    A non-square image is first padded (centred, with zeros) to a square so the aspect ratio is kept.
    Each input pixel's flux is shared among the output pixels it overlaps, in proportion to the overlap.
    """
    ny, nx = image.shape[-2:]
    n = max(ny, nx)
    pad = [(0, 0)] * (image.ndim - 2) + [((n - m) // 2, n - m - (n - m) // 2) for m in (ny, nx)]
    square = np.pad(np.asarray(image, dtype=np.float64), pad)
    edges_in, edges_out = np.linspace(0.0, 1.0, n + 1), np.linspace(0.0, 1.0, size + 1)
    overlap = np.clip(
        np.minimum(edges_out[1:, None], edges_in[None, 1:]) - np.maximum(edges_out[:-1, None], edges_in[None, :-1]),
        0.0, None,
    )
    share = overlap * n  # fraction of each input pixel (width 1/n) that falls in each output pixel
    return np.einsum("ji,...ik,lk->...jl", share, square, share, optimize=True).astype(np.float32)


def native_gri(obs, cutout: np.ndarray | None = None) -> np.ndarray:
    """The best gri image available at its own resolution, float32 [3, h, w] nanomaggies.

    Preference: a survey cutout (the mock's SDSS-like 128×128 image), the cube's reconstructed GIMG/RIMG/IIMG,
    else photometry synthesised from the cube's spectra (a set spectrum gives a 1×1 image: its colour).
    """
    if cutout is not None:
        cutout = np.asarray(cutout, dtype=np.float32)
        if cutout.ndim != 3 or cutout.shape[0] != 3:
            raise ValueError(f"{obs.id}: gri cutout must have shape [3, h, w], got {cutout.shape}")
        return cutout
    if all(band in obs.images for band in BANDS):
        return np.stack([np.asarray(obs.images[band], dtype=np.float32) for band in BANDS])
    spatial = obs.spatial_shape if obs.is_cube else (1, 1)
    return synthesise_gri(obs.wave, obs.flux, obs.bad).reshape(3, *spatial)


def lupton_parameters(intensity: np.ndarray) -> tuple[float, float]:
    """(stretch, Q) of the Lupton asinh map so the image's bright end is near white and its noise near black.

    astropy's map is y = asinh(Q·I/stretch) · 0.1/asinh(0.1·Q). We ask y = LUPTON_WHITE at the 99.5th
    percentile of the intensity and y = LUPTON_BLACK at twice the noise: two conditions, two parameters.
    A noisy image gets a nearly linear map (small Q), a deep one a strongly compressed one (large Q).
    """
    covered = intensity != 0  # IFU images are exactly 0 outside the fibre bundle
    peak = max(float(np.percentile(intensity[covered], 99.5)) if covered.any() else 0.0, 1e-30)
    # Robust noise from neighbour differences: smooth galaxy light cancels, pixel noise does not
    both = covered[:, 1:] & covered[:, :-1]
    steps = np.abs(np.diff(intensity, axis=1))[both]
    noise = 1.4826 * float(np.median(steps)) / np.sqrt(2.0) if steps.size else 0.0
    ratio = max(2.0 * noise / peak, 1e-4)  # floor: a noiseless image still gets a finite dynamic range
    target = LUPTON_BLACK / LUPTON_WHITE
    if ratio >= target:  # even a linear map shows the noise: stay linear
        return peak / LUPTON_WHITE, 1e-3
    # a = Q·peak/stretch sets the shape: asinh(a·ratio)/asinh(a) falls from `ratio` (a→0) to 0 (a→∞)
    a = brentq(lambda a: np.arcsinh(a * ratio) / np.arcsinh(a) - target, 1e-9, 1e12)
    q = 10.0 * np.sinh(0.1 * np.arcsinh(a) / LUPTON_WHITE)
    return q * peak / a, q


def thumbnail_png(gri: np.ndarray) -> bytes:
    """PNG bytes of the asinh composite (i, r, g as red, green, blue) of a [3, h, w] nanomaggy image.

    Bands are weighted by COLOUR_WEIGHTS; the map follows each image's brightness and noise
    (``lupton_parameters``) and, being Lupton's, keeps colours, so thumbnails compare in colour.
    """
    g, r, i = (COLOUR_WEIGHTS[name] * np.nan_to_num(np.asarray(band, dtype=np.float64))
               for name, band in zip(BANDS, gri))
    stretch, q = lupton_parameters((g + r + i) / 3.0)
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides by the intensity, 0 off the IFU
        rgb = make_lupton_rgb(i, r, g, stretch=stretch, Q=q)
    rgb = rgb[::-1]  # images are stored with row 0 at the bottom (FITS); PNG rows start at the top
    repeat = int(np.ceil(THUMBNAIL_MIN_SIZE / max(rgb.shape[:2])))
    if repeat > 1:
        rgb = rgb.repeat(repeat, axis=0).repeat(repeat, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
    return buffer.getvalue()


SPECTRUM_THUMBNAIL = (128, 84)  # pixels (width, height) of a single spectrum's thumbnail
SPECTRUM_COLOUR = (31, 78, 121)  # the dashboard's accent colour


def spectrum_thumbnail_png(flux: np.ndarray, good: np.ndarray) -> bytes:
    """PNG bytes of a spectrum drawn as a line (wavelength left to right, bad pixels left as gaps), scaled between
    its 1st and 99.5th percentiles: the thumbnail of an object that is one spectrum, not an image."""
    width, height = SPECTRUM_THUMBNAIL
    flux, good = np.asarray(flux, float), np.asarray(good, bool) & np.isfinite(flux)
    canvas = Image.new("RGB", (width, height), "white")
    if good.any():
        from PIL import ImageDraw

        low, high = np.percentile(flux[good], [1.0, 99.5])
        y = (height - 4) - (np.clip((flux - low) / max(high - low, 1e-12), 0, 1) * (height - 8))
        x = np.linspace(2, width - 3, flux.size)
        draw = ImageDraw.Draw(canvas)
        # one polyline per run of good pixels
        edges = np.flatnonzero(np.diff(np.concatenate([[0], good.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start > 1:
                draw.line(list(zip(x[start:stop], y[start:stop])), fill=SPECTRUM_COLOUR, width=1)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
