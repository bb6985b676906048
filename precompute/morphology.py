"""Image morphology: the rotational asymmetry of a galaxy image (Conselice, Bershady & Jangren 2000; Conselice 2003).

    A = (Σ |I − I₁₈₀| − B) / Σ |I|

over an aperture of 1.5 Petrosian radii (η = 0.2) about the centre of rotation, which is searched on a half-pixel
grid near the image centre and chosen to minimise A (so a small centring error does not count as asymmetry).
I₁₈₀ is the image rotated by 180° about that centre; on the half-pixel grid that is an exact pixel permutation,
so the noise is not smoothed by interpolation. B removes the asymmetry of pure sky noise: for Gaussian noise of
σ per pixel, E|N − N₁₈₀| = 2σ/√π per aperture pixel (σ from the median absolute deviation of the image border).

A symmetric galaxy (an elliptical, a smooth inclined disc, a bulge with a nuclear point source) has A ≈ 0; a
lopsided disc, a second nucleus or a tidal arc raise it. Conselice (2003) puts major mergers at A ≳ 0.35 in SDSS-
like imaging. A foreground star inside the aperture raises it too, which is why asymmetries are measured with
contaminating sources masked. ``mask_compact`` = n masks the n brightest compact peaks of the smoothed residual
I − I₁₈₀ (and their mirror positions) before summing: that removes a star but keeps the extended asymmetry of a
lopsided disc or a tidal arc (a companion nucleus, if it is the brightest residual, is masked too). What the
masking removed, ``compact_asymmetry`` = A(unmasked) − A(masked), is the asymmetry of the compact sources alone:
large for a star or a second nucleus, near 0 for tidal light — it lets a user's labels tell the two apart
(`precompute.rank`).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

PETROSIAN_ETA = 0.2
APERTURE_PETROSIAN = 1.5  # Conselice (2003): the aperture is 1.5 Petrosian radii
BORDER = 6  # pixels of each image edge that give the sky level and its noise
MASK_COMPACT = 1  # compact residual peaks masked by the pipeline's asymmetry: one foreground star (or second nucleus)


def sky_level(image: np.ndarray, border: int = BORDER) -> tuple[float, float]:
    """(median, σ from the median absolute deviation) of the pixels within ``border`` of the image edge."""
    edge = np.ones(image.shape, bool)
    edge[border:-border, border:-border] = False
    values = image[edge]
    level = float(np.median(values))
    return level, float(1.4826 * np.median(np.abs(values - level)))


def petrosian_radius(image: np.ndarray, cx: float, cy: float, eta: float = PETROSIAN_ETA) -> float:
    """Radius (pixels) where the surface brightness in an annulus (0.8–1.25 r) falls to ``eta`` times the mean
    inside r (Blanton et al. 2001's definition); the largest radius tried when it never does."""
    y, x = np.indices(image.shape)
    r = np.hypot(x - cx, y - cy)
    radii = np.arange(1.0, min(image.shape) / 2 - 1, 0.5)
    for radius in radii:
        annulus = image[(r >= 0.8 * radius) & (r < 1.25 * radius)]
        inside = image[r < radius]
        if annulus.size and inside.size and annulus.mean() < eta * max(inside.mean(), 1e-30):
            return float(radius)
    return float(radii[-1])


def rotational_asymmetry(image: np.ndarray, search: int = 3, mask_compact: int = 0,
                         mask_radius: float = 3.0) -> dict:
    """The asymmetry A of one 2-D image (any linear flux unit; e.g. the sum of the g, r, i nanomaggy images).

    ``search``: the centre of rotation is tried on the half-pixel grid within ``search``/2 pixels of the image
    centre. ``mask_compact``, ``mask_radius``: see the module. Returns ``asymmetry`` (background-corrected, with
    the compact peaks masked), ``compact_asymmetry`` (what the masking removed; 0 without), ``centre`` (x, y
    pixels), ``radius`` (aperture, pixels) and ``sky_sigma``.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] < 4 * BORDER:
        raise ValueError(f"need a square 2-D image of at least {4 * BORDER} pixels, got shape {image.shape}")
    level, sigma = sky_level(image)
    image = image - level
    n = image.shape[0]
    y, x = np.indices(image.shape)
    twice_centre = n - 1  # 2 × the centre pixel coordinate
    radius = min(APERTURE_PETROSIAN * petrosian_radius(image, twice_centre / 2, twice_centre / 2),
                 (twice_centre - search) / 2 - 1)
    noise_per_pixel = 2.0 * sigma / np.sqrt(np.pi)
    best = None
    for tx in range(twice_centre - search, twice_centre + search + 1):
        for ty in range(twice_centre - search, twice_centre + search + 1):
            aperture = np.hypot(x - tx / 2, y - ty / 2) <= radius
            rotated = image[np.clip(ty - y, 0, n - 1), np.clip(tx - x, 0, n - 1)]
            residual = np.abs(image - rotated)
            total = np.abs(image[aperture]).sum()
            if total <= 0:
                continue
            value = (residual[aperture].sum() - aperture.sum() * noise_per_pixel) / total
            if best is None or value < best[0]:
                best = (value, tx, ty, aperture, rotated, total)
    if best is None:
        return {"asymmetry": float("nan"), "compact_asymmetry": float("nan"), "centre": (np.nan, np.nan),
                "radius": float(radius), "sky_sigma": sigma}
    value, tx, ty, aperture, rotated, total = best
    unmasked = value
    if mask_compact:
        smooth = gaussian_filter(np.where(aperture, image - rotated, 0.0), 1.0)
        keep = aperture.copy()
        for _ in range(mask_compact):
            py, px = np.unravel_index(np.argmax(np.where(keep, smooth, -np.inf)), image.shape)
            for qx, qy in ((px, py), (tx - px, ty - py)):
                keep &= np.hypot(x - qx, y - qy) > mask_radius
        value = (np.abs(image - rotated)[keep].sum() - keep.sum() * noise_per_pixel) / total
    return {"asymmetry": float(value), "compact_asymmetry": float(unmasked - value), "centre": (tx / 2, ty / 2),
            "radius": float(radius), "sky_sigma": sigma}


def image_asymmetry(images: np.ndarray, mask_compact: int = MASK_COMPACT) -> dict[str, np.ndarray]:
    """``asymmetry`` (A with the ``mask_compact`` brightest compact residuals masked) and ``compact_asymmetry``
    of each galaxy's summed g + r + i image, ``images`` ``[N, 3, S, S]`` (the bundle's ``images/gri.npy``):
    float32 ``[N]`` each (NaN for an image without flux, and for all when the images are smaller than 4 × BORDER
    pixels)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, bands, S, S], got shape {images.shape}")
    names = ("asymmetry", "compact_asymmetry")
    if images.shape[-1] < 4 * BORDER:  # too small to measure a sky border and a galaxy (config prepare.image_size)
        return {name: np.full(len(images), np.nan, np.float32) for name in names}
    measured = [rotational_asymmetry(im.sum(axis=0), mask_compact=mask_compact) for im in images]
    return {name: np.array([m[name] for m in measured], np.float32) for name in names}
