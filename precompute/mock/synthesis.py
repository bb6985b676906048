"""From a galaxy's parameters to its components' spectra, profiles and velocity fields, and its global truth.

Speed comes from radial nodes: each component's star-formation history, metallicity, dust and dispersion
vary with radius, so its spectrum per unit mass is computed at a few radii (NODES_RE, in units of the
component's R_e) and every position gets the linear interpolation between its two nodes. The cube, the
images and the truth then only need mass maps and node weights (observe.py); whole-galaxy truth uses the
share of each component's mass at each node (integrated once over the Sérsic profile).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import gamma, gammainc

from ..ssp import SSPTemplates, attenuation, broaden, calzetti_k, d4000_narrow, load_templates, R_V_CALZETTI
from . import lines
from .photometry import band_weights
from .population import SFH, GalaxyParams

L_SUN = 3.828e33  # erg/s
NODES_RE = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0])
# Lookback-time bins (Gyr): fine where emission lines and young light come from, logarithmic beyond 100 Myr.
AGE_EDGES_GYR = np.concatenate([[0.0, 0.002, 0.005, 0.01, 0.02, 0.035, 0.06], np.geomspace(0.1, 14.0, 36)])
AGE_MID_GYR = np.maximum(0.5 * (AGE_EDGES_GYR[1:] + AGE_EDGES_GYR[:-1]), 0.003)
RECENT_GYR = 0.1  # SFR is averaged over the last 100 Myr
HA_SIDEBANDS = ((6483.0, 6513.0), (6623.0, 6653.0))  # Å, continuum under Hα for equivalent widths
CENTRAL_APERTURE_ARCSEC = 1.5
LOG_SSFR_FLOOR = -14.0


def sersic_b(n):
    """b_n such that R_e encloses half the light (Ciotti & Bertin 1999 expansion)."""
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


@dataclass
class Component:
    """One stellar component: a profile on the sky, spectra at radial nodes, a velocity field.

    Spectra are rest-frame L☉ Å⁻¹ per M☉, attenuated and broadened; line luminosities erg s⁻¹ per M☉.
    """

    name: str  # bulge, disk, starburst, companion, tidal
    mass: float  # M☉
    re_arcsec: float
    sersic_n: float = 1.0
    q: float = 1.0  # projected axis ratio
    pa_deg: float = 0.0
    centre: tuple = (0.0, 0.0)  # arcsec (x to the west, y to the north)
    asymmetry: float = 0.0
    asymmetry_angle_deg: float = 0.0
    arc: tuple | None = None  # (radius, width, angle_deg, span_deg) of a tidal arc, arcsec
    # kinematics: arctan rotation curve seen at sin i, plus a systemic offset
    vmax_kms: float = 0.0
    r_turn_arcsec: float = 1.0
    sin_i: float = 0.0
    v_offset_kms: float = 0.0
    # per node
    nodes_re: np.ndarray = field(default_factory=lambda: NODES_RE.copy())
    node_fraction: np.ndarray | None = None  # share of the component's mass at each node (sums to 1)
    spectra: np.ndarray | None = None  # (k, n_rest)
    l5500: np.ndarray | None = None  # dust-free L☉/Å per M☉ at 5500 Å
    log_age_lw: np.ndarray | None = None
    log_age_mw: np.ndarray | None = None
    logz_lw: np.ndarray | None = None
    logz_mw: np.ndarray | None = None
    ssfr: np.ndarray | None = None  # yr⁻¹
    av: np.ndarray | None = None  # stellar A_V
    sigma_kms: np.ndarray | None = None
    cont_ha: np.ndarray | None = None  # attenuated L☉/Å per M☉ under Hα
    sf_lines: np.ndarray | None = None  # (k, n_lines)
    liner_lines: np.ndarray | None = None  # (k, n_lines)

    def _frame(self, x, y):
        """Coordinates along the major (a) and minor (b) axis; PA is east of north, east is −x."""
        pa = np.radians(self.pa_deg)
        dx, dy = x - self.centre[0], y - self.centre[1]
        return -dx * np.sin(pa) + dy * np.cos(pa), -dx * np.cos(pa) - dy * np.sin(pa)

    def radius(self, x, y) -> np.ndarray:
        """Elliptical (deprojected) radius in arcsec."""
        a, b = self._frame(x, y)
        return np.hypot(a, b / self.q)

    def surface_mass(self, x, y, resolution: float = 0.0) -> np.ndarray:
        """M☉ per arcsec² at sky positions (arcsec).

        Points closer to the centre than ``resolution`` (the radius each sample stands for) get the mean
        density inside it, so sampling the cusp of a high-n Sérsic profile does not inflate its mass.
        """
        if self.arc is not None:
            radius, width, angle, span = self.arc
            dx, dy = x - self.centre[0], y - self.centre[1]
            dphi = np.angle(np.exp(1j * (np.arctan2(dy, dx) - np.radians(angle))))
            norm = 2 * np.pi * width * radius * np.radians(span)
            return self.mass / norm * np.exp(-0.5 * ((np.hypot(dx, dy) - radius) / width) ** 2
                                             - 0.5 * (dphi / np.radians(span)) ** 2)
        n, re = self.sersic_n, self.re_arcsec
        b = sersic_b(n)
        sigma_e = self.mass * b ** (2 * n) / (2 * np.pi * self.q * re**2 * n * np.exp(b) * gamma(2 * n))
        a, bb = self._frame(x, y)
        r = np.hypot(a, bb / self.q)
        profile = sigma_e * np.exp(-b * ((r / re) ** (1 / n) - 1))
        if resolution > 0:
            inner = self.mass * gammainc(2 * n, b * (resolution / re) ** (1 / n)) / (np.pi * self.q * resolution**2)
            profile = np.where(r < resolution, inner, profile)
        if self.asymmetry:  # m = 1 lopsidedness: more mass on one side, total unchanged
            phi = np.arctan2(bb / self.q, a)
            profile = profile * (1 + self.asymmetry * np.cos(phi - np.radians(self.asymmetry_angle_deg)))
        return profile

    def node_weights(self, x, y) -> np.ndarray:
        """(k, *x.shape) linear-interpolation weights of each position between radial nodes."""
        if len(self.nodes_re) == 1:
            return np.ones((1,) + np.shape(x))
        u = np.clip(self.radius(x, y) / self.re_arcsec, self.nodes_re[0], self.nodes_re[-1])
        j = np.clip(np.searchsorted(self.nodes_re, u, side="right") - 1, 0, len(self.nodes_re) - 2)
        t = (u - self.nodes_re[j]) / (self.nodes_re[j + 1] - self.nodes_re[j])
        w = np.zeros((len(self.nodes_re),) + np.shape(x))
        np.put_along_axis(w, j[None], (1 - t)[None], axis=0)
        np.put_along_axis(w, (j + 1)[None], t[None], axis=0)
        return w

    def velocity(self, x, y) -> np.ndarray:
        """Line-of-sight velocity (km/s) of an arctan rotation curve, R_deprojected = hypot(a, b/q)."""
        if not self.vmax_kms:
            return np.full(np.shape(x), self.v_offset_kms)
        a, b = self._frame(x, y)
        r = np.maximum(np.hypot(a, b / self.q), 1e-6)
        v_circ = self.vmax_kms * 2 / np.pi * np.arctan(r / self.r_turn_arcsec)
        return self.v_offset_kms + v_circ * self.sin_i * a / r

    def enclosed_fraction(self, radius_arcsec: float) -> float:
        """Share of the mass within a circle of this radius (Sérsic, using the circularised radius)."""
        if self.arc is not None:
            return 0.0
        n, b = self.sersic_n, sersic_b(self.sersic_n)
        r = radius_arcsec / (self.re_arcsec * np.sqrt(self.q))
        return float(gammainc(2 * n, b * r ** (1 / n)))


@dataclass
class GalaxyModel:
    """A synthesised galaxy: components, the AGN, and its global truth (columns of docs/bundle-schema.md)."""

    params: GalaxyParams
    components: list
    wave_rest: np.ndarray
    agn_lines: np.ndarray  # (n_lines,) erg/s, attenuated; zeros without AGN
    sigma_agn_kms: float
    sigma_liner_kms: float
    truth: dict

    def rest_frame_spectrum(self) -> np.ndarray:
        """Whole-galaxy stellar spectrum (attenuated), rest frame, L☉/Å."""
        return sum((c.mass * c.node_fraction[:, None] * c.spectra).sum(axis=0) for c in self.components)

    def absolute_magnitudes(self) -> np.ndarray:
        """Rest-frame absolute AB magnitudes in SDSS g, r, i (stars and emission lines, as observed: with dust)."""
        wave = self.wave_rest
        to_10pc = L_SUN * 1e17 / (4 * np.pi * (10 * 3.0857e18) ** 2)  # L☉/Å → 1e-17 erg/s/cm²/Å at 10 pc
        weights = band_weights(wave)
        stars = self.rest_frame_spectrum() @ weights * to_10pc
        line_lum = sum((c.mass * c.node_fraction[:, None] * (c.sf_lines + c.liner_lines)).sum(axis=0)
                       for c in self.components) + self.agn_lines
        pixel = np.clip(np.searchsorted(wave, lines.LINE_WAVE), 0, wave.size - 1)
        per_line = weights[pixel] / np.gradient(wave)[pixel, None]  # a line is a spike of flux/Δλ in one pixel
        nmgy = stars + line_lum @ per_line * to_10pc / L_SUN
        return 22.5 - 2.5 * np.log10(nmgy)


def _node_mass_fraction(n: float, nodes: np.ndarray) -> np.ndarray:
    """Share of a Sérsic profile's mass attributed to each node by the same linear interpolation."""
    u = np.linspace(0.0, 12.0, 3000)
    dm = u * np.exp(-sersic_b(n) * u ** (1 / n))
    j = np.clip(np.searchsorted(nodes, np.minimum(u, nodes[-1]), side="right") - 1, 0, len(nodes) - 2)
    t = (np.minimum(u, nodes[-1]) - nodes[j]) / (nodes[j + 1] - nodes[j])
    out = np.bincount(j, dm * (1 - t), len(nodes)) + np.bincount(j + 1, dm * t, len(nodes))
    return out / out.sum()


def _node_sfh(sfh: SFH, u: np.ndarray, inside_out: bool) -> np.ndarray:
    """(k, n_age) mass fractions at node radii u: disks form inside-out and quench inside-out."""
    rows = []
    for uk in u:
        s = sfh
        if inside_out:
            s = SFH(sfh.kind, max(sfh.t_start - 0.5 * uk, 0.2), tau=sfh.tau * (1 + 0.3 * uk),
                    t_quench=sfh.t_quench / (1 + 0.5 * uk), tau_quench=sfh.tau_quench,
                    burst_fraction=sfh.burst_fraction, t_burst=sfh.t_burst)
        rows.append(s.mass_formed(AGE_EDGES_GYR))
    return np.array(rows)


def _populate(comp: Component, ssp: SSPTemplates, fractions: np.ndarray, logz_nodes: np.ndarray,
              t_universe: float) -> tuple[np.ndarray, np.ndarray]:
    """Fill the component's dust-free node properties; return its dust-free node spectra (k, n_rest),
    all stars and those older than 1 Gyr (whose hot evolved stars ionise LINER-like gas)."""
    # Older stars formed from less enriched gas: 0.15 dex poorer at the age of the universe.
    logz = logz_nodes[:, None] - 0.15 * AGE_MID_GYR[None, :] / t_universe
    pop = ssp.composite(np.broadcast_to(AGE_MID_GYR, fractions.shape), fractions, logz)
    comp.l5500, comp.log_age_lw, comp.log_age_mw = pop.l5500, pop.log_age_lw, pop.log_age_mw
    comp.logz_lw, comp.logz_mw = pop.logz_lw, pop.logz_mw
    comp.ssfr = fractions[:, AGE_MID_GYR < RECENT_GYR].sum(axis=1) / (RECENT_GYR * 1e9)
    old = np.where(AGE_MID_GYR[None, :] > 1.0, fractions, 0.0)
    return pop.flux, ssp.composite(np.broadcast_to(AGE_MID_GYR, fractions.shape), old, logz).flux


def synthesize(params: GalaxyParams, rng: np.random.Generator, ssp: SSPTemplates | None = None) -> GalaxyModel:
    """Build the components of a galaxy and its whole-galaxy truth. ``rng`` draws the AGN/LINER line ratios."""
    ssp = ssp or load_templates()
    p = params
    kpc = p.kpc_per_arcsec
    t_universe = p.age_universe_gyr
    cos_i = np.cos(np.radians(p.inclination_deg))
    sin_i = np.sin(np.radians(p.inclination_deg))
    q_disk = float(np.sqrt(cos_i**2 * (1 - p.disk_thickness**2) + p.disk_thickness**2))
    q_bulge = float(np.sqrt(cos_i**2 * (1 - p.bulge_flattening**2) + p.bulge_flattening**2))
    m_total = 10**p.log_mstar
    m_main = m_total * (1 - p.companion_fraction - p.tidal_fraction)
    m_bulge, m_disk = m_main * p.bulge_fraction, m_main * (1 - p.bulge_fraction)
    sigma_bulge = float(np.clip(10 ** (2.1 + 0.25 * (np.log10(max(m_bulge, 1e7)) - 10.5)), 30, 350))
    re_d, re_b = p.re_disk_kpc / kpc, p.re_bulge_kpc / kpc

    components = []  # (component, SFH mass fractions per node, log Z per node)
    if m_bulge > 0:
        name = "starburst" if p.morphology == "BCD" else "bulge"
        comp = Component(name, m_bulge, re_b, sersic_n=p.bulge_sersic, q=q_bulge,
                         pa_deg=p.pa_deg + float(rng.normal(0, 5)), sin_i=sin_i, r_turn_arcsec=0.5 * re_b,
                         vmax_kms=p.bulge_rotation * sigma_bulge if name == "bulge" else 0.3 * p.vmax_kms)
        fractions = _node_sfh(p.bulge_sfh, comp.nodes_re, inside_out=False)
        logz = p.logz_centre + 0.1 + p.logz_gradient_bulge * comp.nodes_re
        comp.sigma_kms = sigma_bulge * (1 + comp.nodes_re) ** -0.2
        components.append((comp, fractions, logz))
    if m_disk > 0:
        comp = Component("disk", m_disk, re_d, q=q_disk, pa_deg=p.pa_deg, asymmetry=p.asymmetry,
                         asymmetry_angle_deg=p.asymmetry_angle_deg, vmax_kms=p.vmax_kms,
                         r_turn_arcsec=p.r_turn_re * re_d, sin_i=sin_i)
        fractions = _node_sfh(p.disk_sfh, comp.nodes_re, inside_out=True)
        logz = p.logz_centre + p.logz_gradient_disk * comp.nodes_re
        comp.sigma_kms = np.maximum(15.0, (0.2 * p.vmax_kms + 10) * np.exp(-comp.nodes_re / 2))
        components.append((comp, fractions, logz))
    if p.companion_fraction > 0:
        comp = Component("companion", m_total * p.companion_fraction, max(0.8 * re_b, 0.6), sersic_n=2.0, q=0.8,
                         pa_deg=float(rng.uniform(0, 180)), centre=p.companion_offset_arcsec,
                         v_offset_kms=p.companion_dv_kms)
        fractions = _node_sfh(SFH("declining", t_universe - 1.0, tau=2.5), comp.nodes_re, inside_out=False)
        logz = p.logz_centre - 0.1 + p.logz_gradient_bulge * comp.nodes_re
        comp.sigma_kms = np.full(len(comp.nodes_re), 0.6 * sigma_bulge + 30)
        components.append((comp, fractions, logz))
    if p.tidal_fraction > 0:
        arc = (2.0 * re_d, 0.3 * re_d, p.tidal_angle_deg, 45.0)
        comp = Component("tidal", m_total * p.tidal_fraction, re_d, arc=arc, nodes_re=np.array([2.0]),
                         v_offset_kms=0.5 * p.companion_dv_kms)
        fractions = _node_sfh(p.disk_sfh, comp.nodes_re, inside_out=True)
        logz = p.logz_centre + p.logz_gradient_disk * comp.nodes_re
        comp.sigma_kms = np.array([40.0])
        components.append((comp, fractions, logz))

    # Stellar populations at each node (dust-free), then the SFR that sets the dust.
    dust_free = []
    for comp, fractions, logz in components:
        comp.node_fraction = (np.ones(1) if comp.arc is not None
                              else _node_mass_fraction(comp.sersic_n, comp.nodes_re))
        dust_free.append(_populate(comp, ssp, fractions, logz, t_universe))
    sfr = sum(c.mass * (c.node_fraction * c.ssfr).sum() for c, _, _ in components)
    av_centre = float(np.clip(0.15 + 0.25 * (np.log10(max(sfr, 1e-6)) + 1), 0.03, 0.9) * p.dust_scatter
                      * (1 - 0.7 * np.log10(max(cos_i, 0.1))) * (0.5 if p.morphology == "BCD" else 1.0))

    wave = ssp.wave
    k_wave = calzetti_k(lines.LINE_WAVE) / R_V_CALZETTI
    sidebands = np.logical_or.reduce([(wave > lo) & (wave < hi) for lo, hi in HA_SIDEBANDS])
    liner_ratio = lines.liner_ratios(rng)
    for (comp, _, logz), (flux, old_flux) in zip(components, dust_free):
        radius_kpc = comp.nodes_re * comp.re_arcsec * kpc if comp.arc is None else np.array([comp.arc[0] * kpc])
        comp.av = av_centre * np.exp(-radius_kpc / p.re_disk_kpc)
        transmission = attenuation(wave, comp.av)
        comp.spectra = np.array([broaden(f, s, ssp.velocity_scale) for f, s in zip(flux * transmission, comp.sigma_kms)])
        comp.cont_ha = comp.spectra[:, sidebands].mean(axis=1)
        gas_transmission = 10 ** (-0.4 * (comp.av / 0.44)[:, None] * k_wave)  # Calzetti: E_s = 0.44 E_gas
        comp.sf_lines = (comp.ssfr / lines.KENNICUTT_HA)[:, None] * lines.star_forming_ratios(lines.OH_SUN + logz) * gas_transmission
        old_cont = (old_flux * transmission)[:, sidebands].mean(axis=1) * L_SUN
        comp.liner_lines = (p.diffuse_gas_ew * old_cont)[:, None] * liner_ratio[None, :]
    comps = [c for c, _, _ in components]

    # The AGN outshines the central star formation so that its nucleus sits in the Seyfert region.
    agn_lines = np.zeros(len(lines.LINES))
    if p.agn:
        central_ha = sum(c.mass * c.enclosed_fraction(CENTRAL_APERTURE_ARCSEC)
                         * (c.sf_lines[0, lines.HA] + c.liner_lines[0, lines.HA]) for c in comps)
        l_ha = max(10 ** rng.uniform(39.5, 40.8), rng.uniform(3.0, 8.0) * central_ha)
        agn_lines = l_ha * lines.seyfert_ratios(rng) * 10 ** (-0.4 * av_centre / 0.44 * k_wave)
    model = GalaxyModel(params, comps, wave, agn_lines, sigma_agn_kms=float(rng.uniform(150, 300)),
                        sigma_liner_kms=float(rng.uniform(80, 150)), truth={})
    model.truth = global_truth(model, av_centre, q_disk, q_bulge)
    return model


def global_truth(model: GalaxyModel, av_centre: float, q_disk: float, q_bulge: float) -> dict:
    """Whole-galaxy truth from the components' node properties weighted by each node's mass."""
    p, comps, wave = model.params, model.components, model.wave_rest
    mass = [c.mass * c.node_fraction for c in comps]  # M☉ per node

    def total(per_mass):  # a per-M☉ node property summed over the galaxy
        return sum(float((m * per_mass(c)).sum()) for m, c in zip(mass, comps))
    light = total(lambda c: c.l5500)
    m_sum = total(lambda c: np.ones_like(c.l5500))
    sfr = total(lambda c: c.ssfr)
    spectrum = sum((m[:, None] * c.spectra).sum(axis=0) for m, c in zip(mass, comps))
    ha = total(lambda c: c.sf_lines[:, lines.HA] + c.liner_lines[:, lines.HA]) + model.agn_lines[lines.HA]
    cont_ha = total(lambda c: c.cont_ha) * L_SUN
    r_weights = band_weights(wave)[:, 1]
    r_light = {c.name: float((m * (c.spectra @ r_weights)).sum()) for m, c in zip(mass, comps)}
    log_ssfr = max(np.log10(max(sfr, 1e-30)) - p.log_mstar, LOG_SSFR_FLOOR)
    re_arcsec, ellipticity = half_light_radius(comps, r_weights)
    vrot = p.vmax_kms if any(c.name == "disk" for c in comps) else comps[0].vmax_kms
    return {
        "morphology": p.morphology,
        "log_mstar": p.log_mstar,
        "bt": r_light.get("bulge", 0.0) / sum(r_light.values()),
        "log_age_lw": total(lambda c: c.l5500 * c.log_age_lw) / light,
        "log_age_mw": total(lambda c: c.log_age_mw) / m_sum,
        "logz_lw": total(lambda c: c.l5500 * c.logz_lw) / light,
        "logz_mw": total(lambda c: c.logz_mw) / m_sum,
        "log_sfr": log_ssfr + p.log_mstar,
        "log_ssfr": log_ssfr,
        "ew_halpha": ha / cont_ha,
        "d4000": float(d4000_narrow(wave, spectrum)),
        "agn": p.agn,
        "quenched": log_ssfr < -11.0,
        "inclination_deg": p.inclination_deg,
        "ellipticity": ellipticity,
        "pa_deg": p.pa_deg,
        "re_arcsec": re_arcsec,
        "re_kpc": re_arcsec * p.kpc_per_arcsec,
        "environment": p.environment,
        "av": av_centre,
        "vrot_kms": float(vrot),
        "disturbed": p.disturbed,
        "extreme_emission": p.extreme_emission,
    }


def half_light_radius(comps: list, r_weights: np.ndarray) -> tuple[float, float]:
    """r-band half-light radius (arcsec, along the major axis of the brightest component) and its 1 − b/a.

    Growth curves are analytic per Sérsic component (incomplete gamma of the circularised radius), weighted
    by each radius' r-band light per unit mass; off-centre companions and tidal arcs are left out.
    """
    comps = [c for c in comps if c.arc is None and c.centre == (0.0, 0.0)]
    r_per_mass = [c.spectra @ r_weights for c in comps]
    main = comps[int(np.argmax([(c.mass * c.node_fraction * r).sum() for c, r in zip(comps, r_per_mass)]))]
    radius = np.geomspace(1e-3, 30.0, 3000) * max(c.re_arcsec for c in comps)  # circularised, arcsec
    light = np.zeros(radius.size - 1)
    for c, r_node in zip(comps, r_per_mass):
        u = radius / (c.re_arcsec * np.sqrt(c.q))
        enclosed = gammainc(2 * c.sersic_n, sersic_b(c.sersic_n) * u ** (1 / c.sersic_n))
        mid = np.sqrt(u[1:] * u[:-1])
        light += c.mass * np.diff(enclosed) * np.interp(mid, c.nodes_re, r_node)
    cumulative = np.cumsum(light)
    r_half = float(np.interp(0.5 * cumulative[-1], cumulative, radius[1:]))
    return r_half / np.sqrt(main.q), 1.0 - main.q
