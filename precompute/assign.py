"""`python -m precompute assign`: place new spectra or cubes on a bundle's frozen spectral maps.

    python -m precompute assign --bundle data/bundles/demo FILE... --out placed.csv [--catalogue drpall.fits]
                                [--min-coverage 0.6] [--workers N | --scheduler ADDRESS]

Every input is prepared with the bundle's own configuration (same rest-frame grid, normalisation, Voronoi
binning), then each binned spectrum gets one CSV row: source file, spectrum index (Voronoi bin of a cube, or index
in a set of spectra), galaxy id, DESOM-1 node (row, column), latent quantization error, fractional reconstruction
error over the observed pixels, `coverage` (share of the rest-frame grid observed), `second_node` (the next
nearest prototype), `confidence` (0–1: how much of the latent neighbourhood weight falls on the node and its grid
neighbours) and the member medians of every property of that node. Rows of a cube also carry the galaxy's
fingerprint (non-zero nodes as ``k:value``), its DESOM-2 node and its position on the fingerprint embedding's UMAP
(``fingerprint_umap_1``, ``fingerprint_umap_2``, through the bundle's fitted projector). On a bundle of single
spectra (seed 002) a spectrum gets its place among them instead: MiniSom node ``sed_node``, k-means group
``sed_kmeans`` and position on the latent UMAP (``desom1_latent_umap_1``, ``desom1_latent_umap_2``).

A spectrum need not cover the whole grid (an SDSS spectrum starting at 3811 Å rest-frame, a chip gap, masked
sky): its missing pixels are filled by gappy reconstruction and, if its normalisation window is missing, its level
is fitted against the decoded spectrum (precompute.placement). Below `--min-coverage` of the grid it is not placed.
An input the bundle cannot represent (too little coverage, no overlap with the grid, every pixel bad, ...) gets a
row whose `error` column says why; the other inputs still go through.
"""
from __future__ import annotations

import argparse
import io
import pickle
import sys
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from precompute import schema
from precompute.bundle import Bundle, BundleError
from precompute.engine import add_engine_arguments, engine
from precompute.fingerprints import fingerprint_counts, fingerprint_string, normalise_fingerprints
from precompute.models.desom import DESOM
from precompute.models.som import best_matching_units
from precompute.observation import InputError
from precompute.placement import MIN_COVERAGE, place_spectra
from precompute.prepare import rest_frame_grid
from precompute.sed_map import nearest

COLUMNS = ["source", "spectrum", "galaxy_id", "node", "bmu_row", "bmu_col", "qe", "recon_error", "coverage",
           "second_node", "confidence"]


@dataclass
class FrozenMaps:
    """What placing needs from a bundle: the trained DESOM-1 (and DESOM-2) and the per-node property medians."""

    bundle: Bundle
    desom1: DESOM
    node_medians: pd.DataFrame  # [K, properties], columns named median_<property>
    node_scale: np.ndarray | None  # fingerprint normalisation levels (None without a fingerprints section)
    desom2: DESOM | None  # the DESOM-2 model (DESOM backend)
    desom2_prototypes: np.ndarray | None  # [K2, rows*cols] fingerprint prototypes (MiniSom backend)
    sed_map: tuple[np.ndarray, np.ndarray] | None  # seed-002 bundles: (MiniSom weights, k-means centres) in latent
    _projectors: dict = field(default_factory=dict)  # embedding -> fitted projector (None: not stored), when used

    @classmethod
    def load(cls, path, device: str = "cpu") -> "FrozenMaps":
        bundle = Bundle(path)
        if not bundle.has("desom1"):
            raise BundleError(f"{bundle.path}: bundle has no desom1 section; build it with `python -m precompute build`")
        desom1 = DESOM.load(io.BytesIO(bundle.read(schema.DESOM1_MODEL)), device=device)
        table = bundle.read(schema.DESOM1_NODE_PROPERTIES)
        medians = table.pivot(index="node", columns="property", values="median").add_prefix("median_")
        medians = medians.reindex(range(desom1.rows * desom1.cols))
        node_scale = np.asarray(bundle.read(schema.FINGERPRINT_NODE_SCALE)) if bundle.has("fingerprints") else None
        desom2 = prototypes = None
        if bundle.has("desom2") and node_scale is not None:
            if bundle.read(schema.DESOM2_GRID)["backend"] == "desom":
                desom2 = DESOM.load(io.BytesIO(bundle.read(schema.DESOM2_MODEL)), device=device)
            else:
                prototypes = np.asarray(bundle.read(schema.DESOM2_PROTOTYPES), np.float32)
                prototypes = prototypes.reshape(len(prototypes), -1)
        sed_map = ((np.asarray(bundle.read(schema.SED_WEIGHTS)), np.asarray(bundle.read(schema.SED_KMEANS_CENTRES)))
                   if bundle.has("sed_map") else None)
        return cls(bundle, desom1, medians, node_scale, desom2, prototypes, sed_map)

    def place(self, flux: np.ndarray, ivar: np.ndarray,
              min_coverage: float = MIN_COVERAGE) -> tuple[pd.DataFrame, np.ndarray]:
        """Per prepared spectrum (precompute.placement.place_spectra): the table (node, bmu_row, bmu_col, qe,
        recon_error, coverage, second_node, confidence, error: "" or why it was not placed, and the node's
        property medians) and the DESOM-1 latent codes [N, latent_dim]."""
        prepare_config = self.bundle.config["prepare"]
        placement = place_spectra(self.desom1, flux, ivar, rest_frame_grid(prepare_config),
                                  prepare_config["norm_window"], min_coverage)
        medians = self.node_medians.reindex(placement.node).reset_index(drop=True)  # node -1: NaN
        return pd.concat([placement.table(self.desom1.cols), medians], axis=1), placement.latent

    def umap_position(self, embedding: str, vectors: np.ndarray) -> np.ndarray | None:
        """UMAP coordinates [n, 2] of new vectors of one of the bundle's embeddings through its fitted projector
        (None when the bundle keeps none: built before the projectors were stored)."""
        if embedding not in self._projectors:
            stored = self.bundle.path / schema.EMBEDDING_PROJECTOR.at(embedding=embedding)
            self._projectors[embedding] = None
            if stored.is_file():
                try:
                    self._projectors[embedding] = pickle.loads(stored.read_bytes())
                except Exception as err:  # pickled by other library versions: placing goes on without the UMAP
                    print(f"assign: {stored}: cannot be loaded ({type(err).__name__}: {err}); placed galaxies get "
                          f"no position on the {embedding} UMAP", file=sys.stderr)
        projector = self._projectors[embedding]
        return None if projector is None else projector.umap(np.asarray(vectors, np.float32).reshape(len(vectors), -1))

    def galaxy_fingerprint(self, nodes: np.ndarray):
        """(fingerprint [rows, cols], DESOM-2 node or -1) of one galaxy from its bins' DESOM-1 nodes."""
        rows, cols = self.desom1.rows, self.desom1.cols
        counts = fingerprint_counts(np.zeros(len(nodes), int), nodes, 1, rows * cols)
        fingerprint = normalise_fingerprints(counts, self.node_scale, rows, cols)
        if self.desom2 is not None:
            return fingerprint[0], int(self.desom2.transform(fingerprint)[0])
        if self.desom2_prototypes is not None:
            idx, _ = best_matching_units(torch.as_tensor(fingerprint.reshape(1, -1)),
                                         torch.as_tensor(self.desom2_prototypes))
            return fingerprint[0], int(idx[0, 0])
        return fingerprint[0], -1


def assign_files(bundle_path, paths, catalogue=None, key: str | None = None, column_map: dict | None = None,
                 device: str = "cpu", client=None, min_coverage: float = MIN_COVERAGE) -> pd.DataFrame:
    """Place every spectrum of every file on the bundle's maps; one row per binned spectrum or failed input.
    One task per file on the engine `client` (precompute.engine; None = in this process), rows in file order.
    Spectra observing less than `min_coverage` of the rest-frame grid get an error row."""
    from precompute import formats
    from precompute.engine import run_tasks
    from precompute.shards import file_units

    config = Bundle(bundle_path).config
    key = key or config["inputs"].get("catalogue_key", "plateifu")
    table = None if catalogue is None else formats.read_catalogue(catalogue, key=key, column_map=column_map or {})
    frames = [frame for _, placed in run_tasks(client, assign_file, file_units(paths), "assign",
                                               bundle_path=str(bundle_path), catalogue=table, device=device,
                                               min_coverage=min_coverage)
              for frame in placed]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if "error" not in out:
        out["error"] = ""
    out["error"] = out["error"].fillna("")
    return out[[c for c in out.columns if c != "error"] + ["error"]]


@lru_cache(maxsize=2)
def frozen_maps(bundle_path: str, device: str) -> FrozenMaps:
    """One copy of a bundle's maps per process (each worker loads them once for all its files)."""
    return FrozenMaps.load(bundle_path, device=device)


def assign_file(unit, bundle_path: str, catalogue=None, device: str = "cpu",
                min_coverage: float = MIN_COVERAGE) -> list[pd.DataFrame]:
    """Task: the rows of one input file (its binned spectra placed, or one error row per failure)."""
    from precompute import formats
    from precompute.prepare import prepare_galaxy, split_spectra

    maps, path = frozen_maps(bundle_path, device), unit.path
    try:
        observations = split_spectra(formats.read_observation(path, catalogue=catalogue))
    except (InputError, OSError) as err:
        return [_error_row(path, None, None, err)]
    frames = []
    for index, obs in enumerate(observations):
        spectrum = None if obs.is_cube else index
        try:
            galaxy = prepare_galaxy(obs, maps.bundle.config["prepare"], partial_coverage=True)
        except InputError as err:
            frames.append(_error_row(path, spectrum, obs.id, err))
            continue
        placed, latent = maps.place(galaxy.bin_flux, galaxy.bin_ivar, min_coverage)
        placed.insert(0, "galaxy_id", galaxy.galaxy_id)
        placed.insert(0, "spectrum", galaxy.bins["bin_id"].to_numpy() if obs.is_cube else index)
        placed.insert(0, "source", path)
        # The error names the file and the spectrum (or Voronoi bin), so it reads alone outside the CSV.
        where = [f"{path} bin {s}" if obs.is_cube else obs.meta.get("path", path) for s in placed["spectrum"]]
        placed["error"] = [f"{w}: {e}" if e else "" for w, e in zip(where, placed["error"])]
        on_map = placed["node"].notna()
        if obs.is_cube and maps.node_scale is not None and on_map.any():
            fingerprint, node2 = maps.galaxy_fingerprint(placed.loc[on_map, "node"].to_numpy(np.int64))
            placed.insert(len(COLUMNS), "fingerprint", fingerprint_string(fingerprint))
            placed.insert(len(COLUMNS), "desom2_node", node2)
            _insert_umap(placed, schema.FINGERPRINT_EMBEDDING, maps.umap_position(schema.FINGERPRINT_EMBEDDING, fingerprint[None]))
        elif not obs.is_cube and maps.sed_map is not None and on_map.all():
            # a seed-002 bundle's objects are single spectra: the new one gets their map node, group and UMAP place
            weights, centres = maps.sed_map
            placed.insert(len(COLUMNS), "sed_kmeans", nearest(centres, latent))
            placed.insert(len(COLUMNS), "sed_node", nearest(weights, latent))
            _insert_umap(placed, schema.LATENT_EMBEDDING, maps.umap_position(schema.LATENT_EMBEDDING, latent))
        frames.append(placed)
    return frames


def _insert_umap(placed: pd.DataFrame, embedding: str, xy: np.ndarray | None) -> None:
    """The embedding's UMAP columns after assign's own (nothing when the bundle keeps no projector for it); one
    position for all rows (a cube's bins) or one per row."""
    if xy is not None:
        xy = np.broadcast_to(xy, (len(placed), 2))
        for column, values in zip(reversed(schema.umap_columns(embedding)), xy.T[::-1]):
            placed.insert(len(COLUMNS), column, values)


def _error_row(path, spectrum, galaxy_id, err: Exception) -> pd.DataFrame:
    problem = err.problem if isinstance(err, InputError) else str(err)
    return pd.DataFrame([{"source": path, "spectrum": spectrum, "galaxy_id": galaxy_id, "error": problem}])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute assign", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="MaNGA / CALIFA cubes, spectra sets, SDSS spec files")
    parser.add_argument("--bundle", required=True, help="bundle folder with a desom1 section")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--catalogue", help="table with redshifts (e.g. drpall nsa_z) matched on --key")
    parser.add_argument("--key", help="catalogue column holding the file ids (default: the bundle's config)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--min-coverage", type=float, default=MIN_COVERAGE,
                        help=f"least share of the rest-frame grid a spectrum must observe to be placed "
                             f"(default {MIN_COVERAGE})")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    try:
        with engine(args.workers, args.scheduler) as client:
            placed = assign_files(args.bundle, args.files, catalogue=args.catalogue, key=args.key,
                                  device=args.device, client=client, min_coverage=args.min_coverage)
    except (BundleError, InputError, ValueError) as err:
        print(f"assign: {err}", file=sys.stderr)
        return 1
    placed.to_csv(args.out, index=False)
    failed = int((placed["error"] != "").sum())
    print(f"placed {len(placed) - failed} spectra from {len(args.files)} files on {args.bundle}; "
          f"{failed} inputs could not be placed (see the error column); wrote {args.out}")
    return 0 if failed < len(placed) else 1
