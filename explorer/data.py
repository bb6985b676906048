"""The bundle as the dashboard reads it: loaded once per server process and shared by every session.

Per-session state lives in explorer.state; everything here is read-only after loading, so sessions can share it.
"""
from __future__ import annotations

import base64
import hashlib
import os
import sys
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import panel as pn

from explorer.colours import as_categories
from precompute import schema
from precompute.bundle import Bundle, BundleError
from precompute.labels import LabelLog, labels_path
from precompute.node_statistics import density, histogram_fractions, node_medians

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "data" / "bundles" / "demo"
BUNDLE_ENV = "GALAXY_EXPLORER_BUNDLE"

# Axis / legend labels with units for the documented columns; anything else shows its column name.
LABELS = {
    "log_mstar": "Stellar mass [log₁₀ M☉]",
    "bt": "Bulge-to-total (r)",
    "log_age_lw": "Light-weighted age [log₁₀ yr]",
    "log_age_mw": "Mass-weighted age [log₁₀ yr]",
    "logz_lw": "Light-weighted metallicity [log₁₀ Z/Z☉]",
    "logz_mw": "Mass-weighted metallicity [log₁₀ Z/Z☉]",
    "log_sfr": "SFR (100 Myr) [log₁₀ M☉ yr⁻¹]",
    "log_ssfr": "Specific SFR [log₁₀ yr⁻¹]",
    "ew_halpha": "EW(Hα) emission [Å]",
    "d4000": "D4000 (narrow)",
    "log_nii_ha": "log [NII]6583/Hα",
    "log_oiii_hb": "log [OIII]5007/Hβ",
    "inclination_deg": "Inclination [deg]",
    "ellipticity": "Ellipticity 1 − b/a",
    "pa_deg": "Position angle [deg]",
    "re_arcsec": "Half-light radius [arcsec]",
    "re_kpc": "Half-light radius [kpc]",
    "av": "A_V [mag]",
    "vrot_kms": "Rotation velocity [km s⁻¹]",
    "sigma_kms": "Velocity dispersion [km s⁻¹]",
    "velocity_kms": "Line-of-sight velocity [km s⁻¹]",
    "redshift": "Redshift z",
    "ra": "RA [deg]",
    "dec": "Dec [deg]",
    "n_bins": "Binned spectra per galaxy",
    "radius_re": "Radius [R_e]",
    "x_arcsec": "x [arcsec]",
    "y_arcsec": "y [arcsec]",
    "snr": "S/N per bin",
    "n_spaxels": "Spaxels per bin",
    "desom1_qe": "DESOM-1 quantization error",
    "anomaly_score": "Anomaly score",
    "anomaly_convlstm": "Emission-line reconstruction error",
    "anomaly_nucleus": "Nucleus reconstruction error",
    "asymmetry": "Asymmetry A (compact source masked)",
    "compact_asymmetry": "Asymmetry of the brightest compact source",
    "fingerprint_typicality": "Fingerprint: 10th-neighbour distance",
    "anomaly_driver": "What drives the anomaly score",
    "sfh": "Star-formation history",
    "sed_kmeans": "k-means cluster of the latent code (seed 002)",
    "relevance": "Your label: interesting or not",
    "tags": "Your tags",
}
# Columns worth showing first in tooltips and the selection table.
KEY_COLUMNS = ("morphology", "log_mstar", "log_ssfr", "log_age_lw", "ew_halpha", "redshift", "bpt_class")
# Columns that identify rather than describe: never offered as "colour by".
NOT_PROPERTIES = {"galaxy_id", "source", "thumbnail", "galaxy_index", "bin_id", "desom1_node", "desom2_node", "sed_node"}
MAX_CATEGORIES = 20  # more distinct values than this is an identifier, not a category
CLUSTER_METHODS = {"kmeans": "k-means", "gmm": "GMM"}  # the methods of embeddings/<E>/clusters.parquet
# Hover thumbnails are URLs where the server has the thumbnail route (explorer.serve_thumbnails, loaded by
# `panel serve --plugins`); otherwise inline PNGs, only for small surveys (each adds ~30 kB to the page)
HOVER_THUMBNAILS_UP_TO = 500
THUMBNAIL_PLUGIN = "explorer.serve_thumbnails"
THUMBNAIL_ROUTE = "thumbnails"
THUMBNAIL_FOLDERS: dict[str, Path] = {}  # bundle key -> folder, for the thumbnail route
LABEL_COLUMNS = ("relevance", "tags")  # galaxy columns made from the labels file (precompute.labels.LabelLog.columns)
CATEGORY_COLUMNS = (*LABEL_COLUMNS, "sed_kmeans")  # categories whatever their dtype (cluster numbers are names)
# The map of galaxies the dashboard shows beside DESOM-1: DESOM-2 of the fingerprints for a survey of cubes, the
# seed-002 MiniSom map of the latent codes for a survey of single spectra: (section, grid, node column, hits,
# U-matrix, title).
GALAXY_MAPS = (("desom2", schema.DESOM2_GRID, "desom2_node", schema.DESOM2_HITS, schema.DESOM2_UMATRIX, "DESOM-2"),
               ("sed_map", schema.SED_GRID, "sed_node", schema.SED_HITS, schema.SED_UMATRIX, "MiniSom of the latent"))


def label(column: str) -> str:
    return LABELS.get(column, column.replace("_", " "))


def resolve_bundle_path(argv: list[str] | None = None, environ: dict | None = None) -> Path:
    """`--args <bundle>` (panel serve puts it in sys.argv), else $GALAXY_EXPLORER_BUNDLE, else the demo bundle."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if argv:
        return Path(argv[0])
    if environ.get(BUNDLE_ENV):
        return Path(environ[BUNDLE_ENV])
    return DEFAULT_BUNDLE


class ExplorerData:
    """Read-only view of a bundle with the indexes the linked views need (galaxy ↔ spectra ↔ SOM nodes)."""

    def __init__(self, path: str | os.PathLike):
        self.bundle = Bundle(path)
        self.path = self.bundle.path
        galaxies = self.bundle.galaxies.reset_index(drop=True)
        self.bins = self.bundle.bins
        if len(galaxies) == 0:
            raise BundleError(f"{self.path}: galaxies.parquet has no rows")
        self.n_galaxies, self.n_bins = len(galaxies), len(self.bins)
        self.bin_galaxy = self.bins["galaxy_index"].to_numpy(np.int64)
        if self.n_bins and (self.bin_galaxy.min() < 0 or self.bin_galaxy.max() >= self.n_galaxies):
            raise BundleError(f"{self.path}: bins.parquet galaxy_index outside 0..{self.n_galaxies - 1}")
        self.index_of = pd.Series(np.arange(self.n_galaxies), index=galaxies["galaxy_id"])

        self.desom1 = {**self.bundle.read(schema.DESOM1_GRID), "name": "desom1"} if self.bundle.has("desom1") else None
        self.bin_node = self.bins["desom1_node"].to_numpy(np.int64) if self.desom1 else None
        self.desom2 = self.galaxy_node2 = None  # the map of galaxies (GALAXY_MAPS), if the bundle has one
        for section, grid, column, hits, umatrix, title in GALAXY_MAPS:
            if self.bundle.has(section) and self.desom2 is None:
                self.desom2 = {**self.bundle.read(grid), "name": "desom2", "title": title, "hits": hits,
                               "umatrix": umatrix, "node_column": column}
                self.galaxy_node2 = galaxies[column].to_numpy(np.int64)
        self.embeddings: dict = self.bundle.read(schema.EMBEDDING_INDEX) if self.bundle.has("embeddings") else {}
        self.galaxies = self._with_derived_columns(galaxies)
        # labels are shared by every session of this process (one log per bundle); what other processes append
        # to the file is replayed when a session starts or labels (`refresh_labels`)
        self.labels = LabelLog(labels_path(self.path), galaxies["galaxy_id"].to_numpy(), self.bundle.id)
        self.galaxies = self.galaxies.assign(**self.labels.columns())
        self._cache: dict = {}

    # -- columns -------------------------------------------------------------------------------------------------
    def _with_derived_columns(self, galaxies: pd.DataFrame) -> pd.DataFrame:
        """Add "k-NN agreement" between the first two embeddings: the share of common 10 nearest neighbours; and
        every clustering of every embedding as a categorical column (so clusters colour every view)."""
        names = list(self.embeddings)
        galaxies = galaxies.assign(**self._cluster_columns())
        if len(names) >= 2:
            a, b = (self.knn(name)[:, :10] for name in names[:2])
            shared = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)
            column = f"knn_agreement_{names[0]}_{names[1]}"
            LABELS.setdefault(column, f"10-NN agreement, {names[0]} vs {names[1]}")
            galaxies = galaxies.assign(**{column: shared / a.shape[1]})
        return galaxies

    @cached_property
    def colour_columns(self) -> dict[str, str]:
        """Galaxy columns one can colour by: {column: 'numeric' | 'categorical'}."""
        kinds = {}
        for column in self.galaxies.columns:
            if column in NOT_PROPERTIES:
                continue
            kind = "categorical" if column in CATEGORY_COLUMNS else column_kind(self.galaxies[column])
            if kind:
                kinds[column] = kind
        return kinds

    @cached_property
    def numeric_bin_columns(self) -> list[str]:
        return [c for c in self.bins.columns if c not in NOT_PROPERTIES and column_kind(self.bins[c]) == "numeric"]

    def default_colour(self) -> str:
        for column in ("log_ssfr", "log_mstar", "morphology"):
            if column in self.colour_columns:
                return column
        return next(iter(self.colour_columns), "split")

    # -- labels ----------------------------------------------------------------------------------------------------
    def record_label(self, action: str, label: str, galaxies, how: str) -> dict:
        """Add or remove a label for galaxies g (durably, in the labels file) and update the label columns."""
        if action not in ("add", "remove"):
            raise ValueError(f"label action must be add or remove, not {action!r}")
        event = getattr(self.labels, action)(label, galaxies, how)
        self._labels_changed()
        return event

    def undo_label(self, event_id: str) -> dict:
        event = self.labels.undo(event_id)
        self._labels_changed()
        return event

    def refresh_labels(self) -> None:
        """Take in the labels other processes appended to the labels file since this one last read it (a second
        server on the bundle, `panel serve --num-procs`, a script)."""
        if self.labels.refresh():
            self._labels_changed()

    def _labels_changed(self) -> None:
        """The label columns follow the log; statistics cached on them are stale."""
        for column, values in self.labels.columns().items():
            self.galaxies[column] = values
        self._cache = {key: value for key, value in self._cache.items()
                       if not (isinstance(key, tuple) and set(LABEL_COLUMNS) & set(key))}

    # -- galaxies ↔ spectra ↔ nodes --------------------------------------------------------------------------------
    def galaxy_mask(self, galaxies: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.n_galaxies, bool)
        mask[galaxies] = True
        return mask

    def spectra_of(self, galaxies: np.ndarray) -> np.ndarray:
        """Indices s of the binned spectra of the given galaxies."""
        return np.flatnonzero(self.galaxy_mask(galaxies)[self.bin_galaxy])

    def galaxies_of(self, spectra: np.ndarray) -> np.ndarray:
        """Indices g of the galaxies owning `spectra`, sorted, each once."""
        mask = np.zeros(self.n_galaxies, bool)
        mask[self.bin_galaxy[spectra]] = True
        return np.flatnonzero(mask)

    def spectra_in_nodes(self, nodes) -> np.ndarray:
        if self.bin_node is None:
            return np.zeros(0, np.int64)
        mask = np.zeros(self.desom1["rows"] * self.desom1["cols"], bool)
        mask[list(nodes)] = True
        return np.flatnonzero(mask[self.bin_node])

    def galaxies_in_nodes2(self, nodes) -> np.ndarray:
        if self.galaxy_node2 is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.isin(self.galaxy_node2, list(nodes)))

    def node_hits(self, spectra: np.ndarray) -> np.ndarray:
        """Binned spectra per DESOM-1 node among `spectra`."""
        return np.bincount(self.bin_node[spectra], minlength=self.desom1["rows"] * self.desom1["cols"])

    def node_statistic(self, column: str, level: str = "desom1") -> np.ndarray:
        """Per node of DESOM-1 (over its binned spectra) or DESOM-2 (over its galaxies): the median of a numeric
        galaxy column, or its most common category (as strings); NaN / None for empty nodes. Cached per process."""
        key = (column, level)
        if key not in self._cache:
            grid, node = (self.desom1, self.bin_node) if level == "desom1" else (self.desom2, self.galaxy_node2)
            values = self.galaxies[column]
            values = values.to_numpy()[self.bin_galaxy] if level == "desom1" else values.to_numpy()
            frame = pd.DataFrame({"node": node, "value": values})
            k = grid["rows"] * grid["cols"]
            if self.colour_columns[column] == "numeric":
                out = node_medians(values, node, k)
            else:
                frame["value"] = as_categories(frame["value"])
                modes = frame.groupby("node")["value"].agg(lambda v: v.mode().iat[0])
                out = modes.reindex(range(k)).fillna("n/a").to_numpy(object)  # "n/a": an empty node
            self._cache[key] = out
        return self._cache[key]

    def bin_values(self, column: str) -> np.ndarray:
        """A galaxy column repeated for each binned spectrum (cached: views histogram it often)."""
        key = ("bin_values", column)
        if key not in self._cache:
            self._cache[key] = self.galaxies[column].to_numpy()[self.bin_galaxy]
        return self._cache[key]

    def categories(self, column: str) -> list[str]:
        """Categories of a categorical galaxy column, in legend order."""
        from explorer.colours import category_colours

        return list(category_colours(column, self.galaxies[column]))

    def bin_categories(self, column: str) -> np.ndarray:
        """A categorical galaxy column as strings, repeated for each binned spectrum (cached)."""
        key = ("bin_categories", column)
        if key not in self._cache:
            self._cache[key] = as_categories(self.galaxies[column]).to_numpy(dtype=object)[self.bin_galaxy]
        return self._cache[key]

    def survey_histogram(self, column: str, edges: np.ndarray) -> np.ndarray:
        """Probability density of a galaxy column over all binned spectra on `edges`, by the bundle's definition
        of node histograms (values beyond the ends in the end bins), so node and survey curves compare (cached)."""
        key = ("survey_histogram", column, edges.tobytes())
        if key not in self._cache:
            values = self.bin_values(column).astype(float)
            self._cache[key] = density(histogram_fractions(values, edges), edges)
        return self._cache[key]

    def _cluster_columns(self) -> dict[str, np.ndarray]:
        """{cluster_column(E, clustering): labels as strings} for every column of embeddings/<E>/clusters.parquet."""
        columns, self.cluster_tables = {}, {}
        for name in self.embeddings:
            table = self.bundle.read(schema.EMBEDDING_CLUSTERS, embedding=name)
            self.cluster_tables[name] = list(table.columns)
            if len(table) != self.n_galaxies:
                raise BundleError(f"{self.path}: {schema.EMBEDDING_CLUSTERS.at(embedding=name)} has {len(table)} "
                                  f"rows for {self.n_galaxies} galaxies")
            for clustering in table.columns:
                column = cluster_column(name, clustering)
                LABELS.setdefault(column, f"Clusters: {name}, {clustering_label(clustering, self.embeddings[name])}")
                columns[column] = table[clustering].astype(str).to_numpy(object)
        return columns

    def is_cluster_column(self, column: str) -> bool:
        return any(column == cluster_column(embedding, clustering)
                   for embedding, clusterings in self.cluster_tables.items() for clustering in clusterings)

    def clusterings(self, embedding: str) -> list[str]:
        """Clusterings of an embedding (columns of its clusters.parquet: kmeans_k2, gmm_k3, …)."""
        return self.cluster_tables.get(embedding, [])

    # -- embeddings ----------------------------------------------------------------------------------------------
    def umap(self, name: str) -> np.ndarray:
        return self.bundle.read(schema.EMBEDDING_UMAP, embedding=name)

    def knn(self, name: str) -> np.ndarray:
        return self.bundle.read(schema.EMBEDDING_KNN, embedding=name)

    def knn_distance(self, name: str) -> np.ndarray:
        return self.bundle.read(schema.EMBEDDING_KNN_DISTANCE, embedding=name)

    # -- images --------------------------------------------------------------------------------------------------
    def thumbnail_path(self, g: int) -> Path:
        return self.path / self.galaxies["thumbnail"].iat[g]

    @property
    def hover_thumbnails(self) -> list[str] | None:
        """Thumbnail sources for hover tooltips: URLs relative to the page where the server has the thumbnail route,
        else PNG data URIs for small surveys and None for large ones (their payload would be too heavy). Asked per
        session: `panel serve --warm` loads the bundle before it imports the plugins."""
        if THUMBNAIL_PLUGIN in sys.modules:  # imported by `panel serve --plugins` only: never imported here
            return self._thumbnail_urls
        return self._thumbnail_uris

    @cached_property
    def _thumbnail_urls(self) -> list[str]:
        folder = self.path.resolve()
        key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        THUMBNAIL_FOLDERS[key] = folder
        return [f"{THUMBNAIL_ROUTE}/{key}/{quote(t)}" for t in self.galaxies["thumbnail"]]

    @cached_property
    def _thumbnail_uris(self) -> list[str] | None:
        if self.n_galaxies > HOVER_THUMBNAILS_UP_TO:
            return None
        return [thumbnail_uri(self.thumbnail_path(g)) for g in range(self.n_galaxies)]

    @property
    def description(self) -> str:
        m = self.bundle.manifest
        return (f"{self.n_galaxies:,} galaxies · {self.n_bins:,} binned spectra · bundle `{m['bundle_id']}` · "
                f"config `{m['config_hash']}`")


def cluster_column(embedding: str, clustering: str) -> str:
    """The galaxy column holding one clustering of an embedding (e.g. clusters_contrastive_kmeans_k3)."""
    return f"clusters_{embedding}_{clustering}"


def parse_clustering(clustering: str) -> tuple[str, int]:
    """("kmeans", 3) from "kmeans_k3"."""
    method, _, k = clustering.rpartition("_k")
    return method, int(k)


def clustering_label(clustering: str, embedding: dict) -> str:
    """"k-means (cosine), k = 3" for kmeans_k3 of a cosine embedding (its index entry): k-means runs on unit
    vectors there, on the vectors themselves for a Euclidean one."""
    method, k = parse_clustering(clustering)
    metric = f" ({embedding.get('metric')})" if method == "kmeans" and embedding.get("metric") else ""
    return f"{CLUSTER_METHODS.get(method, method)}{metric}, k = {k}"


def column_kind(series: pd.Series) -> str | None:
    if pd.api.types.is_bool_dtype(series):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric" if series.notna().any() else None
    distinct = series.nunique()
    if distinct <= MAX_CATEGORIES and distinct < len(series):  # all values distinct: an identifier, whatever the size
        return "categorical"
    return None


@lru_cache(maxsize=20_000)
def thumbnail_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


@pn.cache(max_items=4)
def load_data(path: str) -> ExplorerData:
    """One ExplorerData per bundle path per server process (pn.cache), shared by all sessions."""
    return ExplorerData(path)
