"""Galaxy fingerprints (seed 001): where a galaxy's binned spectra fall on the DESOM-1 map.

A fingerprint is the histogram of a galaxy's bins over the DESOM-1 nodes, seen as a rows × cols image. It is
normalised as in Teimoorinia et al. (2022): each node's counts are clipped at their 99.9th percentile over the
galaxies and scaled to 0–1 (so a few huge galaxies do not dominate a node), then each fingerprint is scaled to
0–1 (so galaxies with many and few bins compare by shape).
"""
from __future__ import annotations

import numpy as np


def fingerprint_counts(galaxy_index, nodes, n_galaxies: int, n_nodes: int) -> np.ndarray:
    """int32 [n_galaxies, n_nodes]: how many binned spectra of galaxy g have node k as BMU."""
    galaxy_index, nodes = np.asarray(galaxy_index), np.asarray(nodes)
    if galaxy_index.shape != nodes.shape:
        raise ValueError(f"galaxy_index {galaxy_index.shape} and nodes {nodes.shape} must have the same shape")
    if galaxy_index.size and not (0 <= galaxy_index.min() and galaxy_index.max() < n_galaxies):
        raise ValueError(f"galaxy_index must lie in [0, {n_galaxies}), got {galaxy_index.min()}..{galaxy_index.max()}")
    if nodes.size and not (0 <= nodes.min() and nodes.max() < n_nodes):
        raise ValueError(f"nodes must lie in [0, {n_nodes}), got {nodes.min()}..{nodes.max()}")
    counts = np.zeros((n_galaxies, n_nodes), dtype=np.int32)
    np.add.at(counts, (galaxy_index, nodes), 1)
    return counts


def node_scale(counts: np.ndarray, percentile: float = 99.9) -> np.ndarray:
    """float32 [K]: each node's clipping level, the `percentile` of its counts over galaxies (at least 1)."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"counts must be [n_galaxies >= 1, n_nodes], got shape {counts.shape}")
    # A node no galaxy reaches keeps scale 1, so new galaxies landing there still count.
    return np.maximum(np.percentile(counts, percentile, axis=0), 1.0).astype(np.float32)


def normalise_fingerprints(counts: np.ndarray, scale: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 [n_galaxies, rows, cols]: counts clipped at `scale` and divided by it per node, then divided by
    their maximum per galaxy (0 = no bin there, 1 = the galaxy's most populated node; an empty galaxy stays 0).
    `scale` comes from `node_scale` on the training survey, so new galaxies are normalised as the map's own."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != rows * cols or np.shape(scale) != (rows * cols,):
        raise ValueError(f"counts {counts.shape} and scale {np.shape(scale)} must cover {rows}x{cols} nodes")
    per_node = np.minimum(counts, scale) / scale
    peak = per_node.max(axis=1, keepdims=True)
    fingerprints = per_node / np.where(peak > 0, peak, 1.0)
    return fingerprints.reshape(-1, rows, cols).astype(np.float32)


def fingerprint_string(fingerprint: np.ndarray, decimals: int = 2) -> str:
    """Compact text form for CSV: the non-zero nodes as ``k:value`` separated by spaces (node k = row*cols+col)."""
    flat = np.round(np.asarray(fingerprint, dtype=float).ravel(), decimals)
    return " ".join(f"{k}:{flat[k]:g}" for k in np.flatnonzero(flat))
