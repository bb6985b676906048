"""Observing a synthesised galaxy: an IFU cube (MaNGA or CALIFA-like), truth maps and an SDSS-like gri cutout.

The intrinsic cube is built on the MaNGA log-λ grid, where a velocity is a pixel shift: each component's
node spectra are mixed per spaxel (a matrix product), redshifted and Doppler-shifted by a linear
interpolation between pixels, and emission lines are added as pixel-integrated Gaussians. Then the PSF
(a Gaussian, separable, applied as two small matrix products) blurs everything at once.

Noise follows MaNGA's design, which integrates until the outskirts reach a fixed depth: per galaxy the
sky/read level is set so that the rim of the footprint (or 2 R_e, if closer) has S/N ≈ 2.5–5 per spaxel and
pixel (4500–5500 Å), and a source (Poisson-like) term caps the centre at S/N ≈ 25–55. Sky lines are *not* masked, as in MaNGA
cubes: the noise is raised strongly at the bright night-sky lines ([OI] 5577, NaD 5890/5896, [OI] 6300/6364
and the OH forest) so preparation must mask them. Observed pixels bluer than the templates' rest coverage
(3622 Å × (1+z)) have no model and are flagged DONOTUSE with zero flux.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import ndtr

from ..formats import manga as manga_format
from ..formats.califa import air_to_vacuum, califa_wave_air
from ..ssp import C_KMS, load_templates
from . import lines
from .photometry import band_weights
from .synthesis import CENTRAL_APERTURE_ARCSEC, L_SUN, GalaxyModel

FLUX_UNIT = 1e17  # cube flux unit is 1e-17 erg s⁻¹ cm⁻² Å⁻¹
SIGMA_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
NOISE_WINDOW = (4500.0, 5500.0)  # observed Å where the S/N targets are set
CUTOUT_SIZE, CUTOUT_SCALE = 128, 0.396  # SDSS imaging pixels
CUTOUT_SKY_NMGY = np.array([0.04, 0.05, 0.07])  # 1σ sky noise per pixel in g, r, i (SDSS-like depth)
# Bright night-sky emission (vacuum Å) and how many times the continuum noise they reach at their peak.
SKY_LINES = ((5578.9, 25.0), (5891.6, 8.0), (5897.6, 8.0), (6302.0, 15.0), (6365.5, 6.0), (6865.9, 6.0),
             (7278.4, 4.0), (7318.4, 5.0), (7342.9, 5.0), (7752.7, 5.0), (7796.3, 5.0), (7823.7, 5.0),
             (7916.0, 5.0), (7995.6, 6.0), (8346.9, 7.0), (8401.5, 7.0), (8432.6, 7.0), (8829.5, 8.0),
             (8888.2, 8.0), (8922.1, 8.0), (8945.8, 8.0), (9378.5, 10.0), (9442.6, 10.0))


@dataclass(frozen=True)
class Instrument:
    """An IFU survey's geometry: hexagonal footprints (vertex radius, arcsec), pixels, seeing, grid."""

    name: str
    pixel_scale: float
    psf_fwhm: tuple  # arcsec range of the seeing
    footprints: dict  # label: (vertex radius arcsec, probability)
    fill: tuple  # choices of footprint inscribed radius / R_e (MaNGA: Primary 1.5, Secondary 2.5 R_e)
    fill_probability: tuple
    shape: tuple | None = None  # fixed (ny, nx); None = sized to the footprint

    def draw_footprint(self, rng) -> tuple[str, float, float]:
        """(label, vertex radius, target R_e in arcsec) for one galaxy."""
        labels = list(self.footprints)
        prob = np.array([self.footprints[k][1] for k in labels])
        label = labels[rng.choice(len(labels), p=prob / prob.sum())]
        radius = self.footprints[label][0]
        fill = self.fill[rng.choice(len(self.fill), p=self.fill_probability)]
        return label, radius, radius * np.sqrt(3) / 2 / fill * rng.uniform(0.85, 1.15)

    def grid_shape(self, radius: float) -> tuple[int, int]:
        if self.shape:
            return self.shape
        n = 2 * int(np.ceil(radius / self.pixel_scale)) + 3
        return n, n


# MaNGA bundles: 19, 37, 61 fibres, 2.5″ fibre pitch, so vertex radius (2k+1)·1.25″ (demo keeps cubes small).
MANGA = Instrument("manga", 0.5, (2.3, 2.7), {"19": (6.25, 0.35), "37": (8.75, 0.40), "61": (11.25, 0.25)},
                   fill=(1.5, 2.5), fill_probability=(2 / 3, 1 / 3))
# CALIFA PPak: 74″ × 64″ hexagon, cubes of 78 × 73 spaxels of 1″ (DR3 layout), V500 resolution 6 Å FWHM.
CALIFA = Instrument("califa", 1.0, (2.3, 2.7), {"ppak": (37.0, 1.0)}, fill=(2.0, 3.0), fill_probability=(0.5, 0.5),
                    shape=(73, 78))
INSTRUMENTS = {"manga": MANGA, "califa": CALIFA}
CALIFA_FWHM = 6.0  # Å


def manga_specres(wave) -> np.ndarray:
    """Spectral resolution R = λ/Δλ_FWHM of the MaNGA spectrographs, ~1400 in the blue to ~2600 in the red."""
    return 1400.0 + 1200.0 * np.clip((np.asarray(wave) - 3600.0) / (10350.0 - 3600.0), 0.0, 1.0)


def sky_noise_shape(wave) -> np.ndarray:
    """Noise per pixel relative to 4500–6500 Å: low throughput at the blue end, sky continuum and lines."""
    wave = np.asarray(wave, float)
    shape = (1.0 + 2.5 * np.exp(-(wave - 3600.0) / 250.0)) * (1.0 + 0.5 * np.clip((wave - 6500.0) / 3500.0, 0, None))
    bumps = sum(peak * np.exp(-0.5 * ((wave - centre) / 1.3) ** 2) for centre, peak in SKY_LINES)
    return shape * np.sqrt(1.0 + bumps**2)


def gaussian_blur_matrix(n: int, fwhm_pixels: float) -> np.ndarray:
    """(n, n) pixel-integrated Gaussian: out = M @ in blurs along one axis; light leaving the grid is lost."""
    sigma = fwhm_pixels / SIGMA_FWHM
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    return ndtr((d + 0.5) / sigma) - ndtr((d - 0.5) / sigma)


def blur(images: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Blur (ny, nx, ...) arrays over their first two axes with separable kernels.

    Two large matrix products (one per axis, the x axis brought to the front by a transpose) are much
    faster than many small ones.
    """
    shape = images.shape
    ny, nx = shape[:2]
    a = (gy.astype(images.dtype) @ images.reshape(ny, -1)).reshape(ny, nx, -1)
    a = gx.astype(images.dtype) @ a.transpose(1, 0, 2).reshape(nx, -1)
    return np.ascontiguousarray(a.reshape(nx, ny, -1).transpose(1, 0, 2)).reshape(shape)


def point_source(ny, nx, x0, y0, scale, fwhm) -> np.ndarray:
    """(ny, nx) pixel-integrated Gaussian PSF, unit total flux, centred at (x0, y0) arcsec from the centre."""
    sigma = fwhm / SIGMA_FWHM / scale
    cx, cy = x0 / scale + (nx - 1) / 2, y0 / scale + (ny - 1) / 2
    px = ndtr((np.arange(nx) - cx + 0.5) / sigma) - ndtr((np.arange(nx) - cx - 0.5) / sigma)
    py = ndtr((np.arange(ny) - cy + 0.5) / sigma) - ndtr((np.arange(ny) - cy - 0.5) / sigma)
    return py[:, None] * px[None, :]


def hexagon_distance(x, y, radius) -> np.ndarray:
    """1 on the edge of a hexagon with vertices at (±radius, 0); < 1 inside."""
    x, y = np.abs(x), np.abs(y)
    return np.maximum(y / (radius * np.sqrt(3) / 2), (np.sqrt(3) * x + y) / (np.sqrt(3) * radius))


def sky_grid(ny: int, nx: int, scale: float):
    """Spaxel centres in arcsec from the grid centre: x to the west (RA decreasing), y to the north."""
    return np.meshgrid((np.arange(nx) - (nx - 1) / 2) * scale, (np.arange(ny) - (ny - 1) / 2) * scale)


def component_maps(comp, x, y, scale: float, sub: int = 3):
    """(mass per pixel M☉, node weights (k, ny, nx), velocity km/s) of one component on a pixel grid.

    Mass is averaged over sub × sub points per pixel, so cuspy bulges keep roughly their true central mass.
    """
    offsets = (np.arange(sub) - (sub - 1) / 2) * scale / sub
    resolution = scale / sub / np.sqrt(np.pi)  # radius of a circle with a sample's area
    mass = np.zeros(x.shape)
    for dy in offsets:
        for dx in offsets:
            mass += comp.surface_mass(x + dx, y + dy, resolution)
    return mass * scale**2 / sub**2, comp.node_weights(x, y), comp.velocity(x, y)


def star_forming_pattern(model: GalaxyModel, x, y, scale: float, rng) -> np.ndarray:
    """Mean-one modulation of the star formation: HII-region clumps and, in spirals, two arms."""
    p = model.params
    disk = next((c for c in model.components if c.name == "disk"), model.components[0])
    kpc = p.kpc_per_arcsec
    # Clumps: a smoothed log-normal random field with ~0.7 kpc correlation length.
    sigma_pix = max(0.7 / kpc / scale, 0.6)
    field_ = rng.standard_normal(x.shape)
    gy, gx = gaussian_blur_matrix(x.shape[0], sigma_pix * SIGMA_FWHM), gaussian_blur_matrix(x.shape[1], sigma_pix * SIGMA_FWHM)
    field_ = blur(field_, gy, gx)
    field_ = field_ / max(field_.std(), 1e-12)
    pattern = np.exp(0.5 * field_ - 0.125)
    if p.morphology in ("Sa", "Sb", "Sc", "Sd"):
        a, b = disk._frame(x, y)
        r = np.maximum(np.hypot(a, b / disk.q), 1e-3)
        pitch = np.radians({"Sa": 10, "Sb": 15, "Sc": 22, "Sd": 28}[p.morphology])
        phase = 2 * (np.arctan2(b / disk.q, a) - np.log(r / disk.re_arcsec) / np.tan(pitch))
        pattern *= 1.0 + 0.6 * np.cos(phase + rng.uniform(0, 2 * np.pi))
    return pattern


def shift_to_observed(rest: np.ndarray, pixel_shift: np.ndarray, n_obs: int) -> np.ndarray:
    """Resample rest-frame spectra (n, n_rest) onto the observed grid by a per-spectrum shift in pixels.

    Observed pixel i samples rest pixel i − shift by linear interpolation, with zero beyond the rest
    spectrum's ends. Spectra are grouped by whole-pixel shift so each group is a few slice operations.
    """
    n, n_rest = rest.shape
    padded = np.zeros((n, n_rest + 2), dtype=rest.dtype)  # one zero pixel on each side
    padded[:, 1:-1] = rest
    out = np.zeros((n, n_obs), dtype=rest.dtype)
    whole = np.floor(pixel_shift).astype(int)
    frac = (pixel_shift - whole).astype(rest.dtype)
    for k in np.unique(whole):
        rows = np.flatnonzero(whole == k)
        lo, hi = max(k, 0), min(n_obs, n_rest + k + 1)
        if hi <= lo:
            continue
        # value[i] = rest[i − k] + f·(rest[i − k − 1] − rest[i − k]), rest[j] = padded[j + 1]
        here, before = padded[rows, lo - k + 1:hi - k + 1], padded[rows, lo - k:hi - k]
        out[rows, lo:hi] = here + frac[rows, None] * (before - here)
    return out


def add_shifted(out: np.ndarray, amount: np.ndarray, spectra: np.ndarray, pixel_shift: np.ndarray) -> None:
    """out[j] += (amount[j] @ spectra) shifted by pixel_shift[j] pixels, in place.

    The shift of each row is split into whole pixels k and a fraction f, and the row becomes
    (1 − f)·amount @ S_k + f·amount @ S_(k+1) with S_k the node spectra shifted by k: one matrix product per
    distinct k, never a rest-frame copy of the whole cube.
    """
    whole = np.floor(pixel_shift).astype(int)
    frac = (pixel_shift - whole).astype(out.dtype)[:, None]
    n_nodes, n_obs = len(spectra), out.shape[1]
    for k in np.unique(whole):
        rows = np.flatnonzero(whole == k)
        shifted = shift_to_observed(np.concatenate([spectra, spectra]), np.repeat([k, k + 1], n_nodes).astype(float), n_obs)
        mix = np.concatenate([amount[rows] * (1 - frac[rows]), amount[rows] * frac[rows]], axis=1)
        out[rows] += mix @ shifted


@dataclass
class ObservedGalaxy:
    """Everything observe() produces for one galaxy (cube arrays are (ny, nx, n_wave))."""

    wave: np.ndarray  # vacuum Å (MaNGA log grid, or CALIFA's air grid converted to vacuum)
    flux: np.ndarray  # float32, 1e-17 erg s⁻¹ cm⁻² Å⁻¹ per spaxel
    ivar: np.ndarray  # float32
    mask: np.ndarray  # int32 MANGA_DRP3PIXMASK bits (MaNGA) or 0/1 BADPIX (CALIFA)
    images: dict  # g, r, i reconstructed from the cube, nanomaggies per spaxel
    foreground_star: np.ndarray  # bool (ny, nx)
    truth_maps: dict  # [ny, nx] float32, NaN outside the footprint
    truth: dict  # central/observed truth columns (log_nii_ha, log_oiii_hb, bpt_class, whan_class, sigma_kms)
    cutout: np.ndarray  # float32 [3, 128, 128] g, r, i nanomaggies
    specres: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # footprint, psf, noise levels, star


def observe(model: GalaxyModel, instrument: Instrument, footprint_radius: float, rng: np.random.Generator,
            star_probability: float = 0.06) -> ObservedGalaxy:
    """Render, blur, add noise and flags: the cube as the instrument would deliver it, plus truth.

    A foreground star falls on the footprint with ``star_probability``.
    """
    p = model.params
    scale = instrument.pixel_scale
    ny, nx = instrument.grid_shape(footprint_radius)
    x, y = sky_grid(ny, nx, scale)
    hexd = hexagon_distance(x, y, footprint_radius)
    covered = hexd <= 1.0 + scale / footprint_radius  # the rim spaxels have partial (low) coverage
    psf = rng.uniform(*instrument.psf_fwhm)
    gy, gx = gaussian_blur_matrix(ny, psf / scale), gaussian_blur_matrix(nx, psf / scale)

    wave_rest = model.wave_rest
    dlog = np.log10(wave_rest[1] / wave_rest[0])
    wave = wave_rest[0] * 10 ** (dlog * np.arange(manga_format.N_WAVE))  # MaNGA's grid starts where MaStar's does
    dist2 = 4 * np.pi * p.luminosity_distance_cm**2
    cont_scale = L_SUN * FLUX_UNIT / (dist2 * (1 + p.redshift))  # L☉/Å at rest → 1e-17 erg/s/cm²/Å observed
    line_scale = FLUX_UNIT / dist2  # erg/s → 1e-17 erg/s/cm²
    z_shift = np.log10(1 + p.redshift) / dlog

    maps = [component_maps(c, x, y, scale) for c in model.components]
    n_spax = ny * nx
    # Spaxels farther outside the footprint than 1.5 × the seeing FWHM only light NOCOV ones: skip them.
    active = np.flatnonzero(hexd <= 1.0 + (scale + 1.5 * psf) / footprint_radius)
    work = np.zeros((active.size, wave.size), dtype=np.float32)
    for comp, (mass, weights, velocity) in zip(model.components, maps):
        amount = (mass * weights).reshape(len(comp.nodes_re), -1).T[active]
        amount = (amount * cont_scale).astype(np.float32)  # (n_active, k)
        spectra = comp.spectra.astype(np.float32)
        shift = z_shift + np.log10(1 + velocity.ravel()[active] / C_KMS) / dlog
        add_shifted(work, amount, spectra, shift)

    # Emission lines per source; the gas of bulge, disk and starburst shares the disk's rotation.
    pattern = star_forming_pattern(model, x, y, scale, rng).ravel()
    line_maps = np.zeros((n_spax, len(lines.LINES)))
    sigma_inst = C_KMS / (SIGMA_FWHM * manga_specres(lines.LINE_WAVE * (1 + p.redshift)))
    disk = next((i for i, c in enumerate(model.components) if c.name == "disk"), 0)
    for comp, (mass, weights, velocity) in zip(model.components, maps):
        gas_velocity = (maps[disk][2] if comp.name in ("bulge", "disk", "starburst") else velocity).ravel()
        amount = (mass * weights).reshape(len(comp.nodes_re), -1).T
        for flux, sigma in (((amount @ comp.sf_lines) * pattern[:, None], p.sigma_gas_kms),
                            (amount @ comp.liner_lines, model.sigma_liner_kms)):
            peak = flux[:, lines.HA].max()
            if peak <= 0:
                continue
            line_maps += flux
            _add_lines(work, flux[active, lines.HA] > 1e-4 * peak, wave, flux[active] * line_scale,
                       gas_velocity[active], np.hypot(sigma, sigma_inst), p.redshift)
    if p.agn:  # a point at the galaxy centre, which is the centre spaxel of the odd-sized grid
        nucleus = np.zeros(n_spax, bool)
        nucleus[(ny // 2) * nx + nx // 2] = True
        flux = nucleus[:, None] * model.agn_lines[None, :]
        line_maps += flux
        _add_lines(work, nucleus[active], wave, flux[active] * line_scale, maps[disk][2].ravel()[active],
                   np.hypot(model.sigma_agn_kms, sigma_inst), p.redshift)
    cube = np.zeros((n_spax, wave.size), dtype=np.float32)
    cube[active] = work
    del work

    cube = blur(cube.reshape(ny, nx, -1), gy, gx)
    weights_band = band_weights(wave)
    galaxy_window = cube[..., (wave > NOISE_WINDOW[0]) & (wave < NOISE_WINDOW[1])].mean(axis=-1)

    # A foreground star now and then: a Milky Way star, so an unredshifted SSP spectrum.
    star = np.zeros((ny, nx), bool)
    info = {"footprint_radius": footprint_radius, "psf_fwhm": psf}
    if rng.uniform() < star_probability:
        sx, sy, r_mag, spectrum = draw_foreground_star(rng, footprint_radius, weights_band)
        star_image = point_source(ny, nx, sx, sy, scale, psf)
        galaxy_r = (cube.reshape(n_spax, -1) @ weights_band[:, 1]).reshape(ny, nx)
        star = (star_image * 10 ** ((22.5 - r_mag) / 2.5) > 0.2 * galaxy_r) & (np.hypot(x - sx, y - sy) < 2 * psf) & covered
        cube += (star_image[..., None] * spectrum[None, None, :]).astype(np.float32)
        info["star"] = {"x": sx, "y": sy, "r_mag": r_mag, "gri_nmgy": spectrum @ weights_band}

    # Noise levels: sky/read from the rim S/N target, a source term from the centre's.
    snr_edge, snr_centre = rng.uniform(2.5, 5.0), rng.uniform(25.0, 55.0)
    # The faint reference is the rim, or 2 R_e for galaxies that fill only part of the footprint.
    r_ref = min(0.9 * footprint_radius * np.sqrt(3) / 2, 2.0 * model.truth["re_arcsec"])
    ring = covered & (np.abs(np.hypot(x, y) - r_ref) < scale)
    f_edge = max(float(np.median(galaxy_window[ring])), 1e-6)
    f_centre = max(float(galaxy_window[covered].max()), f_edge)
    source = max((f_centre**2 / snr_centre**2 - f_edge**2 / snr_edge**2) / max(f_centre - f_edge, 1e-12), 0.0)
    sky2 = max(f_edge**2 / snr_edge**2 - source * f_edge, 1e-4 * f_edge**2)
    info.update(snr_edge_target=snr_edge, snr_centre_target=snr_centre, sky_sigma=float(np.sqrt(sky2)),
                source_term=source)

    truth_maps, central = _truth_maps(model, maps, pattern, line_maps, gy, gx, x, y, ny, nx)
    for m in truth_maps.values():
        m[~covered] = np.nan
    cutout = render_cutout(model, rng, info, weights_band, wave, cont_scale, line_scale)
    blue_edge = int(np.ceil(z_shift + np.log10(1 + 400.0 / C_KMS) / dlog)) + 1  # rest coverage less the fastest rotation
    if instrument.name == "califa":
        return _as_califa(wave, cube, sky2, source, blue_edge, covered, star, truth_maps, central, cutout, info, rng)

    # Only spaxels with data get noise; the others stay zero with zero ivar (NOCOV).
    # Only usable pixels get noise; the others stay zero with zero ivar (NOCOV, LOWCOV, no rest coverage).
    rows = np.flatnonzero(hexd <= 1.0)
    signal = cube.reshape(n_spax, -1)[rows, blue_edge:]
    sigma = np.maximum(signal, 0, out=np.empty_like(signal))
    sigma *= np.float32(source)
    sigma += (sky2 * sky_noise_shape(wave[blue_edge:]) ** 2).astype(np.float32)
    np.sqrt(sigma, out=sigma)
    noisy = rng.standard_normal(signal.shape, dtype=np.float32)
    noisy *= sigma
    noisy += signal
    flux = np.zeros((n_spax, wave.size), np.float32)
    ivar = np.zeros((n_spax, wave.size), np.float32)
    flux[rows, blue_edge:] = noisy
    ivar[rows, blue_edge:] = sigma**-2
    flux, ivar = flux.reshape(ny, nx, -1), ivar.reshape(ny, nx, -1)

    bits = np.int32
    spaxel_bits = np.where(covered, bits(0), bits(manga_format.NOCOV | manga_format.DONOTUSE))
    spaxel_bits |= np.where(covered & (hexd > 1.0), bits(manga_format.LOWCOV | manga_format.DONOTUSE), bits(0))
    spaxel_bits |= np.where(star, bits(manga_format.FORESTAR), bits(0))
    spectral_bits = np.where(np.arange(wave.size) < blue_edge, bits(manga_format.DONOTUSE), bits(0))
    mask = spaxel_bits[..., None] | spectral_bits[None, None, :]
    images = cube_images(flux, weights_band)
    return ObservedGalaxy(wave, flux, ivar, mask, images, star, truth_maps, central, cutout,
                          specres=manga_specres(wave), info=info)


def cube_images(flux: np.ndarray, weights_band: np.ndarray) -> dict:
    """The g, r, i images of a (ny, nx, n_wave) cube in nanomaggies per spaxel, as MaNGA's cubes carry them."""
    ny, nx, _ = flux.shape
    gri = flux.reshape(ny * nx, -1) @ weights_band.astype(np.float32)
    return {b: gri[:, k].reshape(ny, nx) for k, b in enumerate("gri")}


def _add_lines(cube, keep, wave, flux, velocity, sigma, redshift):
    """Add lines to the rows ``keep`` of a (n_spax, n_wave) cube (fancy indexing copies, so write back)."""
    rows = np.nonzero(keep)[0]
    block = cube[rows]
    lines.add_lines(block, wave, flux[rows], velocity[rows], np.broadcast_to(sigma, (len(rows), len(lines.LINES))), redshift)
    cube[rows] = block


def _truth_maps(model, maps, pattern, line_maps, gy, gx, x, y, ny, nx):
    """Per-spaxel truth as seen through the PSF (light-weighted at 5500 Å), and the central-aperture truth."""
    shape = (ny, nx)
    acc = {k: np.zeros(shape) for k in ("light", "age", "logz", "av", "mass", "sfr", "cont_ha", "v", "v2")}
    for comp, (mass, weights, velocity) in zip(model.components, maps):
        def per_node(values):
            return mass * np.tensordot(values, weights, axes=1)
        light = per_node(comp.l5500)
        acc["light"] += light
        acc["age"] += per_node(comp.l5500 * comp.log_age_lw)
        acc["logz"] += per_node(comp.l5500 * comp.logz_lw)
        acc["av"] += per_node(comp.l5500 * comp.av)
        acc["mass"] += mass
        acc["sfr"] += per_node(comp.ssfr) * pattern.reshape(shape)
        acc["cont_ha"] += per_node(comp.cont_ha) * L_SUN
        acc["v"] += light * velocity
        acc["v2"] += per_node(comp.l5500 * comp.sigma_kms**2) + light * velocity**2
    stack = np.stack(list(acc.values()) + [line_maps[:, k].reshape(shape) for k in range(line_maps.shape[1])], axis=-1)
    blurred = blur(stack, gy, gx)
    b = dict(zip(acc, np.moveaxis(blurred[..., :len(acc)], -1, 0)))
    line_blur = blurred[..., len(acc):]
    with np.errstate(invalid="ignore", divide="ignore"):
        v = b["v"] / b["light"]
        truth_maps = {
            "log_age_lw": b["age"] / b["light"],
            "logz_lw": b["logz"] / b["light"],
            "log_ssfr": np.log10(np.maximum(b["sfr"], 0) / b["mass"]).clip(-14.0, None),
            "ew_halpha": line_blur[..., lines.HA] / b["cont_ha"],
            "av": b["av"] / b["light"],
            "velocity_kms": v,
            "sigma_kms": np.sqrt(np.maximum(b["v2"] / b["light"] - v**2, 0.0)),
        }
    truth_maps = {k: m.astype(np.float32) for k, m in truth_maps.items()}

    # Central (r < 1.5″, a fibre-like aperture) line ratios and EWs give the BPT and WHAN classes.
    aperture = np.hypot(x, y) < CENTRAL_APERTURE_ARCSEC
    total = line_blur[aperture].sum(axis=0)
    cont = b["cont_ha"][aperture].sum()
    ew_ha, ew_nii = total[lines.HA] / cont, total[lines.NII] / cont
    with np.errstate(invalid="ignore", divide="ignore"):
        n2 = float(np.log10(total[lines.NII] / total[lines.HA])) if total[lines.HA] > 0 else np.nan
        o3 = float(np.log10(total[lines.OIII] / total[lines.HB])) if total[lines.HB] > 0 else np.nan
    light = b["light"][aperture].sum()
    v_c = b["v"][aperture].sum() / light
    central = {
        "log_nii_ha": n2,
        "log_oiii_hb": o3,
        "bpt_class": lines.bpt_class(n2, o3, ew_ha),
        "whan_class": lines.whan_class(n2, ew_ha, ew_nii),
        "sigma_kms": float(np.sqrt(max(b["v2"][aperture].sum() / light - v_c**2, 0.0))),
    }
    return truth_maps, central


def render_cutout(model: GalaxyModel, rng, info: dict, weights_band, wave, cont_scale, line_scale) -> np.ndarray:
    """A [3, 128, 128] gri image at 0.396″/pixel in nanomaggies: same model, SDSS-like seeing and sky noise, and
    the foreground star of ``info["star"]`` if any; records the seeing as ``info["cutout_psf_fwhm"]`` (arcsec)."""
    p = model.params
    n = CUTOUT_SIZE
    x, y = sky_grid(n, n, CUTOUT_SCALE)
    dlog = np.log10(wave[1] / wave[0])
    z_shift = np.log10(1 + p.redshift) / dlog
    pixel = np.clip(np.rint((np.log10(lines.LINE_WAVE * (1 + p.redshift)) - np.log10(wave[0])) / dlog).astype(int), 0, wave.size - 1)
    line_bands = weights_band[pixel] / (wave[pixel] * np.log(10) * dlog)[:, None]  # per unit line flux
    image = np.zeros((n, n, 3))
    for comp in model.components:
        mass, weights, _ = component_maps(comp, x, y, CUTOUT_SCALE, sub=2)
        observed = shift_to_observed(comp.spectra, np.full(len(comp.nodes_re), z_shift), wave.size)
        per_mass = (observed @ weights_band) * cont_scale + ((comp.sf_lines + comp.liner_lines) @ line_bands) * line_scale
        image += mass[..., None] * np.einsum("kb,kyx->yxb", per_mass, weights)
    centre = np.zeros((n, n))
    centre[n // 2, n // 2] = 1.0
    image += centre[..., None] * (model.agn_lines @ line_bands * line_scale)[None, None, :]
    fwhm = rng.uniform(1.2, 1.6) / CUTOUT_SCALE
    info["cutout_psf_fwhm"] = fwhm * CUTOUT_SCALE
    g = gaussian_blur_matrix(n, fwhm)
    image = blur(image, g, g)
    if (star := info.get("star")) is not None:
        image += point_source(n, n, star["x"], star["y"], CUTOUT_SCALE, fwhm * CUTOUT_SCALE)[..., None] * star["gri_nmgy"]
    noise = CUTOUT_SKY_NMGY * rng.uniform(0.8, 1.2)
    image += noise * rng.standard_normal(image.shape)
    return np.moveaxis(image, -1, 0).astype(np.float32)


def draw_foreground_star(rng, footprint_radius: float, weights_band) -> tuple[float, float, float, np.ndarray]:
    """A Milky Way star seen through the IFU: (x, y) in arcsec from the centre, r magnitude, and its spectrum on
    the MaNGA grid in 1e-17 erg s⁻¹ cm⁻² Å⁻¹ (an unredshifted SSP of 0.3–9 Gyr, r = 16.5–19.5)."""
    radius, angle = rng.uniform(0.35, 0.85) * footprint_radius, rng.uniform(0, 2 * np.pi)
    spectrum = load_templates().spectrum(rng.choice([0.3, 1.0, 3.0, 9.0]), rng.uniform(-1.0, 0.3))
    spectrum = np.append(spectrum, spectrum[-1])  # MaNGA's grid has one pixel more than the templates'
    r_mag = rng.uniform(16.5, 19.5)
    spectrum *= 10 ** ((22.5 - r_mag) / 2.5) / (spectrum @ weights_band[:, 1])
    return radius * np.cos(angle), radius * np.sin(angle), r_mag, spectrum


def add_unflagged_star(observed: ObservedGalaxy, pixel_scale: float, rng: np.random.Generator) -> dict:
    """Add a foreground star that the reduction did not flag to a MaNGA cube and its image, in place; returns
    where it lies.

    The same stars as observe()'s flagged ones (`draw_foreground_star`, through the cube's seeing), but no
    FORESTAR bit: MaNGA's foreground-star masks come from catalogues and inspection, and a star they miss enters
    the binned spectra as an unredshifted stellar spectrum. Its photons add their own noise to the pixels that
    have data (variance source term × signal, as observe() sets it); the cube's g, r, i images and the cutout
    (through its own seeing) show it too.
    """
    info = observed.info
    ny, nx, _ = observed.flux.shape
    weights_band = band_weights(observed.wave)
    sx, sy, r_mag, spectrum = draw_foreground_star(rng, info["footprint_radius"], weights_band)
    signal = (point_source(ny, nx, sx, sy, pixel_scale, info["psf_fwhm"])[..., None] * spectrum).astype(np.float32)
    has_data = observed.ivar > 0
    variance = np.float32(info["source_term"]) * signal[has_data]
    observed.flux[has_data] += signal[has_data] + np.sqrt(variance) * rng.standard_normal(variance.size, np.float32)
    observed.ivar[has_data] = 1 / (1 / observed.ivar[has_data] + variance)
    observed.images.update(cube_images(observed.flux, weights_band))
    gri_nmgy = spectrum @ weights_band
    n = observed.cutout.shape[-1]
    observed.cutout += (point_source(n, n, sx, sy, CUTOUT_SCALE, info["cutout_psf_fwhm"])[None]
                        * gri_nmgy[:, None, None]).astype(np.float32)
    return {"x": float(sx), "y": float(sy), "r_mag": float(r_mag)}


def add_satellite_trail(cutout: np.ndarray, rng: np.random.Generator) -> dict:
    """Draw a satellite trail across a [3, S, S] g, r, i cutout, in place; returns where it lies.

    An imaging artefact, not a property of the galaxy: a straight streak as wide as the seeing across the whole
    cutout, in one band only (SDSS exposes g, r and i about a minute apart in its drift scan, so a satellite
    crosses one band's frame), at a random angle and at any offset from the centre within the cutout, with
    0.5–20 nanomaggies per pixel of length (log-uniform): a low-orbit satellite of magnitude 5–9 moving 0.5–1°/s
    leaves F / (ω · 54 s) of flux per arcsec in a 54 s SDSS exposure, e.g. 8 nanomaggies per 0.396″ pixel at
    magnitude 6 and 1°/s (sky noise is ~0.05 per pixel). Such streaks are among the first things an image anomaly
    score finds, and what a user reviewing its list marks as not interesting.
    """
    size = cutout.shape[-1]
    band = int(rng.integers(3))
    angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.5, 0.5) * size
    per_length = float(np.exp(rng.uniform(np.log(0.5), np.log(20.0))))
    sigma = rng.uniform(1.2, 1.6) / CUTOUT_SCALE / SIGMA_FWHM
    y, x = np.indices((size, size)) - (size - 1) / 2
    distance = x * np.sin(angle) - y * np.cos(angle) - offset  # signed distance from the trail's centre line
    streak = per_length * np.exp(-0.5 * (distance / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)  # Gaussian across
    cutout[band] += streak.astype(cutout.dtype)
    return {"band": "gri"[band], "angle_deg": float(np.degrees(angle)), "offset_pixels": float(offset),
            "nmgy_per_pixel": per_length}


def _as_califa(wave, cube, sky2, source, blue_edge, covered, star, truth_maps, central, cutout, info, rng):
    """Resample the noiseless cube to the V500 grid (air 3749–7501 Å, 2 Å, 6 Å FWHM) and add noise there.

    Returns the cube as read_califa_cube would: vacuum wavelengths, 1e-17 units, ivar = 1/(10·ERROR)²; the
    file's own arrays (1e-16 units, BADPIX) travel in ``info['califa']`` for the writer.
    """
    wave_vac = air_to_vacuum(califa_wave_air())
    position = (np.log10(wave_vac) - np.log10(wave[0])) / np.log10(wave[1] / wave[0])
    i0 = np.floor(position).astype(int)
    t = (position - i0).astype(np.float32)
    resampled = (1 - t) * cube[..., i0] + t * cube[..., i0 + 1]
    # Degrade from MaNGA-like resolution to V500's 6 Å FWHM (a constant extra Gaussian, in 2 Å pixels).
    sigma_manga = np.median(wave_vac / manga_specres(wave_vac)) / SIGMA_FWHM
    resampled = gaussian_filter1d(resampled, np.sqrt((CALIFA_FWHM / SIGMA_FWHM) ** 2 - sigma_manga**2) / 2.0, axis=-1)
    # A 2 Å pixel collects ~1.7 MaNGA pixels' photons: the variance per pixel of the flux density drops.
    pixel_ratio = wave_vac * np.log(10) * 1e-4 / 2.0
    variance = (sky2 * sky_noise_shape(wave_vac) ** 2)[None, None, :] * pixel_ratio + source * pixel_ratio * np.maximum(resampled, 0)
    error_1e16 = (np.sqrt(variance) / 10.0).astype(np.float32)
    flux_1e16 = ((resampled + np.sqrt(variance) * rng.standard_normal(resampled.shape, dtype=np.float32)) / 10.0).astype(np.float32)
    badpix = np.zeros(resampled.shape, dtype=np.uint8)
    badpix[~covered] = 1
    badpix[..., position < blue_edge] = 1
    flux_1e16[badpix == 1] = 0.0
    flux = flux_1e16 * np.float32(10.0)
    with np.errstate(divide="ignore"):
        ivar = (1.0 / (error_1e16 * np.float32(10.0)) ** 2).astype(np.float32)
    bad = badpix != 0
    flux[bad], ivar[bad] = 0.0, 0.0
    info["califa"] = {"flux_1e16": flux_1e16, "error_1e16": error_1e16, "badpix": badpix}
    return ObservedGalaxy(wave_vac, flux, ivar, badpix, {}, star, truth_maps, central, cutout, info=info)
