"""The bundle schema: every file of a bundle declared once, in code both precompute/ and explorer/ import.

A bundle is one folder of Parquet tables, .npy / .npz arrays, JSON files, PNG thumbnails and blobs (model
weights). Each file is a `BundleFile`: its path, kind, dtype, symbolic shape (``("n_bins", "n_wave")``), unit,
meaning, the section it belongs to and its invariants. The writer (`precompute.bundle.BundleWriter.write`) and the
reader (`Bundle.read`) take paths from these declarations, `validate` checks a bundle against them, and
docs/bundle-schema.md is generated from them (``python -m precompute.schema > docs/bundle-schema.md``; a test
fails when the two differ). This module imports nothing heavier than numpy and pandas, so the dashboard can use it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
KINDS = ("table", "array", "arrays", "json", "blob")
SPLITS = ("train", "val")
GALAXY_PREFIX = "galaxy."  # galaxy properties joined to their bins are named galaxy.<column>


@dataclass(frozen=True)
class Column:
    """A column of a table file: dtype is ``str``, ``bool``, ``int`` / ``float`` (any width) or an exact numpy
    dtype such as ``int32``."""
    name: str
    dtype: str
    meaning: str
    unit: str = ""
    section: str = "core"  # the section that adds the column (core = always there)
    required: bool = True


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle. ``path`` may hold ``{embedding}`` (one file per embedding in embeddings/index.json)
    or ``{thumbnail}``. ``shape`` entries are dimension names or integers; ``checks`` are functions
    ``check(bundle, dims, values, label) -> list of problems`` run by `validate` (their docstrings document them)."""
    path: str
    kind: str
    section: str
    meaning: str
    dtype: str | None = None
    shape: tuple = ()
    unit: str = ""
    required: bool = True  # False: written only in some configurations (validated when present)
    columns: tuple[Column, ...] = ()
    checks: tuple[Callable, ...] = field(default=(), compare=False)

    def at(self, **names) -> str:
        """The file's path for one embedding / thumbnail: ``EMBEDDING_UMAP.at(embedding="contrastive")``."""
        return self.path.format(**names) if "{" in self.path else self.path

    @property
    def templated(self) -> bool:
        return "{" in self.path


# ------------------------------------------------------------------------------------------------ invariants
# Each check gets the Bundle, the resolved dimensions, the file's values and its path, and returns problems.

def finite(bundle, dims, values, label) -> list[str]:
    """all values finite"""
    bad = _count_nonfinite(values)
    return [f"{label}: {bad:,} values are NaN or inf (expected all finite)"] if bad else []


def finite_or_nan(bundle, dims, values, label) -> list[str]:
    """no inf (NaN marks empty nodes)"""
    bad = int(np.isinf(np.asarray(values, float)).sum())
    return [f"{label}: {bad:,} values are inf"] if bad else []


def increasing(bundle, dims, values, label) -> list[str]:
    """strictly increasing"""
    return [] if np.all(np.diff(values) > 0) else [f"{label}: wavelengths are not strictly increasing"]


def not_negative(bundle, dims, values, label) -> list[str]:
    """≥ 0"""
    bad = _count(values, lambda v: ~(v >= 0))
    return [f"{label}: {bad:,} values are negative or NaN (expected ≥ 0)"] if bad else []


def unit_interval(bundle, dims, values, label) -> list[str]:
    """in 0–1"""
    bad = _count(values, lambda v: ~((v >= 0) & (v <= 1)))
    return [f"{label}: {bad:,} values outside 0–1"] if bad else []


def sums_to_bins(bundle, dims, values, label) -> list[str]:
    """sums to n_bins"""
    total = int(np.sum(values))
    return [] if total == dims.get("n_bins") else [f"{label}: hits sum to {total}, bins.parquet has {dims.get('n_bins')} rows"]


def sums_to_galaxies(bundle, dims, values, label) -> list[str]:
    """sums to n_galaxies"""
    total = int(np.sum(values))
    ok = total == dims.get("n_galaxies")
    return [] if ok else [f"{label}: hits sum to {total}, galaxies.parquet has {dims.get('n_galaxies')} rows"]


def counts_sum_to_bins_per_galaxy(bundle, dims, values, label) -> list[str]:
    """row g sums to n_bins of galaxy g"""
    expected = bundle.galaxies["n_bins"].to_numpy()
    wrong = np.flatnonzero(np.asarray(values).sum(axis=1) != expected)
    return [f"{label}: {wrong.size} rows do not sum to the galaxy's n_bins (first: row {wrong[0]})"] if wrong.size else []


def galaxy_indices(bundle, dims, values, label) -> list[str]:
    """indices g in 0..n_galaxies−1"""
    return _in_range(values, dims.get("n_galaxies"), label, "galaxy index")


def node_histograms(bundle, dims, values, label) -> list[str]:
    """per property P: P [K, n_hist] rows sum to 1 over nodes with members, 0 elsewhere; P__edges increasing"""
    problems = []
    names = [k for k in values if not k.endswith("__edges")]
    for name in names:
        hist, edges = np.asarray(values[name], float), values.get(f"{name}__edges")
        if edges is None:
            problems.append(f"{label}: {name} has no {name}__edges")
            continue
        if hist.shape != (dims.get("K"), edges.size - 1):
            problems.append(f"{label}: {name} has shape {hist.shape}, expected (K={dims.get('K')}, "
                            f"{edges.size - 1}) from its edges")
            continue
        if not np.all(np.diff(edges) > 0):
            problems.append(f"{label}: {name}__edges are not increasing")
        sums = hist.sum(axis=1)
        bad = np.flatnonzero(~(np.isclose(sums, 1.0, atol=1e-4) | (sums == 0)))
        if bad.size:
            problems.append(f"{label}: {name} rows must be fractions summing to 1 (or 0 for an empty node); "
                            f"{bad.size} rows do not (node {bad[0]} sums to {sums[bad[0]]:.4g})")
        if (hist < 0).any():
            problems.append(f"{label}: {name} has negative fractions")
    return problems


def spaxel_bin_maps(bundle, dims, values, label) -> list[str]:
    """one int map per galaxy_id; values −1..n_bins(g)−1"""
    galaxies = bundle.galaxies
    missing = sorted(set(galaxies["galaxy_id"]) - set(values))
    problems = [f"{label}: no map for galaxies {missing[:5]}"] if missing else []
    for gid, n in zip(galaxies["galaxy_id"], galaxies["n_bins"]):
        if gid in values:
            m = np.asarray(values[gid])
            if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
                problems.append(f"{label}: map of {gid} must be a 2-D integer array, got {m.dtype} {m.shape}")
            elif m.size and (m.min() < -1 or m.max() >= n):
                problems.append(f"{label}: map of {gid} has bins {m.min()}..{m.max()}, the galaxy has {n}")
    return problems


def knn_neighbours(bundle, dims, values, label) -> list[str]:
    """indices g of training galaxies, never the galaxy itself"""
    problems = _in_range(values, dims.get("n_galaxies"), label, "neighbour index")
    if problems:
        return problems
    values = np.asarray(values)
    train = bundle.galaxies["split"].to_numpy() == "train"
    if not train[values].all():
        problems.append(f"{label}: {int((~train[values]).sum())} neighbours are not training galaxies")
    if (values == np.arange(len(values))[:, None]).any():
        problems.append(f"{label}: a galaxy is its own neighbour")
    return problems


def ascending_rows(bundle, dims, values, label) -> list[str]:
    """finite, ≥ 0, each row nearest first"""
    values = np.asarray(values, float)
    if not np.isfinite(values).all() or (values < 0).any():
        return [f"{label}: distances must be finite and ≥ 0"]
    return [] if np.all(np.diff(values, axis=1) >= -1e-6) else [f"{label}: rows are not sorted nearest first"]


def grid_json(bundle, dims, values, label) -> list[str]:
    """rows, cols ≥ 1; topology rectangular or hexagonal"""
    problems = [f"{label}: missing key {k!r}" for k in ("rows", "cols", "topology") if k not in values]
    if not problems and values["topology"] not in ("rectangular", "hexagonal"):
        problems.append(f"{label}: topology {values['topology']!r} is not rectangular or hexagonal")
    return problems


def line_indices(bundle, dims, values, label) -> list[str]:
    """indices into the lines of `anomaly/lines.json`"""
    return _in_range(values, dims.get("n_lines"), label, "line index")


def embedding_index(bundle, dims, values, label) -> list[str]:
    """{name: {dim, metric ∈ cosine/euclidean, description}}"""
    problems = []
    for name, meta in values.items():
        if not isinstance(meta, dict) or not {"dim", "metric"} <= set(meta):
            problems.append(f"{label}: entry {name!r} needs 'dim' and 'metric'")
        elif meta["metric"] not in ("cosine", "euclidean"):
            problems.append(f"{label}: {name!r} metric {meta['metric']!r} is not cosine or euclidean")
    return problems


def galaxy_rows(bundle, dims, galaxies, label) -> list[str]:
    """`galaxy_id` unique; `split` ∈ {train, val}; `desom2_node` < K2; `sed_node` < K3"""
    problems = []
    if galaxies["galaxy_id"].duplicated().any():
        problems.append(f"{label}: galaxy_id values repeat (first: {galaxies['galaxy_id'][galaxies['galaxy_id'].duplicated()].iat[0]!r})")
    bad = sorted(set(galaxies["split"].astype(str)) - set(SPLITS))
    if bad:
        problems.append(f"{label}: split values {bad} (expected {' or '.join(SPLITS)})")
    if "desom2_node" in galaxies and "K2" in dims:
        problems.extend(_in_range(galaxies["desom2_node"].to_numpy(), dims["K2"], f"{label}: desom2_node", "node"))
    if "sed_node" in galaxies and "K3" in dims:
        problems.extend(_in_range(galaxies["sed_node"].to_numpy(), dims["K3"], f"{label}: sed_node", "node"))
    return problems


def bin_rows(bundle, dims, bins, label) -> list[str]:
    """`galaxy_index` in 0..n_galaxies−1 and matching `galaxy_id`; rows per galaxy = its `n_bins`; `desom1_node` < K"""
    index = bins["galaxy_index"].to_numpy()
    problems = _in_range(index, dims["n_galaxies"], f"{label}: galaxy_index", "galaxy index")
    if problems:
        return problems
    galaxies = bundle.galaxies
    if not np.array_equal(galaxies["galaxy_id"].to_numpy()[index], bins["galaxy_id"].to_numpy()):
        problems.append(f"{label}: galaxy_id differs from the id of the galaxy_index row")
    if "n_bins" in galaxies and not np.array_equal(np.bincount(index, minlength=len(galaxies)),
                                                   galaxies["n_bins"].to_numpy()):
        problems.append(f"{label}: rows per galaxy differ from galaxies.parquet n_bins")
    if "desom1_node" in bins and "K" in dims:
        problems.extend(_in_range(bins["desom1_node"].to_numpy(), dims["K"], f"{label}: desom1_node", "node"))
    return problems


def _in_range(values, n, label, what) -> list[str]:
    values = np.asarray(values)
    if values.size and n is not None and (values.min() < 0 or values.max() >= n):
        return [f"{label}: {what} outside 0..{n - 1} (found {values.min()}..{values.max()})"]
    return []


def _count(values, bad: Callable, chunk: int = 65536) -> int:
    """Count bad entries chunk by chunk, so memory-mapped survey arrays are never loaded whole."""
    flat = values.reshape(len(values), -1) if np.ndim(values) > 1 else np.atleast_1d(values)[:, None]
    return int(sum(bad(np.asarray(flat[i:i + chunk], float)).sum() for i in range(0, len(flat), chunk)))


def _count_nonfinite(values) -> int:
    return _count(values, lambda v: ~np.isfinite(v))


# ----------------------------------------------------------------------------------------------------- files
MANIFEST_KEYS = {
    "schema_version": f"`{SCHEMA_VERSION}`",
    "bundle_id": "`<folder>-<config hash[:8]>-<UTC timestamp>`: names this build in exports",
    "created": "ISO-8601 UTC time of writing",
    "seed": "the run's random seed",
    "config": "the complete configuration (`precompute/config.py` defaults merged with the user's file)",
    "config_hash": "16 hex digits of SHA-256 over the canonical JSON of `config`",
    "sections": "optional sections present, e.g. `[\"desom1\", \"fingerprints\", \"desom2\", \"embeddings\"]`",
    "metrics": "figures measured during the build (per section: e.g. `desom1.topographic_error`)",
    "provenance": "software versions; `inputs` (count, bytes, hash of the sorted paths, the paths or `inputs.txt`; "
                  "`mock:<seed>:<n>` for the mock survey); `skipped` (one line per input left out and why); "
                  "`shards` (prepared, reused); `resumed_stages` (model stages restored from an earlier, killed run of the "
                  "same build); elapsed times; `torch_threads` (CPU results depend on it)",
}
MANIFEST = BundleFile("manifest.json", "json", "core", "build record: keys below")

# The parts of anomaly_score (galaxies columns below), each named as the dashboard says which one drives a galaxy's
ANOMALY_PARTS = {"anomaly_convlstm": "the emission-line cube's reconstruction error",
                 "anomaly_nucleus": "the nucleus's reconstruction error",
                 "asymmetry": "the image's rotational asymmetry",
                 "fingerprint_typicality": "a DESOM-1 fingerprint unlike any other"}

GALAXY_COLUMNS = (
    Column("galaxy_id", "str", "unique id (MaNGA plate-IFU, CALIFA name, file stem)"),
    Column("split", "str", "`train` or `val` (held out, stratified by morphology when known)"),
    Column("source", "str", "input file, or `mock:<seed>:<index>` for the streamed mock survey"),
    Column("redshift", "float", "redshift used to de-redshift"),
    Column("ra", "float", "object position (NaN when unknown)", "deg"),
    Column("dec", "float", "object position (NaN when unknown)", "deg"),
    Column("n_bins", "int", "binned spectra kept for this galaxy"),
    Column("thumbnail", "str", "path of the PNG relative to the bundle"),
    Column("desom2_node", "int32", "DESOM-2 node of the galaxy's fingerprint", section="desom2"),
    Column("anomaly_score", "float32", "anomaly score, high = unusual: Fisher's combination of the parts below "
           "(see section `anomaly`)", section="anomaly"),
    # The parts of anomaly_score, written by builds since issue 13 (older bundles: anomaly_score is the ConvLSTM error)
    Column("anomaly_convlstm", "float32", "the ConvLSTM's mean absolute reconstruction error of the emission-line "
           "cube", section="anomaly", required=False),
    Column("anomaly_nucleus", "float32", "the same error over the nucleus (spaxels within 2 of the crop centre)",
           section="anomaly", required=False),
    Column("asymmetry", "float32", "rotational asymmetry A of the summed g + r + i image (Conselice 2003), the "
           "brightest compact residual masked", section="anomaly", required=False),
    Column("fingerprint_typicality", "float32", "distance to the 10th nearest training galaxy in the `fingerprint` "
           "embedding (when the build made fingerprints)", section="anomaly", required=False),
    Column("compact_asymmetry", "float32", "the asymmetry that masking the brightest compact residual removed (a "
           "star, a second nucleus); not a part of the score", section="anomaly", required=False),
    Column("anomaly_driver", "str", "the part with the smallest tail probability: what makes the galaxy unusual",
           section="anomaly", required=False),
    Column("sed_kmeans", "int32", "k-means cluster of the object's DESOM-1 latent code", section="sed_map"),
    Column("sed_node", "int32", "MiniSom node of the object's DESOM-1 latent code", section="sed_map"),
)
BIN_COLUMNS = (
    Column("galaxy_id", "str", "owning galaxy"),
    Column("galaxy_index", "int32", "row `g` of the owning galaxy"),
    Column("bin_id", "int32", "bin number within the galaxy (values in `spaxel_bins.npz`)"),
    Column("x_arcsec", "float", "flux-weighted bin centroid relative to the IFU centre, along the cube's pixel axes",
           "arcsec"),
    Column("y_arcsec", "float", "as `x_arcsec`", "arcsec"),
    Column("radius_re", "float", "circular radius of the centroid divided by the galaxy's R_e (NaN when unknown)",
           "R_e"),
    Column("snr", "float", "S/N of the binned spectrum (median over good pixels in the normalisation region ± 500 Å)"),
    Column("n_spaxels", "int", "member spaxels"),
    Column("desom1_node", "int32", "node `k` of the spectrum's DESOM-1 best-matching unit", section="desom1"),
    Column("desom1_qe", "float32", "latent distance to the BMU (quantization error)", section="desom1"),
)
def _truth(name: str, dtype: str, meaning: str, unit: str = "") -> Column:
    """A column of the mock survey's truth: documented, not required (a real survey brings its own catalogue)."""
    return Column(name, dtype, meaning, unit, required=False)


MOCK_TRUTH_COLUMNS = (
    _truth("morphology", "str", "E, S0, Sa, Sb, Sc, Sd, Irr, BCD"),
    _truth("log_mstar", "float", "stellar mass", "log10 M☉"),
    _truth("bt", "float", "bulge-to-total light ratio (r band)"),
    _truth("log_age_lw", "float", "light-weighted (5500 Å) stellar age, whole galaxy", "log10 yr"),
    _truth("log_age_mw", "float", "mass-weighted stellar age, whole galaxy", "log10 yr"),
    _truth("logz_lw", "float", "light-weighted stellar metallicity", "log10 Z/Z☉"),
    _truth("logz_mw", "float", "mass-weighted stellar metallicity", "log10 Z/Z☉"),
    _truth("log_sfr", "float", "star-formation rate averaged over the last 100 Myr", "log10 M☉ yr⁻¹"),
    _truth("log_ssfr", "float", "specific SFR", "log10 yr⁻¹"),
    _truth("ew_halpha", "float", "integrated rest-frame equivalent width of Hα emission (positive = emission)", "Å"),
    _truth("d4000", "float", "integrated narrow D4000 (Balogh et al. 1999: 4000–4100 / 3850–3950 Å, per unit "
           "frequency)"),
    _truth("log_nii_ha", "float", "central (r < 1.5″) [NII]6583/Hα", "dex"),
    _truth("log_oiii_hb", "float", "central (r < 1.5″) [OIII]5007/Hβ", "dex"),
    _truth("bpt_class", "str", "`star-forming`, `composite`, `seyfert`, `liner`, `none` (lines too weak), from the "
           "central ratios (Kewley 2001, Kauffmann 2003, Schawinski 2007 lines)"),
    _truth("whan_class", "str", "`SF`, `sAGN`, `wAGN`, `retired`, `passive` (Cid Fernandes et al. 2011)"),
    _truth("agn", "bool", "has a Seyfert-like nucleus"),
    _truth("quenched", "bool", "red / passive (sSFR < 10⁻¹¹ yr⁻¹)"),
    _truth("inclination_deg", "float", "disk inclination (0 = face-on)", "deg"),
    _truth("ellipticity", "float", "1 − b/a of the isophotes"),
    _truth("pa_deg", "float", "position angle of the major axis", "deg"),
    _truth("re_arcsec", "float", "half-light radius", "arcsec"),
    _truth("re_kpc", "float", "half-light radius", "kpc"),
    _truth("environment", "str", "`cluster`, `filament-wall`, `void`"),
    _truth("av", "float", "V-band attenuation at the centre (Calzetti et al. 2000)", "mag"),
    _truth("vrot_kms", "float", "asymptotic rotation velocity", "km s⁻¹"),
    _truth("sigma_kms", "float", "central stellar velocity dispersion", "km s⁻¹"),
    _truth("disturbed", "bool", "merger / disturbed system (asymmetric, second nucleus, tidal light) — rare kind"),
    _truth("extreme_emission", "bool", "extreme emission-line compact dwarf — rare kind"),
    _truth("satellite_trail", "bool", "a satellite trail crosses the g, r, i image — an imaging artefact, not a "
           "property of the galaxy (config `mock.satellite_trail_fraction`, default 0)"),
    _truth("unflagged_star", "bool", "a foreground star lies in the cube and the image with no FORESTAR flag — an "
           "artefact, not a property of the galaxy (config `mock.unflagged_star_fraction`, default 0)"),
)
MOCK_BIN_TRUTH = ("log_age_lw", "logz_lw", "log_ssfr", "ew_halpha", "av", "velocity_kms", "sigma_kms")

GALAXIES = BundleFile("galaxies.parquet", "table", "core", "one row per galaxy `g`", columns=GALAXY_COLUMNS,
                      shape=("n_galaxies",), checks=(galaxy_rows,))
BINS = BundleFile("bins.parquet", "table", "core", "one row per binned spectrum `s`", columns=BIN_COLUMNS,
                  shape=("n_bins",), checks=(bin_rows,))
WAVE = BundleFile("spectra/wave.npy", "array", "core", "rest-frame log-λ grid", "float64", ("n_wave",), "Å",
                  checks=(finite, increasing))
FLUX = BundleFile("spectra/flux.npy", "array", "core", "normalised binned spectra (0 where bad)", "float32",
                  ("n_bins", "n_wave"), checks=(finite,))
IVAR = BundleFile("spectra/ivar.npy", "array", "core", "inverse variance of `flux`; 0 = bad / masked pixel",
                  "float32", ("n_bins", "n_wave"), checks=(finite, not_negative))
SPAXEL_BINS = BundleFile("spaxel_bins.npz", "arrays", "core", "one int32 `[ny, nx]` array per `galaxy_id`: "
                         "Voronoi bin of each spaxel (`bin_id`), −1 = not in any kept bin", checks=(spaxel_bin_maps,))
IMAGES = BundleFile("images/gri.npy", "array", "core", "g, r, i images, `S = config.prepare.image_size`", "float32",
                    ("n_galaxies", 3, "S", "S"), "nanomaggies / pixel", checks=(finite,))
INPUT_LIST = BundleFile("inputs.txt", "blob", "core", "the build's input files, one path per line, when there are "
                        "more than 50 (fewer are listed in `provenance.inputs`)", required=False)
THUMBNAIL = BundleFile("{thumbnail}", "blob", "core", "`thumbnails/<galaxy_id>.png` (path in the `thumbnail` "
                       "column): Lupton et al. (2004) asinh gri composite (astropy `make_lupton_rgb`), PNG RGB")

DESOM1_GRID = BundleFile("desom1/grid.json", "json", "desom1", "`rows`, `cols`, `topology` (`rectangular`/"
                         "`hexagonal`), `latent_dim`, `gamma`", checks=(grid_json,))
DESOM1_MODEL = BundleFile("desom1/model.pt", "blob", "desom1", "autoencoder + SOM weights and their config "
                          "(`precompute.models.desom.DESOM.load`), for `precompute assign`")
DESOM1_PROTOTYPES_LATENT = BundleFile("desom1/prototypes_latent.npy", "array", "desom1", "SOM prototypes in latent "
                                      "space", "float32", ("K", "latent_dim"), checks=(finite,))
DESOM1_PROTOTYPE_SPECTRA = BundleFile("desom1/prototype_spectra.npy", "array", "desom1", "prototypes decoded to "
                                      "spectra", "float32", ("K", "n_wave"), checks=(finite,))
DESOM1_MEMBER_SPECTRA = BundleFile("desom1/member_spectra.npy", "array", "desom1", "members' co-added (mean) "
                                   "spectrum, 16th, 50th, 84th percentile per pixel over members' good pixels (over a "
                                   "random 4,096 of a node's members when it has more); NaN for empty nodes", "float32", (4, "K", "n_wave"), checks=(finite_or_nan,))
DESOM1_HITS = BundleFile("desom1/hits.npy", "array", "desom1", "binned spectra per node", "int64", ("K",),
                         checks=(not_negative, sums_to_bins))
DESOM1_UMATRIX = BundleFile("desom1/umatrix.npy", "array", "desom1", "mean latent distance of each prototype to its "
                            "grid neighbours", "float32", ("rows", "cols"), checks=(finite,))
NODE_STATISTIC_COLUMNS = (
    Column("node", "int", "node `k`"), Column("property", "str", "property name (see below)"),
    Column("n", "int", "members with a finite value"), Column("mean", "float", "mean (of a yes/no property: fraction)"),
    Column("median", "float", "median"), Column("p16", "float", "16th percentile"),
    Column("p84", "float", "84th percentile"),
)
DESOM1_NODE_PROPERTIES = BundleFile("desom1/node_properties.parquet", "table", "desom1", "one row per (node, "
                                    "property); statistics NaN where `n` = 0", columns=NODE_STATISTIC_COLUMNS)
DESOM1_NODE_HISTOGRAMS = BundleFile("desom1/node_histograms.npz", "arrays", "desom1", "per property `P`: float32 "
                                    "`[K, n_hist]` and `P__edges` float64 `[n_hist + 1]`: empirical distribution of "
                                    "`P` among each node's members as fractions of the node's members with a finite "
                                    "value (seed 001 Fig. 6); edges span the 0.5–99.5 percentiles (outliers in the "
                                    "end bins), yes/no properties have 2 bins", checks=(node_histograms,))

FINGERPRINT_COUNTS = BundleFile("fingerprints/counts.npy", "array", "fingerprints", "binned spectra of each galaxy "
                                "per DESOM-1 node", "int32", ("n_galaxies", "K"),
                                checks=(not_negative, counts_sum_to_bins_per_galaxy))
FINGERPRINT_NODE_SCALE = BundleFile("fingerprints/node_scale.npy", "array", "fingerprints", "per-node clipping "
                                    "level: the `config.fingerprints.clip_percentile` (99.9) percentile of the "
                                    "node's counts over the `train` galaxies (at least 1)", "float32", ("K",),
                                    checks=(finite,))
FINGERPRINTS = BundleFile("fingerprints/fingerprints.npy", "array", "fingerprints", "normalised fingerprint: counts "
                          "clipped at `node_scale` and divided by it per node, then divided by the galaxy's maximum "
                          "(0 = no bin, 1 = its most populated node)", "float32", ("n_galaxies", "rows", "cols"),
                          checks=(unit_interval,))

DESOM2_GRID = BundleFile("desom2/grid.json", "json", "desom2", "`rows`, `cols`, `topology`, `latent_dim`, "
                         "`backend` (`desom` or `minisom`)", checks=(grid_json,))
DESOM2_MODEL = BundleFile("desom2/model.pt", "blob", "desom2", "DESOM backend only: the model, for "
                          "`precompute assign`", required=False)
DESOM2_PROTOTYPES = BundleFile("desom2/prototypes.npy", "array", "desom2", "decoded fingerprint prototypes (the "
                               "MiniSom weights for `minisom`)", "float32", ("K2", "rows", "cols"), checks=(finite,))
DESOM2_HITS = BundleFile("desom2/hits.npy", "array", "desom2", "galaxies per node", "int64", ("K2",),
                         checks=(not_negative, sums_to_galaxies))
DESOM2_UMATRIX = BundleFile("desom2/umatrix.npy", "array", "desom2", "U-matrix", "float32", ("rows2", "cols2"),
                            checks=(finite,))

SED_GRID = BundleFile("sed_map/grid.json", "json", "sed_map", "`rows`, `cols`, `topology` of the MiniSom map, "
                      "`latent_dim`, `kmeans_k`", checks=(grid_json,))
SED_WEIGHTS = BundleFile("sed_map/minisom_weights.npy", "array", "sed_map", "MiniSom prototypes in the DESOM-1 "
                         "latent space", "float32", ("K3", "latent_dim"), checks=(finite,))
SED_KMEANS_CENTRES = BundleFile("sed_map/kmeans_centres.npy", "array", "sed_map", "k-means centres in the DESOM-1 "
                                "latent space", "float32", ("kmeans_k", "latent_dim"), checks=(finite,))
SED_HITS = BundleFile("sed_map/hits.npy", "array", "sed_map", "objects per MiniSom node", "int64", ("K3",),
                      checks=(not_negative, sums_to_galaxies))
SED_UMATRIX = BundleFile("sed_map/umatrix.npy", "array", "sed_map", "U-matrix of the MiniSom map", "float32",
                         ("rows3", "cols3"), checks=(finite,))

EMBEDDING_INDEX = BundleFile("embeddings/index.json", "json", "embeddings", "`{name: {\"dim\": D, \"metric\": "
                             "\"cosine\"|\"euclidean\", \"description\": …}}`", checks=(embedding_index,))
EMBEDDING_VECTORS = BundleFile("embeddings/{embedding}/vectors.npy", "array", "embeddings", "the embedding",
                               "float32", ("n_galaxies", "D"), checks=(finite,))
EMBEDDING_UMAP = BundleFile("embeddings/{embedding}/umap.npy", "array", "embeddings", "UMAP fitted on `split == "
                            "'train'` (their fitted positions), applied to `val`", "float32", ("n_galaxies", 2),
                            checks=(finite,))
EMBEDDING_KNN = BundleFile("embeddings/{embedding}/knn.npy", "array", "embeddings", "indices `g` of the k nearest "
                           "training galaxies (self excluded), nearest first; `k = config.projections.n_neighbours`",
                           "int32", ("n_galaxies", "k"), checks=(knn_neighbours,))
EMBEDDING_KNN_DISTANCE = BundleFile("embeddings/{embedding}/knn_distance.npy", "array", "embeddings", "their "
                                    "distances in the embedding's metric (cosine: 1 − cos)", "float32",
                                    ("n_galaxies", "k"), checks=(ascending_rows,))
EMBEDDING_CLUSTERS = BundleFile("embeddings/{embedding}/clusters.parquet", "table", "embeddings", "one row per "
                                "galaxy: int32 `kmeans_k<k>` (k-means on unit vectors = cosine k-means for a cosine "
                                "embedding) and `gmm_k<k>` (full-covariance GMM on the first "
                                "`config.projections.gmm_components` principal components) for every k of "
                                "`config.projections.cluster_ks`; all fitted on the training galaxies",
                                shape=("n_galaxies",))
EMBEDDING_CORRELATION = BundleFile("embeddings/{embedding}/property_correlation.parquet", "table", "embeddings",
                                   "seed 000 Fig. 10: one row per principal component of the embedding (PCA fitted "
                                   "on training galaxies), one column per numeric or boolean galaxy property: "
                                   "Pearson r over all galaxies (NaN when constant)",
                                   columns=(Column("component", "int", "principal component"),
                                            Column("explained_variance", "float", "explained variance ratio")))
EMBEDDING_PROJECTOR = BundleFile("embeddings/{embedding}/projector.pkl", "blob", "embeddings", "the fitted "
                                 "projections (precompute.projections.EmbeddingProjector, pickled: its UMAP, "
                                 "clusters and neighbour search), for placing new galaxies on the UMAP (`assign`, "
                                 "the dashboard's placed spectra); kept only for `fingerprint` and `desom1_latent`, "
                                 "the embeddings a new object gets without the cube models (it holds the training "
                                 "vectors again: grows with the survey). A pickle runs code when loaded: open "
                                 "bundles you trust, as with any model file", required=False)
FINGERPRINT_EMBEDDING = "fingerprint"  # seed 001: a galaxy's histogram over DESOM-1 nodes, as an embedding
LATENT_EMBEDDING = "desom1_latent"  # seed 002: a survey of single spectra embedded by their DESOM-1 latent codes
PLACED_EMBEDDINGS = (FINGERPRINT_EMBEDDING, LATENT_EMBEDDING)  # those with a projector: `assign` places on them
def umap_columns(embedding: str) -> tuple[str, str]:
    """Columns of `python -m precompute assign`'s table (and the dashboard's placed spectra) holding a placed
    galaxy's position on an embedding's UMAP, through that embedding's EMBEDDING_PROJECTOR."""
    return f"{embedding}_umap_1", f"{embedding}_umap_2"


EMBEDDING_FILES = (EMBEDDING_VECTORS, EMBEDDING_UMAP, EMBEDDING_KNN, EMBEDDING_KNN_DISTANCE, EMBEDDING_CLUSTERS,
                   EMBEDDING_CORRELATION, EMBEDDING_PROJECTOR)

CONTRASTIVE_PCA = BundleFile("contrastive/pca.npz", "arrays", "contrastive", "`wave` float64 `[n_wave]`, `mean` "
                             "`[n_wave]`, `components` `[29, n_wave]`, `explained_variance_ratio` `[29]`: PCA of the "
                             "spaxel spectra with S/N > `config.contrastive.pca_min_snr` of the training galaxies: "
                             "channels 0–28 of the cube maps")
CONTRASTIVE_MODEL = BundleFile("contrastive/model.pt", "blob", "contrastive", "the CNN (`network` config, "
                               "`state_dict`), augmentation settings, training history")

ANOMALY_LINES = BundleFile("anomaly/lines.json", "json", "anomaly", "`names`, `wave` (vacuum Å) of the 19 lines, "
                           "`n_bins` (pixels around each line), `crop` (spaxels), `snr_softening`, `detection_snr`")
ANOMALY_LINE_RESIDUALS = BundleFile("anomaly/line_residuals.npy", "array", "anomaly", "the score's mean absolute "
                                    "error per line (NaN where nothing is detected); the relevance model of "
                                    "`precompute.rank` learns in their percentiles", "float32",
                                    ("n_galaxies", "n_lines"), checks=(finite_or_nan,))
ANOMALY_SPAXEL_RESIDUALS = BundleFile("anomaly/spaxel_residuals.npy", "array", "anomaly", "the score's mean "
                                      "absolute error per spaxel of the centred crop (NaN where nothing is "
                                      "detected)", "float32", ("n_galaxies", "crop", "crop"), checks=(finite_or_nan,))
ANOMALY_MODEL = BundleFile("anomaly/model.pt", "blob", "anomaly", "the ConvLSTM autoencoder (`network` config, "
                           "`state_dict`), `snr_softening`, `detection_snr`, loss history")
# Written by builds since issue 13 (the dashboard's "why unusual" maps); older bundles lack them.
ANOMALY_TOP_LINES = BundleFile("anomaly/top_lines.npy", "array", "anomaly", "each galaxy's `n_top` lines of largest "
                               "`line_residuals`, largest first (indices into the `names` of `anomaly/lines.json`; "
                               "undetected lines last)", "int32", ("n_galaxies", "n_top"), required=False,
                               checks=(line_indices,))
ANOMALY_TOP_LINE_MAPS = BundleFile("anomaly/top_line_maps.npy", "array", "anomaly", "for each of those lines, 3 "
                                   "maps of the centred crop: data and reconstruction (the network's asinh(S/N / "
                                   "`snr_softening`), mean over the line's `n_bins` pixels) and the residual (the "
                                   "score's mean absolute error per spaxel for that line, NaN where nothing is "
                                   "detected)", "float32", ("n_galaxies", "n_top", 3, "crop", "crop"),
                                   required=False, checks=(finite_or_nan,))

IMAGE_VAE_CORRELATION = BundleFile("image_vae/property_correlation.parquet", "table", "image_vae", "one row per "
                                   "latent feature, one column per numeric or boolean galaxy property: Pearson r",
                                   columns=(Column("feature", "int", "latent feature"),))
IMAGE_VAE_TRAVERSALS = BundleFile("image_vae/traversals.npy", "array", "image_vae", "images decoded while one "
                                  "feature sweeps its 2nd–98th percentile (others at their median): what each "
                                  "feature means", "float32", ("vae_latent_dim", "n_steps", "S", "S"),
                                  checks=(finite,))
IMAGE_VAE_MODEL = BundleFile("image_vae/model.pt", "blob", "image_vae", "the VAE (`network` config, `state_dict`), "
                             "`band`, `stretch` (log10-flux range mapped to 0–1), loss history")

FILES: tuple[BundleFile, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, BundleFile))
SECTIONS = ("core", "desom1", "fingerprints", "desom2", "sed_map", "embeddings", "contrastive", "anomaly", "image_vae")
# A section whose model writes an embedding of the same name (listed in embeddings/index.json).
EMBEDDING_SECTIONS = ("contrastive", "anomaly", "image_vae")
NEEDS = {"fingerprints": "desom1", "desom2": "fingerprints", "sed_map": "desom1"}  # a section needs another to make sense


def section_files(section: str) -> tuple[BundleFile, ...]:
    if section not in SECTIONS:
        raise KeyError(f"unknown bundle section {section!r}; known: {', '.join(SECTIONS)}")
    return tuple(f for f in FILES if f.section == section)


# ------------------------------------------------------------------------------------------------ validation
def validate(path: str | Path) -> list[str]:
    """Check a bundle folder against the schema; returns one line per problem (empty: the bundle is valid).

    Checks the manifest, that every declared file is present with its kind, dtype and shape (dimensions resolved
    from the tables, the grids, the embedding index and across files), the required table columns and their
    dtypes, and each file's invariants. Arrays are memory-mapped and scanned in chunks."""
    from precompute.bundle import Bundle, BundleError  # the reader is the one that opens files

    try:
        bundle = Bundle(path, check_files=False)
    except BundleError as err:
        return [str(err)]
    problems: list[str] = []
    sections = ["core", *bundle.manifest.get("sections", [])]
    for section in sections:
        if section not in SECTIONS:
            problems.append(f"manifest.json: unknown section {section!r} (known: {', '.join(SECTIONS)})")
        elif section in NEEDS and NEEDS[section] not in sections:
            problems.append(f"manifest.json: section {section!r} needs section {NEEDS[section]!r}")
    for key in MANIFEST_KEYS:
        if key not in bundle.manifest:
            problems.append(f"manifest.json: missing key {key!r}")
    dims: dict = {}
    try:
        dims["n_galaxies"], dims["n_bins"] = len(bundle.galaxies), len(bundle.bins)
    except Exception as err:  # without the two tables nothing else can be sized
        return problems + [f"galaxies.parquet / bins.parquet: cannot be read ({type(err).__name__}: {err})"]
    for level, suffix, grid_file in (("desom1", "", DESOM1_GRID), ("desom2", "2", DESOM2_GRID),
                                     ("sed_map", "3", SED_GRID)):
        if level in sections and (bundle.path / grid_file.path).exists():
            grid = bundle.read(grid_file)
            if isinstance(grid, dict) and {"rows", "cols"} <= set(grid):
                dims.update({f"rows{suffix}": grid["rows"], f"cols{suffix}": grid["cols"],
                             f"K{suffix}": grid["rows"] * grid["cols"]})
                if level == "desom1":
                    dims["latent_dim"] = grid.get("latent_dim")
    config = bundle.manifest.get("config", {})
    dims["S"] = config.get("prepare", {}).get("image_size")
    embeddings = {}
    for spec in FILES:
        if spec.section not in sections:
            continue
        if spec is THUMBNAIL:
            _check_thumbnails(bundle, problems)
        elif spec.path.startswith("embeddings/{embedding}"):
            continue  # below, once the index is read
        else:
            values = _check_file(bundle, spec, {}, dims, sections, problems)
            if spec is EMBEDDING_INDEX and isinstance(values, dict):
                embeddings = values
    for section in EMBEDDING_SECTIONS:
        if section in sections and section not in embeddings:
            problems.append(f"{EMBEDDING_INDEX.path}: section {section!r} is in the manifest but not in the index")
    for name, meta in embeddings.items():
        per = {**dims, "D": meta.get("dim") if isinstance(meta, dict) else None,
               "k": config.get("projections", {}).get("n_neighbours")}
        for spec in EMBEDDING_FILES:
            _check_file(bundle, spec, {"embedding": name}, per, sections, problems)
        dims.update({k: v for k, v in per.items() if k not in dims})
    return problems


def _check_file(bundle, spec: BundleFile, names: dict, dims: dict, sections, problems: list[str]):
    """Presence, kind, dtype, shape, columns and invariants of one file; returns its values (None if unusable)."""
    label = spec.at(**names)
    path = bundle.path / label
    if not path.exists():
        if spec.required:
            problems.append(f"{label}: missing (declared by section {spec.section!r})")
        return None
    try:
        values = bundle.read(spec, **names)
    except Exception as err:  # any unreadable file is one problem to report, whatever the library raised
        problems.append(f"{label}: cannot be read as {spec.kind} ({type(err).__name__}: {err})")
        return None
    before = len(problems)
    if spec.kind == "array":
        if spec.dtype and values.dtype != np.dtype(spec.dtype):
            problems.append(f"{label}: dtype {values.dtype}, expected {spec.dtype}")
        _check_shape(values.shape, spec.shape, dims, label, problems)
    elif spec.kind == "table":
        if spec.shape:
            _check_shape((len(values),), spec.shape, dims, label, problems)
        for column in spec.columns:
            if column.section not in sections:
                continue
            if column.name not in values:
                if column.required:
                    problems.append(f"{label}: missing column {column.name!r}")
            elif not _dtype_matches(values[column.name], column.dtype):
                problems.append(f"{label}: column {column.name!r} has dtype {values[column.name].dtype}, "
                                f"expected {column.dtype}")
    if len(problems) == before:  # invariants only make sense on a file of the right shape
        for check in spec.checks:
            problems.extend(check(bundle, dims, values, label))
    return values


def _check_shape(shape: tuple, symbolic: tuple, dims: dict, label: str, problems: list[str]) -> None:
    if len(shape) != len(symbolic):
        problems.append(f"{label}: shape {shape}, expected [{', '.join(map(str, symbolic))}]")
        return
    for size, name in zip(shape, symbolic):
        expected = name if isinstance(name, int) else dims.get(name)
        if expected is None and not isinstance(name, int):
            dims[name] = size  # first file to show a free dimension fixes it for the others
        elif size != expected:
            problems.append(f"{label}: shape {shape}, expected [{', '.join(map(str, symbolic))}] with "
                            f"{name} = {expected}")
            return


def _dtype_matches(column: pd.Series, dtype: str) -> bool:
    if dtype == "str":
        return pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column)
    if dtype == "bool":
        return pd.api.types.is_bool_dtype(column)
    if dtype == "int":
        return pd.api.types.is_integer_dtype(column)
    if dtype == "float":
        return pd.api.types.is_float_dtype(column) or pd.api.types.is_integer_dtype(column)
    return column.dtype == np.dtype(dtype)


def _check_thumbnails(bundle, problems: list[str]) -> None:
    if "thumbnail" not in bundle.galaxies:
        return
    missing = [t for t in bundle.galaxies["thumbnail"] if not (bundle.path / t).is_file()]
    if missing:
        problems.append(f"{missing[0]}: missing ({len(missing)} thumbnails named in galaxies.parquet are absent)")


# ---------------------------------------------------------------------------------------------- documentation
def _shape_text(spec: BundleFile) -> str:
    if spec.kind == "table":
        return "table"
    if spec.kind == "array":
        return f"{spec.dtype} `[{', '.join(map(str, spec.shape))}]`"
    return {"arrays": "npz", "json": "JSON", "blob": "binary"}[spec.kind]


def _files_table(specs) -> list[str]:
    lines = ["| file | type / shape | unit | content | checked |", "|---|---|---|---|---|"]
    for spec in specs:
        checks = "; ".join(c.__doc__.strip() for c in spec.checks)
        name = "`thumbnails/<galaxy_id>.png`" if spec is THUMBNAIL else f"`{spec.path}`"
        lines.append(f"| {name} | {_shape_text(spec)} | {spec.unit} | {spec.meaning} | {checks} |")
    return lines


def _columns_table(columns, with_section: bool = False) -> list[str]:
    head = "| column | type | unit | meaning |" + (" added by |" if with_section else "")
    lines = [head, "|---|---|---|---|" + ("---|" if with_section else "")]
    for c in columns:
        lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {c.meaning} |" + (f" {c.section} |" if with_section else ""))
    return lines


def render_markdown() -> str:
    """docs/bundle-schema.md, generated from the declarations above and the prose in SECTION_TEXT."""
    from precompute.schema_text import INTRO, SECTION_TEXT, SECTION_TITLES

    out = [f"# Bundle schema, version {SCHEMA_VERSION}", "",
           "<!-- generated by `python -m precompute.schema > docs/bundle-schema.md` from precompute/schema.py; "
           "do not edit by hand -->", "", INTRO.strip(), "",
           "## manifest.json (always)", "| key | meaning |", "|---|---|"]
    out += [f"| `{k}` | {v} |" for k, v in MANIFEST_KEYS.items()]
    out += ["", "## Core files (always)", *_files_table([f for f in section_files("core") if f is not MANIFEST]), "",
            "### galaxies.parquet", *_columns_table(GALAXY_COLUMNS, with_section=True), "",
            "### bins.parquet", *_columns_table(BIN_COLUMNS, with_section=True), "",
            "Mock per-bin truth (float columns of `bins.parquet` in mock builds, flux-weighted over member spaxels, "
            "definitions as in the galaxy truth): " + ", ".join(f"`{c}`" for c in MOCK_BIN_TRUTH) + ".", "",
            "## Mock survey truth (galaxy columns; `python -m precompute mock` also writes them to `truth.parquet`)",
            *_columns_table(MOCK_TRUTH_COLUMNS), "",
            "## Optional sections", SECTION_TEXT["optional"].strip(), ""]
    for section in SECTIONS[1:]:
        out += [f"### `{section}` — {SECTION_TITLES[section]}"]
        before, after = SECTION_TEXT.get(section, ("", ""))
        if before.strip():
            out += [before.strip()]
        out += _files_table(section_files(section))
        for spec in section_files(section):
            if spec.columns:
                out += ["", f"Columns of `{spec.path}`:", *_columns_table(spec.columns)]
        if after.strip():
            out += ["", after.strip()]
        out += [""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    print(render_markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
