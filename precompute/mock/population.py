"""Who is in the mock survey: one galaxy's physical parameters drawn from scaling relations.

Everything here is a plain number; the spectra and images are made from these by synthesis.py and
observe.py. The relations are simple fits chosen to look like a MaNGA-like sample of the local universe:

- stellar mass flat in log M 8.5–11.8 (MaNGA's selection), environment cluster / filament-wall / void,
  morphology from the density–morphology relation (Dressler 1980) times a type-dependent mass distribution;
- bulge + disk Sérsic components, B/T (by mass) by type, sizes from size–mass relations (van der Wel 2014
  slopes), random orientation with intrinsically thick disks;
- redshift chosen like MaNGA: the galaxy's half-light radius fills the IFU out to 1.5 or 2.5 R_e;
- star-formation histories per component, the quenched fraction rising with mass and in clusters;
- stellar mass–metallicity relation (Gallazzi et al. 2005 shape) with negative radial gradients;
- rare kinds: disturbed / merging systems and extreme-emission blue compact dwarfs (BCD), and AGN.

``rare_fraction_scale`` (config ``mock.rare_fraction_scale``, default 1) multiplies the chance of each rare kind:
the BCD weight of the morphology draw, the 5 % chance of a disturbed system and the mass-dependent AGN chance
(each capped at 1). It changes only the thresholds the same random draws are compared with, so at 1 every
galaxy is exactly the default one; benchmarks that need more rare galaxies (benchmarks/bench_discovery.py) raise it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MORPHOLOGIES = ("E", "S0", "Sa", "Sb", "Sc", "Sd", "Irr", "BCD")
ENVIRONMENTS = ("cluster", "filament-wall", "void")
ENVIRONMENT_FRACTION = (0.15, 0.65, 0.20)
# Morphology mix per environment (density–morphology relation), before weighting by stellar mass.
MORPHOLOGY_PRIOR = {
    "cluster": (0.22, 0.33, 0.14, 0.12, 0.09, 0.04, 0.05, 0.01),
    "filament-wall": (0.10, 0.16, 0.14, 0.18, 0.18, 0.10, 0.12, 0.02),
    "void": (0.04, 0.07, 0.10, 0.18, 0.24, 0.15, 0.19, 0.03),
}
MASS_OF_TYPE = {  # typical log10 M★ and its spread per type
    "E": (11.0, 0.6), "S0": (10.7, 0.6), "Sa": (10.7, 0.5), "Sb": (10.4, 0.6),
    "Sc": (10.0, 0.6), "Sd": (9.5, 0.6), "Irr": (9.0, 0.5), "BCD": (8.8, 0.3),
}
BULGE_FRACTION = {  # bulge mass fraction range by type (BCD: mass fraction of the central starburst)
    "E": (1.0, 1.0), "S0": (0.45, 0.7), "Sa": (0.3, 0.5), "Sb": (0.15, 0.3),
    "Sc": (0.05, 0.15), "Sd": (0.0, 0.05), "Irr": (0.0, 0.0), "BCD": (0.03, 0.08),
}
BULGE_SERSIC = {"E": (3.0, 6.0), "S0": (2.5, 4.5), "Sa": (2.0, 4.0), "Sb": (1.5, 3.0), "Sc": (1.0, 2.0),
                "Sd": (1.0, 1.5), "Irr": (1.0, 1.0), "BCD": (1.0, 1.0)}
DISK_TAU_GYR = {"Sa": (4.0, 8.0), "Sb": (6.0, 12.0), "Sc": (10.0, 30.0)}  # delayed-τ timescales
DISK_THICKNESS = {"Irr": 0.35, "BCD": 0.4}  # intrinsic axis ratio; spirals 0.15–0.2
P_DISTURBED = 0.05  # chance that a (non-BCD) galaxy is a disturbed / merging system
P_AGN_MAX = 0.15  # chance of an AGN in a massive galaxy with a bulge (sigmoid in mass below)
Z_MIN, Z_MAX = 0.01, 0.15


@dataclass(frozen=True)
class SFH:
    """A star-formation history, in lookback time t (Gyr) since formation started at ``t_start``.

    kind: ``old`` (exp. decline from an early burst), ``declining`` (delayed τ: t e^(−t/τ)), ``constant``,
    ``quenched`` (declining, then e-folding with ``tau_quench`` since ``t_quench`` ago), ``burst``
    (constant plus ``burst_fraction`` of the mass formed in 10 Myr around ``t_burst`` ago).
    """

    kind: str
    t_start: float
    tau: float = 1.0
    t_quench: float = 0.0
    tau_quench: float = 0.3
    burst_fraction: float = 0.0
    t_burst: float = 0.0

    def mass_formed(self, edges: np.ndarray) -> np.ndarray:
        """Fraction of the mass formed in each lookback-time bin [edges[i], edges[i+1]] (sums to 1)."""
        mid = 0.5 * (edges[1:] + edges[:-1])
        dt = np.diff(edges)
        since = np.clip(self.t_start - mid, 0.0, None)  # time since formation started
        alive = mid <= self.t_start
        if self.kind == "old":
            rate = np.exp(-since / self.tau)
        elif self.kind in ("declining", "quenched"):
            rate = since * np.exp(-since / self.tau)
        else:  # constant, burst
            rate = np.ones_like(mid)
        if self.kind == "quenched":
            rate = rate * np.where(mid < self.t_quench, np.exp(-(self.t_quench - mid) / self.tau_quench), 1.0)
        mass = np.where(alive, rate * dt, 0.0)
        mass = mass / mass.sum()
        if self.kind == "burst":
            burst = np.clip(np.minimum(edges[1:], self.t_burst + 0.005) - np.maximum(edges[:-1], self.t_burst - 0.005),
                            0.0, None)
            mass = (1 - self.burst_fraction) * mass + self.burst_fraction * burst / burst.sum()
        return mass


@dataclass(frozen=True)
class GalaxyParams:
    """Physical parameters of one mock galaxy (sky-plane lengths in arcsec, masses in M☉)."""

    morphology: str
    environment: str
    log_mstar: float
    redshift: float
    ra: float
    dec: float
    # structure
    bulge_fraction: float  # by mass (BCD: the central starburst)
    bulge_sersic: float
    re_disk_kpc: float
    re_bulge_kpc: float
    inclination_deg: float
    pa_deg: float  # major axis, east of north
    disk_thickness: float
    bulge_flattening: float  # intrinsic axis ratio of the spheroid
    # stellar populations
    bulge_sfh: SFH
    disk_sfh: SFH
    logz_centre: float  # log Z/Z☉ of the young stars at the centre of the disk
    logz_gradient_disk: float  # dex per R_e
    logz_gradient_bulge: float
    quenched_by_design: bool
    # dust and gas
    dust_scatter: float  # multiplies the A_V expected from SFR and inclination
    diffuse_gas_ew: float  # Å, EW(Hα) of LINER-like gas over old light; 0 = gas-free
    sigma_gas_kms: float  # HII-region gas dispersion
    agn: bool
    # kinematics
    vmax_kms: float
    r_turn_re: float  # arctan rotation-curve turnover, in disk R_e
    bulge_rotation: float  # spheroid rotation speed over its central dispersion
    # rare kinds
    disturbed: bool
    asymmetry: float  # m = 1 lopsidedness of the disk (Irr and mergers)
    asymmetry_angle_deg: float
    companion_offset_arcsec: tuple = (0.0, 0.0)  # second nucleus position (disturbed only)
    companion_fraction: float = 0.0  # its share of the stellar mass
    companion_dv_kms: float = 0.0
    tidal_fraction: float = 0.0  # share of the mass in a tidal arc
    tidal_angle_deg: float = 0.0
    extreme_emission: bool = False

    @property
    def age_universe_gyr(self) -> float:
        z, _, _, age = cosmology_table()
        return float(np.interp(self.redshift, z, age))

    @property
    def kpc_per_arcsec(self) -> float:
        z, _, kpc, _ = cosmology_table()
        return float(np.interp(self.redshift, z, kpc))

    @property
    def luminosity_distance_cm(self) -> float:
        z, dl, _, _ = cosmology_table()
        return float(np.interp(self.redshift, z, dl)) * 3.0857e24


@lru_cache(maxsize=1)
def cosmology_table():
    """(z, D_L in Mpc, proper kpc per arcsec, age of the universe in Gyr) on a fine grid, Planck 2018."""
    from astropy.cosmology import Planck18

    z = np.linspace(0.0005, 0.5, 1000)
    return (z, Planck18.luminosity_distance(z).value, Planck18.kpc_proper_per_arcmin(z).value / 60.0,
            Planck18.age(z).value)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def draw_galaxy(rng: np.random.Generator, re_target_arcsec: float, rare_fraction_scale: float = 1.0) -> GalaxyParams:
    """Draw one galaxy; its redshift puts its half-light radius near ``re_target_arcsec`` (0.01 ≤ z ≤ 0.15).
    ``rare_fraction_scale`` multiplies the chances of the rare kinds (see the module; 1 = the default survey)."""
    if not rare_fraction_scale >= 0:
        raise ValueError(f"rare_fraction_scale must be a number >= 0, got {rare_fraction_scale!r}")
    log_m = rng.uniform(8.5, 11.8)
    environment = ENVIRONMENTS[rng.choice(3, p=ENVIRONMENT_FRACTION)]
    mu, sd = np.array([MASS_OF_TYPE[t] for t in MORPHOLOGIES]).T
    weight = np.array(MORPHOLOGY_PRIOR[environment]) * np.exp(-0.5 * ((log_m - mu) / sd) ** 2) / sd
    weight[MORPHOLOGIES.index("BCD")] *= rare_fraction_scale  # × 1.0 leaves the weights bit for bit
    morphology = MORPHOLOGIES[rng.choice(len(MORPHOLOGIES), p=weight / weight.sum())]

    # Structure. Sizes: late types re ∝ M^0.2, early types re ∝ M^0.55; BCDs are compact.
    bt = rng.uniform(*BULGE_FRACTION[morphology])
    if morphology == "E":
        re_disk = 10 ** (0.6 + 0.55 * (log_m - 11.0) + rng.normal(0, 0.1))
        re_bulge = re_disk
    elif morphology == "BCD":
        re_disk = rng.uniform(0.6, 1.2)
        re_bulge = re_disk * rng.uniform(0.15, 0.3)
    else:
        re_disk = 10 ** (0.65 + 0.2 * (log_m - 10.5) + rng.normal(0, 0.12))
        re_bulge = re_disk * rng.uniform(0.12, 0.3)
    inclination = np.degrees(np.arccos(rng.uniform(0.0, 1.0)))  # isotropic orientations
    thickness = DISK_THICKNESS.get(morphology, rng.uniform(0.15, 0.2))
    flattening = rng.uniform(0.4, 0.9) if morphology == "E" else rng.uniform(0.6, 0.9)

    # Redshift from the IFU fill factor (light-weighted size ≈ mass-weighted mix of the components).
    re_kpc = bt * re_bulge + (1 - bt) * re_disk
    z_grid, _, kpc_grid, age_grid = cosmology_table()
    redshift = float(np.clip(np.interp(re_kpc / re_target_arcsec, kpc_grid, z_grid), Z_MIN, Z_MAX))
    t_universe = float(np.interp(redshift, z_grid, age_grid))

    # Quenching: rises with mass (mass quenching) and in clusters (environment quenching).
    p_quench = 1 - (1 - _sigmoid((log_m - 10.4) / 0.35)) * (1 - {"cluster": 0.45, "filament-wall": 0.1, "void": 0.0}[environment])
    if morphology in ("E", "S0"):
        p_quench = 0.9
    elif morphology in ("Irr", "BCD"):
        p_quench = 0.0
    quenched = bool(rng.uniform() < p_quench)

    t_form = t_universe - rng.uniform(0.3, 1.5)
    pseudo_bulge = morphology in ("Sc", "Sd")
    bulge_sfh = (SFH("declining", t_form, tau=rng.uniform(2.0, 4.0)) if pseudo_bulge
                 else SFH("old", t_form, tau=rng.uniform(0.3, 1.0)))
    if morphology == "BCD":
        bulge_sfh = SFH("burst", rng.uniform(0.5, 2.0), burst_fraction=rng.uniform(0.1, 0.3),
                        t_burst=rng.uniform(0.003, 0.012))
    disk_sfh = _disk_sfh(rng, morphology, quenched, t_universe)

    # Metallicity: stellar mass–metallicity relation, steeper gradients in spheroids.
    # The centre sits ~0.2 dex above the galaxy-wide value that the relation describes.
    logz = float(np.clip(0.15 - 0.40 * (10.9 - log_m) + rng.normal(0, 0.1), -1.2, 0.4))
    if morphology == "BCD":
        logz = rng.uniform(-1.3, -0.9)  # extreme-emission dwarfs are metal-poor
    vmax = 10 ** (2.18 + 0.27 * (log_m - 10.0) + rng.normal(0, 0.05))
    if morphology in ("Irr", "BCD"):
        vmax *= 0.7

    disturbed = bool(rng.uniform() < min(P_DISTURBED * rare_fraction_scale, 1.0)) and morphology != "BCD"
    asymmetry = rng.uniform(0.1, 0.35) if morphology in ("Irr", "BCD") else 0.0
    extra = {}
    if disturbed:
        asymmetry = rng.uniform(0.25, 0.5)
        radius, angle = rng.uniform(0.6, 0.9) * re_target_arcsec * 1.5, rng.uniform(0, 2 * np.pi)
        extra = {"companion_offset_arcsec": (float(radius * np.cos(angle)), float(radius * np.sin(angle))),
                 "companion_fraction": rng.uniform(0.08, 0.25),
                 "companion_dv_kms": rng.choice([-1, 1]) * rng.uniform(80, 300),
                 "tidal_fraction": rng.uniform(0.03, 0.08), "tidal_angle_deg": rng.uniform(0, 360)}
    has_gas = rng.uniform() < (0.5 if morphology == "E" else 0.75)
    p_agn = P_AGN_MAX * _sigmoid((log_m - 10.2) / 0.3) if bt > 0.1 and morphology != "BCD" else 0.0
    p_agn = min(p_agn * rare_fraction_scale, 1.0)
    return GalaxyParams(
        morphology=morphology, environment=environment, log_mstar=float(log_m), redshift=redshift,
        ra=float(rng.uniform(110.0, 260.0)), dec=float(np.degrees(np.arcsin(rng.uniform(-0.1, 0.95)))),
        bulge_fraction=float(bt), bulge_sersic=float(rng.uniform(*BULGE_SERSIC[morphology])),
        re_disk_kpc=float(re_disk), re_bulge_kpc=float(re_bulge), inclination_deg=float(inclination),
        pa_deg=float(rng.uniform(0, 180)), disk_thickness=float(thickness), bulge_flattening=float(flattening),
        bulge_sfh=bulge_sfh, disk_sfh=disk_sfh, logz_centre=logz,
        logz_gradient_disk=float(rng.uniform(-0.2, -0.05)), logz_gradient_bulge=float(rng.uniform(-0.25, -0.1)),
        quenched_by_design=quenched, dust_scatter=float(np.exp(rng.normal(0, 0.25))),
        diffuse_gas_ew=float(rng.uniform(0.3, 1.5)) if has_gas else 0.0,
        sigma_gas_kms=float(rng.uniform(20, 40) if morphology != "BCD" else rng.uniform(30, 50)),
        agn=bool(rng.uniform() < p_agn),
        vmax_kms=float(vmax), r_turn_re=float(rng.uniform(0.15, 0.5)),
        bulge_rotation=float(rng.uniform(0.0, 0.8) if morphology == "E" else rng.uniform(0.0, 0.4)),
        disturbed=disturbed, asymmetry=float(asymmetry), asymmetry_angle_deg=float(rng.uniform(0, 360)),
        extreme_emission=morphology == "BCD", **extra,
    )


def _disk_sfh(rng, morphology: str, quenched: bool, t_universe: float) -> SFH:
    t_start = t_universe - rng.uniform(0.5, 2.5)
    if quenched:
        return SFH("quenched", t_start, tau=rng.uniform(3.0, 8.0), t_quench=rng.uniform(0.5, 5.0),
                   tau_quench=rng.uniform(0.1, 0.4))
    if morphology in DISK_TAU_GYR:
        return SFH("declining", t_start, tau=rng.uniform(*DISK_TAU_GYR[morphology]))
    if morphology == "BCD":
        return SFH("declining", t_start, tau=rng.uniform(3.0, 8.0))
    if morphology in ("Sd", "Irr"):
        return SFH("constant", rng.uniform(4.0, t_start))
    return SFH("declining", t_start, tau=rng.uniform(4.0, 8.0))  # the rare star-forming E / S0
