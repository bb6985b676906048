"""Statistics of properties over SOM nodes and over a survey: one definition each, used by the build (the
bundle's `desom1/node_properties.parquet` and `desom1/node_histograms.npz`), by `assign` and by the dashboard.

No torch here: the dashboard imports this module.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from precompute.schema import GALAXY_PREFIX

# Bin / galaxy columns that are bookkeeping, not properties of a spectrum.
NOT_PROPERTIES = {"galaxy_index", "bin_id", "desom1_node", "desom1_qe", "desom2_node"}


def histogram_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of the finite `values` in each bin of `edges` (values beyond the ends counted in the end bins),
    summing to 1; all zeros when no value is finite. Seed 001 Fig. 6 compares these between nodes and survey."""
    values = np.asarray(values, float).ravel()
    return node_histogram_fractions(values, np.zeros(values.size, int), 1, edges)[0].astype(float)


def node_histogram_fractions(values: np.ndarray, nodes: np.ndarray, n_nodes: int, edges: np.ndarray) -> np.ndarray:
    """float32 [n_nodes, n_bins]: per node, the fraction of its members with a finite value in each bin (values
    beyond the ends counted in the end bins); rows sum to 1, or are 0 for a node without such a member."""
    values, nodes = np.asarray(values, float), np.asarray(nodes)
    finite = np.isfinite(values)
    which = np.clip(np.searchsorted(edges, values[finite], side="right") - 1, 0, edges.size - 2)
    counts = np.zeros((n_nodes, edges.size - 1))
    np.add.at(counts, (nodes[finite], which), 1.0)
    return (counts / np.maximum(counts.sum(1, keepdims=True), 1.0)).astype(np.float32)


def density(fractions: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fractions per bin as a probability density (per unit of the property): integrates to 1 over `edges`."""
    return np.asarray(fractions, float) / np.diff(edges)


def node_medians(values: np.ndarray, nodes: np.ndarray, n_nodes: int) -> np.ndarray:
    """Median of the finite `values` of each node's members; NaN for nodes without one."""
    frame = pd.DataFrame({"node": np.asarray(nodes), "value": np.asarray(values, float)}).dropna()
    return frame.groupby("node")["value"].median().reindex(range(n_nodes)).to_numpy(float)


MAX_MEMBERS = 4096  # members per node the spectrum percentiles are taken over (a random sample beyond)


def member_spectra(flux, ivar, nodes, n_nodes: int, max_members: int = MAX_MEMBERS, seed: int = 0) -> np.ndarray:
    """float32 [4, K, n_wave]: per node the mean, 16th, 50th and 84th percentile of its members' good pixels
    (NaN where a node has no member with a good pixel). `flux`/`ivar` may be rows read on demand
    (precompute.rows): one node's members are read at a time. A node with more than `max_members` members is
    summarised by a random sample of that many (the 16th–84th percentiles of 4,096 draws are good to ~2 % of
    the spread), so memory stays bounded however large the survey."""
    out = np.full((4, n_nodes, flux.shape[1]), np.nan, dtype=np.float32)
    order = np.argsort(nodes, kind="stable")
    bounds = np.searchsorted(nodes[order], np.arange(n_nodes + 1))
    rng = np.random.default_rng(seed)
    for k in tqdm(range(n_nodes), desc="member spectra", leave=False, disable=None):
        members = order[bounds[k]:bounds[k + 1]]
        if members.size > max_members:
            members = np.sort(rng.choice(members, max_members, replace=False))
        if members.size:
            values = np.where(ivar[members] > 0, flux[members], np.nan)
            out[:, k] = _nan_percentiles(values, (16, 50, 84), with_mean=True)
    return out


def _nan_percentiles(values: np.ndarray, percentiles, with_mean: bool = False) -> np.ndarray:
    """Percentiles along axis 0 ignoring NaN (numpy's linear interpolation), one sort for all of them:
    np.nanpercentile loops over the columns in Python, ~20x slower on [members, n_wave] blocks."""
    ordered = np.sort(values, axis=0)  # NaN sort last
    n = np.isfinite(values).sum(0)
    rows = []
    if with_mean:
        with np.errstate(invalid="ignore", divide="ignore"):
            rows.append(np.where(n > 0, np.nansum(values, axis=0) / np.maximum(n, 1), np.nan))
    for q in percentiles:
        position = (np.maximum(n, 1) - 1) * q / 100.0
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, np.maximum(n - 1, 0))
        below = np.take_along_axis(ordered, low[None], 0)[0]
        above = np.take_along_axis(ordered, high[None], 0)[0]
        rows.append(np.where(n > 0, below + (above - below) * (position - low), np.nan))
    return np.asarray(rows)


def property_table(bins: pd.DataFrame, galaxies: pd.DataFrame) -> pd.DataFrame:
    """Every numeric (or boolean) property of each bin: its own columns and its galaxy's as galaxy.<column>."""
    own = {c: bins[c] for c in bins.columns if c not in NOT_PROPERTIES and _numeric(bins[c])}
    joined = galaxies.iloc[bins["galaxy_index"].to_numpy()].reset_index(drop=True)
    theirs = {GALAXY_PREFIX + c: joined[c] for c in galaxies.columns if c not in NOT_PROPERTIES and _numeric(joined[c])}
    return pd.DataFrame({k: pd.to_numeric(v, errors="coerce").astype(float).to_numpy()
                         for k, v in {**own, **theirs}.items()})


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def node_properties(properties: pd.DataFrame, nodes, n_nodes: int, n_hist: int = 20):
    """Per-node statistics of every property over the node's members (NaNs ignored).

    Returns (table with one row per (node, property): node, property, n, mean, median, p16, p84;
    histograms {P: float32 [K, n_hist] fractions of the node's members per bin, P__edges: float64 edges}).
    Edges come from `histogram_edges` over all members; histograms from `histogram_fractions`.
    """
    nodes = np.asarray(nodes)
    rows, histograms = [], {}
    for name in properties.columns:
        values = properties[name].to_numpy(dtype=float)
        finite = np.isfinite(values)
        frame = pd.DataFrame({"node": nodes[finite], "value": values[finite]})
        grouped = frame.groupby("node")["value"]
        stats = pd.DataFrame({"n": grouped.size(), "mean": grouped.mean(), "median": grouped.median(),
                              "p16": grouped.quantile(0.16), "p84": grouped.quantile(0.84)})
        stats = stats.reindex(range(n_nodes))
        stats["n"] = stats["n"].fillna(0).astype(np.int64)
        rows.append(stats.rename_axis("node").reset_index().assign(property=name))

        edges = histogram_edges(values[finite], n_hist)
        histograms[name] = node_histogram_fractions(values, nodes, n_nodes, edges)
        histograms[f"{name}__edges"] = edges
    columns = ["node", "property", "n", "mean", "median", "p16", "p84"]
    table = pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)
    return table, histograms


def histogram_edges(values: np.ndarray, n_hist: int) -> np.ndarray:
    """Edges of a property's histogram: n_hist bins over the 0.5–99.5 percentiles (yes/no properties: 2 bins)."""
    if values.size == 0:
        return np.array([0.0, 1.0])
    if np.isin(values, (0.0, 1.0)).all():
        return np.array([-0.5, 0.5, 1.5])
    low, high = np.percentile(values, [0.5, 99.5])
    if not high > low:
        low, high = values.min() - 0.5, values.max() + 0.5
    return np.linspace(low, high, n_hist + 1)
