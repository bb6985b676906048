"""What to look at next: the anomaly score re-ranked by a relevance model learned from the labels (Astronomaly).

Astronomaly (Lochner & Bassett 2021) multiplies each object's anomaly score by what the user's labels say about
objects like it. Here:

- the **relevance model** is a kernel-weighted vote of the galaxies labelled ``interesting`` (1) and
  ``not interesting`` (0) in a feature space (Nadaraya–Watson regression): galaxy i gets
  ``r_i = (w0·½ + Σ_j w_ij y_j) / (w0 + Σ_j w_ij)`` with Gaussian weights ``w_ij = exp(−d_ij² / 2h²)`` in the
  space's metric (cosine: 1 − cos). The bandwidth ``h`` is the space's median distance from a galaxy to
  its ``BANDWIDTH_NEIGHBOUR``-th (3rd) nearest (training) galaxy (``embeddings/E/knn_distance``): "near" means as
  near as close neighbours typically are, so a label speaks for a handful of galaxies like it, not for a region
  (with the seed-000 typicality, the 10th neighbour, one label moved every galaxy of a 20-galaxy survey alike).
  The prior weight ``w0 = PRIOR_WEIGHT`` keeps ``r`` at ½ (no opinion) far from every label, so labels only move
  their own neighbourhoods. Neither setting is what limits the ranking: with bench_discovery's users (36 runs on
  nine 640-galaxy mock surveys, the default space) widths of the 1st to the 10th neighbour and prior weights
  0.25–1 found 1,384–1,423 rare galaxies in their first 100 viewed, the defaults 1,419. We chose the kernel vote
  over a classifier (logistic regression; Astronomaly's random forest, 1,452 on those runs) because it needs no
  minimum number of labels of each kind, is right after the first label, has no training step, and costs one
  distance matrix (10,000 galaxies × labelled ones) per update.
- the **feature space** is by default the anomaly score's own parts (``ANOMALY_PARTS_SPACE``: the percentile of
  each part of `schema.ANOMALY_PARTS` — emission-line and nucleus reconstruction errors, asymmetry, fingerprint
  typicality — and of ``compact_asymmetry``, then the percentile of each of the 19 lines' emission-line error
  (``anomaly/line_residuals.npy``: the first part line by line), Euclidean), as in Astronomaly, whose relevance
  model works on the features the anomalies were found in: a label then says which kind of anomaly the user is
  after. ``compact_asymmetry`` (the asymmetry of the brightest compact source, `precompute.morphology`) is there so
  that a label can tell an unflagged foreground star from tidal light: without it both are asymmetric galaxies
  with a poor emission-line reconstruction. The lines are there so that it can tell one emission-line oddity from
  another (on the plain mock surveys of seeds 1–3 the extreme dwarfs' errors stand out in [O III] λ4363 and
  [O I] λ6365, 0.3–0.7 higher in percentile than the AGN's; the AGN's in Hα, [S II] and [Ne III]): the 19 lines
  together weigh as much as the five columns before them (``LINES_WEIGHT``). With them, a user's labels on one
  emission-line oddity no longer push the others down (README, `benchmarks/bench_discovery.py`: more rare galaxies
  found with labels on every survey tried, and an extreme-dwarf seeker who found 2 in 100 where the score alone
  shows 19 now finds 21).
  With labels in the contrastive embedding instead (2,560-galaxy mock survey, seed 42), 60 rare galaxies were found
  against 86 by the anomaly score alone and 89 in the anomaly parts — there a label pulled up unremarkable
  neighbours of the galaxies found (an AGN is told by its nucleus, not by what the embedding encodes). Any
  embedding of the bundle can be chosen instead (its vectors and metric), e.g. to collect a sample of galaxies
  that look alike;
- the **anomaly term** is the galaxy's anomaly-score percentile ``q`` in (0, 1] (ranks, so the scale of the
  score does not matter; 1 for every galaxy when the bundle has no anomaly score);
- the **ranking score** is ``q · 2r``: the anomaly order alone before any label (r = ½), raised up to twice near
  interesting galaxies and pushed towards 0 near uninteresting ones.

Galaxies that already carry a relevance label have been looked at and are left out of the list; free tags do not
count as reviewed (a tagged sample may be large and unseen).

    python -m precompute rank --bundle B [--labels FILE] [--embedding NAME] [--out ranked.csv] [--top N]

writes one row per galaxy not yet reviewed, best first: ``rank``, ``galaxy_id``, ``score``, ``anomaly_score``,
``anomaly_percentile``, ``relevance``, plus the bundle id, embedding and label count as ``#`` comment lines.
"""
from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.neighbors import NearestNeighbors

from precompute import schema
from precompute.bundle import Bundle, BundleError
from precompute.labels import LabelLog, labels_path

PRIOR_WEIGHT = 0.5  # pseudo-weight of "no opinion" (r = ½) against a labelled galaxy at distance 0 (weight 1)
BANDWIDTH_NEIGHBOUR = 3  # the kernel width is the median distance to this nearest training galaxy
ANOMALY_PARTS_SPACE = "anomaly parts"  # the relevance model's default feature space (see the module)
# its columns: the anomaly parts, and the asymmetry of the brightest compact source, without which a foreground star
# and tidal light look alike in it (both asymmetric, both badly reconstructed)
ANOMALY_PARTS_SPACE_COLUMNS = (*schema.ANOMALY_PARTS, "compact_asymmetry")
LINES_WEIGHT = 1.0  # the per-line block's share of the squared distance, against the columns above (see the module)


def relevance(vectors: np.ndarray, metric: str, bandwidth: float, labels: np.ndarray) -> np.ndarray:
    """Predicted relevance r in (0, 1) of every galaxy from ``labels`` (1, 0 or NaN per galaxy), see the module."""
    labelled = np.flatnonzero(np.isfinite(labels))
    out = np.full(len(vectors), 0.5)
    if labelled.size == 0:
        return out
    x = np.asarray(vectors, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        distance = 1.0 - x @ x[labelled].T
    else:
        squared = (x ** 2).sum(axis=1)
        distance = np.sqrt(np.maximum(squared[:, None] + squared[labelled][None, :] - 2.0 * x @ x[labelled].T, 0))
    weights = np.exp(-0.5 * (np.maximum(distance, 0) / max(bandwidth, 1e-12)) ** 2)
    return (PRIOR_WEIGHT * 0.5 + weights @ labels[labelled]) / (PRIOR_WEIGHT + weights.sum(axis=1))


def anomaly_percentile(scores: np.ndarray | None, n: int) -> np.ndarray:
    """Percentile rank of each anomaly score in (0, 1] (ties share their mean rank); 1 without scores."""
    if scores is None:
        return np.ones(n)
    scores = np.nan_to_num(np.asarray(scores, float), nan=-np.inf)
    return rankdata(scores) / n


def rank(vectors: np.ndarray, metric: str, bandwidth: float, labels: np.ndarray,
         anomaly: np.ndarray | None) -> pd.DataFrame:
    """One row per galaxy not yet reviewed (no relevance label), best first: index ``g``, ``score``,
    ``anomaly_percentile``, ``relevance``."""
    r = relevance(vectors, metric, bandwidth, labels)
    q = anomaly_percentile(anomaly, len(vectors))
    frame = pd.DataFrame({"g": np.arange(len(vectors)), "score": q * 2 * r, "anomaly_percentile": q, "relevance": r})
    frame = frame[~np.isfinite(labels)]
    # stable sort; equal scores keep the more anomalous galaxy first
    return frame.sort_values(["score", "anomaly_percentile"], ascending=False, kind="stable").reset_index(drop=True)


def bandwidth(bundle: Bundle, embedding: str) -> float:
    """The kernel width of an embedding: the median distance to the BANDWIDTH_NEIGHBOUR-th nearest training galaxy."""
    distance = bundle.read(schema.EMBEDDING_KNN_DISTANCE, embedding=embedding)
    return float(np.median(distance[:, min(BANDWIDTH_NEIGHBOUR, distance.shape[1]) - 1]))


def anomaly_parts(galaxies: pd.DataFrame) -> list[str]:
    """The parts of the anomaly score this bundle's galaxies carry (schema.ANOMALY_PARTS)."""
    return [part for part in schema.ANOMALY_PARTS if part in galaxies]


def relevance_spaces(bundle: Bundle) -> list[str]:
    """Feature spaces the relevance model can learn in, the default first: the anomaly parts, then the embeddings."""
    index = bundle.read(schema.EMBEDDING_INDEX) if bundle.has("embeddings") else {}
    return ([ANOMALY_PARTS_SPACE] if anomaly_parts(bundle.galaxies) else []) + list(index)


def feature_space(bundle: Bundle, space: str) -> tuple[np.ndarray, str, float]:
    """(vectors, metric, kernel width) of a relevance space: the anomaly parts' percentiles, or an embedding."""
    if space == ANOMALY_PARTS_SPACE and anomaly_parts(bundle.galaxies):
        return _anomaly_parts_space(bundle)
    index = bundle.read(schema.EMBEDDING_INDEX) if bundle.has("embeddings") else {}
    if space not in index:
        raise BundleError(f"{bundle.path}: no relevance space {space!r} (this bundle has: "
                          f"{', '.join(relevance_spaces(bundle)) or 'none'})")
    return bundle.read(schema.EMBEDDING_VECTORS, embedding=space), index[space]["metric"], bandwidth(bundle, space)


@lru_cache(maxsize=4)
def _anomaly_parts_space(bundle: Bundle) -> tuple[np.ndarray, str, float]:
    """The anomaly parts' space of a bundle, computed once: the dashboard re-ranks after every label."""
    galaxies, n = bundle.galaxies, len(bundle.galaxies)
    vectors = np.column_stack([anomaly_percentile(galaxies[column].to_numpy(float), n)
                               for column in ANOMALY_PARTS_SPACE_COLUMNS if column in galaxies])
    if bundle.has(schema.ANOMALY_LINE_RESIDUALS.section):
        lines = np.asarray(bundle.read(schema.ANOMALY_LINE_RESIDUALS), float)  # NaN (nothing detected): lowest
        block = np.column_stack([anomaly_percentile(line, n) for line in lines.T])
        # scaled so that the lines' squared distance is LINES_WEIGHT times that of the columns, on average
        vectors = np.hstack([vectors, LINES_WEIGHT * np.sqrt(vectors.shape[1] / block.shape[1]) * block])
    k = min(BANDWIDTH_NEIGHBOUR + 1, len(vectors))  # each galaxy is its own first neighbour
    distance, _ = NearestNeighbors(n_neighbors=k).fit(vectors).kneighbors(vectors)
    vectors.setflags(write=False)  # shared by every re-rank
    return vectors, "euclidean", float(np.median(distance[:, -1]))


def rank_bundle(bundle: Bundle, labels: LabelLog, space: str) -> pd.DataFrame:
    """`rank` on a bundle, the relevance learned in `space` (`relevance_spaces`), the galaxies' anomaly score when
    present. Adds ``galaxy_id`` and ``anomaly_score`` (NaN without one). The dashboard and `main` both call this."""
    galaxies = bundle.galaxies
    anomaly = galaxies["anomaly_score"].to_numpy(float) if "anomaly_score" in galaxies else None
    frame = rank(*feature_space(bundle, space), labels.relevance(), anomaly)
    frame.insert(1, "galaxy_id", galaxies["galaxy_id"].to_numpy()[frame["g"]])
    frame.insert(3, "anomaly_score", np.nan if anomaly is None else anomaly[frame["g"]])
    return frame


def default_space(bundle: Bundle) -> str:
    """The relevance model's default feature space: the anomaly parts, else the dashboard's first embedding."""
    spaces = relevance_spaces(bundle)
    if not spaces:
        raise BundleError(f"{bundle.path}: no anomaly parts or embeddings to rank in; build the bundle with "
                          f"`python -m precompute build`")
    return spaces[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute rank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="the bundle folder")
    parser.add_argument("--labels", help="the labels file (default: <bundle>.labels.jsonl beside the bundle)")
    parser.add_argument("--embedding", help=f"feature space of the relevance model: {ANOMALY_PARTS_SPACE!r} (the "
                                            "default when the bundle has an anomaly score) or an embedding's name")
    parser.add_argument("--out", default="ranked.csv", help="CSV to write (default ranked.csv)")
    parser.add_argument("--top", type=int, help="write only the first N rows")
    args = parser.parse_args(argv)
    bundle = Bundle(args.bundle)
    path = Path(args.labels) if args.labels else labels_path(bundle.path)
    if args.labels and not path.exists():
        raise BundleError(f"{path}: no labels file here (the dashboard writes {labels_path(bundle.path).name} "
                          f"beside the bundle)")
    log = LabelLog(path, bundle.galaxies["galaxy_id"].to_numpy(), bundle.id)
    embedding = args.embedding or default_space(bundle)
    frame = rank_bundle(bundle, log, embedding).drop(columns="g")
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    if args.top is not None:
        frame = frame.head(args.top)
    n_labelled = int(np.isfinite(log.relevance()).sum())
    with open(args.out, "w") as out:
        out.write(f"# bundle_id: {bundle.id}\n# embedding: {embedding}\n# labels: {path} "
                  f"({n_labelled} galaxies labelled interesting or not)\n")
        frame.to_csv(out, index=False, float_format="%.6g")
    print(f"{args.out}: {len(frame)} galaxies ranked by anomaly × relevance ({embedding}, {n_labelled} labelled)",
          file=sys.stderr)
    return 0
