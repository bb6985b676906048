"""Compare two galaxy populations in an embedding (seed 000 Figs. 8 and 9).

Each galaxy's typicality (`typicality`) is its distance to its 10th nearest training galaxy in the embedding
(itself excluded): small in crowded regions, large for unusual galaxies. Two populations are compared by the
distributions of that distance with a two-sample Kolmogorov–Smirnov test. With ``twins``, only galaxies that
have a counterpart of the same morphology and stellar mass within 0.2 dex in the other population are kept,
so a difference cannot come from mass or morphology alone.

    python -m precompute compare --bundle B --a "quenched" --b "not quenched" [--embedding NAME] [--twins]

prints one JSON object: ``n_a``, ``n_b``, ``ks``, ``p_value`` (and the medians and settings).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from precompute import schema
from precompute.bundle import Bundle, BundleError

TWIN_MASS_DEX = 0.2  # seed 000 Fig. 9


def select(galaxies: pd.DataFrame, query: str) -> np.ndarray:
    """Boolean mask of the galaxies matching a pandas query (e.g. ``split == 'val' and log_mstar > 10``)."""
    try:
        mask = galaxies.eval(query)
    except Exception as err:  # pandas raises many kinds for a bad expression; all mean the same to the user
        raise ValueError(f"query {query!r} is not valid over the galaxy table ({type(err).__name__}: {err}); "
                         f"columns: {', '.join(map(str, galaxies.columns))}") from None
    if not (isinstance(mask, pd.Series) and pd.api.types.is_bool_dtype(mask)):
        raise ValueError(f"query {query!r} does not give true/false per galaxy")
    return mask.to_numpy(dtype=bool)


def twins(galaxies: pd.DataFrame, a: np.ndarray, b: np.ndarray, mass_dex: float = TWIN_MASS_DEX,
          mass: str = "log_mstar", morphology: str = "morphology") -> tuple[np.ndarray, np.ndarray]:
    """Restrict ``a`` and ``b`` to galaxies with a twin in the other set: same morphology, |Δ mass| ≤ mass_dex."""
    missing = [c for c in (mass, morphology) if c not in galaxies]
    if missing:
        raise ValueError(f"twins need the galaxy columns {missing}")
    m = galaxies[mass].to_numpy(dtype=float)
    kind = galaxies[morphology].astype(str).to_numpy()
    pair = (np.abs(m[a][:, None] - m[b][None, :]) <= mass_dex) & (kind[a][:, None] == kind[b][None, :])
    a_twins, b_twins = np.zeros_like(a), np.zeros_like(b)
    a_twins[np.flatnonzero(a)[pair.any(axis=1)]] = True
    b_twins[np.flatnonzero(b)[pair.any(axis=0)]] = True
    return a_twins, b_twins


def typicality(knn_distance: np.ndarray, galaxies: np.ndarray | slice = slice(None), k: int = 10) -> np.ndarray:
    """Seed 000's per-galaxy typicality (Figs. 8–9): the distance to the k-th (10th) nearest training galaxy in the
    embedding, itself excluded — small in crowded regions, large for unusual galaxies. ``knn_distance`` is the
    bundle's ``embeddings/E/knn_distance`` ([n_galaxies, ≥ k], nearest first); ``galaxies`` indices or a mask.
    The one definition used by ``compare``, the manifest metrics and the dashboard."""
    if knn_distance.shape[1] < k:
        raise ValueError(f"the embedding keeps {knn_distance.shape[1]} neighbours, fewer than k = {k}")
    return np.asarray(knn_distance[galaxies, k - 1], dtype=float)


def compare_distances(distance_a: np.ndarray, distance_b: np.ndarray) -> dict:
    """Two-sample KS test of two distance samples: ``n_a``, ``n_b``, ``ks`` (statistic), ``p_value``, medians."""
    if len(distance_a) == 0 or len(distance_b) == 0:
        raise ValueError(f"both populations need galaxies (got {len(distance_a)} and {len(distance_b)})")
    test = ks_2samp(distance_a, distance_b)
    return {"n_a": int(len(distance_a)), "n_b": int(len(distance_b)), "ks": float(test.statistic),
            "p_value": float(test.pvalue), "median_a": float(np.median(distance_a)),
            "median_b": float(np.median(distance_b))}


def compare(bundle: Bundle, query_a: str, query_b: str, embedding: str = "contrastive", twin: bool = False,
            k: int = 10) -> dict:
    """Compare the galaxies matching ``query_a`` and ``query_b`` by their distance to the k-th nearest training
    galaxy in ``embedding`` (from the bundle's ``embeddings/<embedding>/knn_distance``)."""
    if not bundle.has("embeddings"):
        raise BundleError(f"{bundle.path}: no embeddings section; build it with `python -m precompute build`")
    index = bundle.read(schema.EMBEDDING_INDEX)
    if embedding not in index:
        raise ValueError(f"{bundle.path}: no embedding {embedding!r}; available: {', '.join(index)}")
    distances = bundle.read(schema.EMBEDDING_KNN_DISTANCE, embedding=embedding)
    galaxies = bundle.galaxies
    a, b = select(galaxies, query_a), select(galaxies, query_b)
    if twin:
        a, b = twins(galaxies, a, b)
    result = compare_distances(typicality(distances, a, k), typicality(distances, b, k))
    return {**result, "embedding": embedding, "k": k, "twins": twin, "a": query_a, "b": query_b}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute compare", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle folder")
    parser.add_argument("--a", required=True, help="pandas query selecting population A, e.g. \"split == 'train'\"")
    parser.add_argument("--b", required=True, help="pandas query selecting population B")
    parser.add_argument("--embedding", default="contrastive", help="embedding name (default contrastive)")
    parser.add_argument("--twins", action="store_true",
                        help=f"keep only galaxies with a same-morphology twin within {TWIN_MASS_DEX} dex in mass")
    parser.add_argument("--k", type=int, default=10, help="use the distance to the k-th neighbour (default 10)")
    args = parser.parse_args(argv)
    try:
        result = compare(Bundle(args.bundle), args.a, args.b, args.embedding, args.twins, args.k)
    except (BundleError, ValueError) as err:
        print(f"compare: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
