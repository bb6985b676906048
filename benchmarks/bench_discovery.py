"""Discovery benchmark (issue 13 part 6): rare galaxies a user finds in the first 50 and 100 viewed, with the list
ordered by the anomaly score alone vs re-ranked after each round of labels (active learning).

    python benchmarks/bench_discovery.py --seed 1                         # a 640-galaxy mock survey, built or reused
    python benchmarks/bench_discovery.py --seed 1 --rare-scale 2          # rare kinds twice as likely in that survey
    python benchmarks/bench_discovery.py --seed 1 --satellite-trails 0.1  # a tenth of the images crossed by a trail
    python benchmarks/bench_discovery.py --seed 1 --unflagged-stars 0.1   # a tenth of the cubes with a star unflagged
    python benchmarks/bench_discovery.py --bundle data/bundles/demo       # an existing bundle of the mock survey
    python benchmarks/bench_discovery.py --seed 1 --interesting extreme_emission   # a user after one rare kind

The survey is the pipeline's own: `precompute.build.build(load_config(seed=S, mock={"galaxies": N,
"rare_fraction_scale": X, "satellite_trail_fraction": T, "unflagged_star_fraction": F}), OUT)` with OUT =
--cache/discovery-seedS-nN-rareX (+ ``-trailsT`` when T > 0, ``-starsF`` when F > 0). A folder that already holds the
bundle of that very config is reused as it is; an unfinished build there resumes from its shards; a folder holding
another bundle is refused (build's own check). ``--rare-scale`` is the config value ``mock.rare_fraction_scale``
(precompute/mock/population.py: it multiplies the chance of each rare kind; 1 = the survey as it is); it is
printed with the results and checked against the built galaxies. ``--satellite-trails`` is
``mock.satellite_trail_fraction``: that share of the galaxies has a satellite trail across its image
(precompute/mock/observe.py), an uninteresting oddity of the kind that fills the top of a real anomaly list
(Astronomaly's case); ``--unflagged-stars`` is ``mock.unflagged_star_fraction``: that share of the cubes (and
their images) holds a foreground star that no FORESTAR bit flags, so it enters the binned spectra. The user labels
galaxies with such artefacts not interesting like any other that is not rare, and the results say how many of each
artefact each order showed.

The simulated user reads "what to look at next" (`precompute.rank.rank_bundle`, the dashboard's and `python -m
precompute rank`'s function) ``--per-round`` (10) galaxies at a time, labels each ``interesting`` when any mock
truth flag of `precompute.embeddings.RARE_KINDS` (agn, disturbed, extreme_emission) is set and ``not interesting``
otherwise (`precompute.labels.LabelLog`, a labels file in a temporary folder), and the list is ranked again with
the labels, until ``--viewed`` (100) galaxies have been seen. The baseline is the same user reading the list
ordered by anomaly score alone: the same ranking with no label (anomaly percentile × 2·½), read from the top.

``--interesting KIND ...`` is a user after some rare kinds only (Astronomaly's case: the anomaly score flags
every kind of oddity, the user's labels teach the ranking which of them they care about): only galaxies of those
kinds are labelled interesting and counted as found; the others are labelled not interesting like any galaxy.

Prints, per rare kind and in total (of the interesting kinds), the rare galaxies found within the first 50 and 100 viewed for both orders,
the number in the survey and the number a random order finds on average, the survey size, seed and rare-fraction
scale, and the time one re-rank takes; ends with one JSON line of all of it ("ratio" = found_active / found_score
at --viewed).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from precompute import schema
from precompute.bundle import Bundle
from precompute.embeddings import RARE_KINDS
from precompute.labels import INTERESTING, NOT_INTERESTING, LabelLog
from precompute.rank import default_space, rank_bundle

CUTS = (50, 100)  # galaxies viewed at which the found rare galaxies are reported
HOW = "bench_discovery simulated user"


def simulate(ranking: Callable[[LabelLog], pd.DataFrame], log: LabelLog, rare: np.ndarray, viewed: int = 100,
             per_round: int = 10, active: bool = True) -> tuple[np.ndarray, list[float]]:
    """The galaxies (indices g) a simulated user views, in order, and the seconds each ranking took.

    Each round the user views the first ``per_round`` galaxies of ``ranking(log)`` (a frame of the galaxies not yet
    reviewed, best first, with column ``g``: `precompute.rank.rank` / `rank_bundle`) and labels them in ``log``:
    interesting where ``rare[g]``, not interesting elsewhere. With ``active`` the list is ranked again from the
    labels after every round; without, the first ranking (of ``log`` as given) is read on from the top."""
    rare = np.asarray(rare, bool)
    order: list[int] = []
    seconds: list[float] = []

    def timed_ranking() -> np.ndarray:
        start = time.perf_counter()
        frame = ranking(log)
        seconds.append(time.perf_counter() - start)
        return frame["g"].to_numpy()

    queue = timed_ranking()
    while len(order) < viewed:
        top = queue[: min(per_round, viewed - len(order))]
        if top.size == 0:  # every galaxy viewed
            break
        order.extend(int(g) for g in top)
        for label, galaxies in ((INTERESTING, top[rare[top]]), (NOT_INTERESTING, top[~rare[top]])):
            if galaxies.size:
                log.add(label, galaxies, how=HOW)
        if active and len(order) < viewed:
            queue = timed_ranking()
        else:
            queue = queue[top.size:]
    return np.asarray(order, dtype=np.int64), seconds


def found(order: np.ndarray, flags: dict[str, np.ndarray], cuts=CUTS, interesting=None) -> dict[int, dict[str, int]]:
    """Rare galaxies among the first ``cut`` of ``order``, per kind of ``flags`` and in total over the
    ``interesting`` kinds (default: every kind of ``flags``), under the key ``interesting``."""
    target = interesting_flag(flags, interesting)
    out = {}
    for cut in cuts:
        seen = np.asarray(order[:cut], dtype=np.int64)
        counts = {kind: int(flag[seen].sum()) for kind, flag in flags.items()}
        counts["interesting"] = int(target[seen].sum())
        out[cut] = counts
    return out


def interesting_flag(flags: dict[str, np.ndarray], interesting=None) -> np.ndarray:
    """True for galaxies of any of the ``interesting`` kinds of ``flags`` (default: any kind)."""
    kinds = list(flags) if interesting is None else list(interesting)
    return np.any([flags[kind] for kind in kinds], axis=0)


def expected_random(n_rare: int, n_galaxies: int, viewed: int) -> float:
    """Rare galaxies a uniformly random order shows on average among the first ``viewed`` (hypergeometric mean)."""
    return n_rare * min(viewed, n_galaxies) / n_galaxies if n_galaxies else 0.0


def rare_flags(galaxies: pd.DataFrame) -> dict[str, np.ndarray]:
    missing = [kind for kind in RARE_KINDS if kind not in galaxies]
    if missing:
        raise SystemExit(f"the bundle's galaxies table has no truth flag {', '.join(missing)}: the benchmark needs a "
                         f"bundle of the mock survey")
    return {kind: galaxies[kind].fillna(False).to_numpy(bool) for kind in RARE_KINDS}


# ----------------------------------------------------------------------------------------------------------------
# The survey


# The mock survey's artefacts: truth column -> (config key under "mock", cache-name tag)
ARTEFACTS = {"satellite_trail": ("satellite_trail_fraction", "trails"),
             "unflagged_star": ("unflagged_star_fraction", "stars")}


def survey_path(cache: Path, seed: int, galaxies: int, rare_scale: float, artefacts: dict | None = None) -> Path:
    """The survey's folder; ``artefacts`` maps config keys of ARTEFACTS to fractions (0 adds nothing to the name,
    so surveys without artefacts keep the names of earlier runs)."""
    tags = "".join(f"-{tag}{artefacts[key]:g}" for key, tag in ARTEFACTS.values() if (artefacts or {}).get(key))
    return Path(cache) / f"discovery-seed{seed}-n{galaxies}-rare{rare_scale:g}{tags}"


def check_rare_scale_honoured(config: dict) -> None:
    """Refuse at once (before a long build) when the pipeline's preparation ignores mock.rare_fraction_scale: one
    galaxy whose rare flags the scale changes is prepared as the build prepares it and its truth compared."""
    from precompute.mock.survey import galaxy_params
    from precompute.prepare import prepare_input
    from precompute.shards import Unit

    mock, seed = config["mock"], config["seed"]
    if mock["rare_fraction_scale"] == 1.0:
        return
    for index in range(mock["galaxies"]):
        _, scaled = galaxy_params(seed, index, mock["format"], mock["rare_fraction_scale"])
        _, default = galaxy_params(seed, index, mock["format"])
        want = {kind: bool(getattr(scaled, kind)) for kind in RARE_KINDS}
        if want != {kind: bool(getattr(default, kind)) for kind in RARE_KINDS}:
            break
    else:
        return  # no galaxy of this survey changes: nothing to check
    prepared, skipped = prepare_input(Unit(f"mock-{index:07d}", index=index), config)
    got = {kind: bool(prepared[0].row[kind]) for kind in RARE_KINDS} if prepared else skipped
    if got != want:
        raise SystemExit(f"mock galaxy {index} (seed {seed}) should have the rare flags {want} with "
                         f"mock.rare_fraction_scale = {mock['rare_fraction_scale']:g}, but the build's preparation "
                         f"gives {got}: precompute/prepare.py must pass config['mock']['rare_fraction_scale'] to "
                         f"make_galaxy")


def built_survey(seed: int, galaxies: int, rare_scale: float, artefacts: dict, cache: Path,
                 workers: int | None) -> Path:
    """The bundle of the mock survey (seed, galaxies, rare_scale, artefact fractions by config key) under ``cache``:
    reused when built with this very config, else built (resumed from its shards when a build was interrupted) by
    `precompute.build.build`."""
    from precompute.bundle import config_hash
    from precompute.config import load_config
    from precompute.device import resolve_device

    config = load_config(seed=seed, mock={"galaxies": galaxies, "rare_fraction_scale": rare_scale, **artefacts})
    out = survey_path(cache, seed, galaxies, rare_scale, artefacts)
    manifest = out / schema.MANIFEST.path
    if manifest.is_file():
        built = json.loads(manifest.read_text()).get("config_hash")
        # the bundle records the config with the device resolved (build: config["device"] = resolve_device(...))
        if built == config_hash(dict(config, device=resolve_device(config["device"]))):
            print(f"reusing {out} (built with this config, hash {built})", file=sys.stderr)
            return out
    check_rare_scale_honoured(config)
    from precompute.build import build

    print(f"building {out}: {galaxies} mock galaxies, seed {seed}, mock.rare_fraction_scale {rare_scale:g}"
          + "".join(f", mock.{key} {config['mock'][key]:g}" for key, _ in ARTEFACTS.values()), file=sys.stderr)
    return build(config, out, workers=workers)


def check_flags_match_config(bundle: Bundle, flags: dict[str, np.ndarray]) -> float:
    """The bundle's mock.rare_fraction_scale (1 when its config predates the option), after checking that its
    galaxies' truth flags are those the mock population draws with it (cheap: no synthesis)."""
    from precompute.mock.survey import FORMATS, galaxy_params

    mock = bundle.manifest["config"].get("mock", {})
    scale = float(mock.get("rare_fraction_scale", 1.0))
    fmt = mock.get("format", "manga")
    sources = bundle.galaxies["source"].astype(str).to_numpy() if "source" in bundle.galaxies else []
    if fmt not in FORMATS:
        return scale
    wrong = []
    for g, source in enumerate(sources):
        parts = source.split(":")
        if len(parts) != 3 or parts[0] != "mock":
            continue
        _, params = galaxy_params(int(parts[1]), int(parts[2]), fmt, scale)
        if any(bool(getattr(params, kind)) != bool(flags[kind][g]) for kind in RARE_KINDS):
            wrong.append(bundle.galaxies["galaxy_id"].iloc[g])
    if wrong:
        raise SystemExit(f"{bundle.path}: {len(wrong)} galaxies ({', '.join(map(str, wrong[:5]))}, ...) do not carry "
                         f"the rare flags of mock.rare_fraction_scale = {scale:g} that their config records")
    return scale


# ----------------------------------------------------------------------------------------------------------------


def run(bundle: Bundle, embedding: str, viewed: int, per_round: int, interesting=RARE_KINDS) -> dict:
    """Both users on one bundle, after the ``interesting`` rare kinds; returns every figure of the JSON line."""
    galaxies = bundle.galaxies
    if "anomaly_score" not in galaxies:
        raise SystemExit(f"{bundle.path}: no anomaly score in galaxies.parquet; build the anomaly model")
    flags = rare_flags(galaxies)
    rare = interesting_flag(flags, interesting)
    scale = check_flags_match_config(bundle, flags)
    ids = galaxies["galaxy_id"].to_numpy()
    ranking = lambda log: rank_bundle(bundle, log, embedding)
    with tempfile.TemporaryDirectory() as tmp:
        score_order, _ = simulate(ranking, LabelLog(Path(tmp) / "score.labels.jsonl", ids, bundle.id), rare,
                                  viewed, per_round, active=False)
        active_order, seconds = simulate(ranking, LabelLog(Path(tmp) / "active.labels.jsonl", ids, bundle.id), rare,
                                         viewed, per_round, active=True)
    cuts = tuple(sorted({*(c for c in CUTS if c <= viewed), viewed}))
    n = len(galaxies)
    n_rare = {kind: int(flag.sum()) for kind, flag in flags.items()} | {"interesting": int(rare.sum())}
    by_score, by_active = (found(order, flags, cuts, interesting) for order in (score_order, active_order))
    rounds = [*range(per_round, viewed, per_round), viewed]  # galaxies viewed after each round
    a, b = by_score[viewed]["interesting"], by_active[viewed]["interesting"]
    reranks = seconds[1:] or seconds  # the first ranking has no label yet
    # the mock's artefacts: uninteresting oddities, counted where each order showed them
    artefacts = {}
    for column, (key, _) in ARTEFACTS.items():
        flag = galaxies[column].fillna(False).to_numpy(bool) if column in galaxies else np.zeros(n, bool)
        artefacts[column] = {
            "fraction": float(bundle.manifest["config"].get("mock", {}).get(key, 0.0)), "in_survey": int(flag.sum()),
            **{f"viewed_{name}_{c}": int(flag[order[:c]].sum())
               for name, order in (("score", score_order), ("active", active_order)) for c in cuts}}
        if 0 < flag.sum() < n:  # how strongly the anomaly score falls for this artefact
            artefacts[column]["score_auc"] = round(float(roc_auc_score(flag, galaxies["anomaly_score"])), 3)
    return {
        "seed": int(bundle.manifest["seed"]), "viewed": viewed, "found_score": a, "found_active": b,
        "ratio": round(b / a, 3) if a else None, "interesting": list(interesting),
        "galaxies": n, "rare_fraction_scale": scale, "artefacts": artefacts, "embedding": embedding,
        "per_round": per_round,
        "bundle": str(bundle.path), "bundle_id": bundle.id,
        "rare_in_survey": n_rare,
        "expected_random": {str(c): {k: round(expected_random(v, n, c), 2) for k, v in n_rare.items()} for c in cuts},
        "found_by_score": {str(c): v for c, v in by_score.items()},
        "found_active_learning": {str(c): v for c, v in by_active.items()},
        "curve_score": [int(rare[score_order[:k]].sum()) for k in rounds],
        "curve_active": [int(rare[active_order[:k]].sum()) for k in rounds],
        "rerank_ms_median": round(1e3 * float(np.median(reranks)), 1),
        "rerank_ms_max": round(1e3 * float(np.max(reranks)), 1),
    }


def report(result: dict) -> None:
    cuts = list(result["found_by_score"])
    kinds = [*RARE_KINDS, "interesting"]
    interesting = result["interesting"]
    scale = result["rare_fraction_scale"]
    print(f"discovery: {result['bundle']} ({result['bundle_id']}): {result['galaxies']} galaxies, seed "
          f"{result['seed']}, mock.rare_fraction_scale {scale:g}{' (the survey as it is)' if scale == 1 else ''}")
    print(f"  a simulated user views the top {result['per_round']} each round, labels them from the truth flags "
          f"(interesting = {' or '.join(interesting)}); relevance model in the {result['embedding']!r} space")
    n_rare = result["rare_in_survey"]
    print(f"  rare galaxies in the survey: {n_rare['interesting']} of the interesting kinds "
          f"({', '.join(f'{k} {n_rare[k]}' for k in RARE_KINDS)}; a galaxy may be of several kinds)")
    print(f"  {'rare galaxies found':<19}" + "".join(f" | {f'first {c} viewed':^21}" for c in cuts))
    print(f"  {'kind':<19}" + " | random  score  active" * len(cuts))
    for kind in kinds:
        print(f"  {'total interesting' if kind == 'interesting' else kind:<19}" + "".join(
            f" | {result['expected_random'][c][kind]:6.1f} {result['found_by_score'][c][kind]:6d} "
            f"{result['found_active_learning'][c][kind]:7d}" for c in cuts))
    for column, seen in result["artefacts"].items():
        if seen["in_survey"]:
            print(f"  {column.replace('_', ' ')}s (mock.{ARTEFACTS[column][0]} {seen['fraction']:g}): "
                  f"{seen['in_survey']} in the survey, ROC AUC of the anomaly score {seen['score_auc']:.3f}; shown"
                  + ",".join(
                      f" in the first {c}: score {seen[f'viewed_score_{c}']}, active {seen[f'viewed_active_{c}']}"
                      for c in cuts))
    print(f"  found after each round of {result['per_round']} (cumulative): score  {result['curve_score']}")
    print(f"  {'':>{len(str(result['per_round'])) + 42}}active {result['curve_active']}")
    ratio = result["ratio"]
    print(f"  at {result['viewed']} viewed: {result['found_active']} with active learning vs {result['found_score']} "
          f"by anomaly score alone ({' or '.join(interesting)}): ratio {'n/a (score found none)' if ratio is None else f'{ratio:.2f}'} "
          f"(issue 13 target >= 1.5)")
    print(f"  one re-rank (precompute.rank.rank_bundle): median {result['rerank_ms_median']:.1f} ms, "
          f"worst {result['rerank_ms_max']:.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="seed of the mock survey to build (default: the config's, 42)")
    parser.add_argument("--galaxies", type=int, default=640, help="mock survey size (default 640)")
    parser.add_argument("--rare-scale", type=float, default=1.0,
                        help="mock.rare_fraction_scale: multiplies the chance of each rare kind (default 1)")
    parser.add_argument("--satellite-trails", type=float, default=0.0,
                        help="mock.satellite_trail_fraction: share of the images with a satellite trail (default 0)")
    parser.add_argument("--unflagged-stars", type=float, default=0.0,
                        help="mock.unflagged_star_fraction: share of the cubes with a foreground star no FORESTAR "
                             "bit flags (default 0)")
    parser.add_argument("--bundle", help="use this built bundle of the mock survey instead of building one")
    parser.add_argument("--cache", default="data/bundles", help="folder of the built surveys (default data/bundles)")
    parser.add_argument("--workers", type=int, default=None,
                        help="preparation worker processes for a build (default: one per core; 0 = in this process)")
    parser.add_argument("--embedding", help="feature space of the relevance model: 'anomaly parts' (the default "
                                            "when the bundle has an anomaly score) or an embedding's name")
    parser.add_argument("--interesting", nargs="+", choices=RARE_KINDS, default=list(RARE_KINDS),
                        help="the rare kinds the simulated user is after (default: all of them)")
    parser.add_argument("--viewed", type=int, default=100, help="galaxies the user views (default 100)")
    parser.add_argument("--per-round", type=int, default=10, help="galaxies viewed between re-ranks (default 10)")
    args = parser.parse_args(argv)
    if args.bundle:
        if (args.seed is not None or args.rare_scale != 1.0 or args.satellite_trails or args.unflagged_stars
                or args.galaxies != 640):
            print("--bundle given: --seed, --galaxies, --rare-scale and the artefact fractions are those of the "
                  "bundle", file=sys.stderr)
        path = Path(args.bundle)
    else:
        from precompute.config import DEFAULT_CONFIG

        seed = DEFAULT_CONFIG["seed"] if args.seed is None else args.seed
        artefacts = {"satellite_trail_fraction": args.satellite_trails,
                     "unflagged_star_fraction": args.unflagged_stars}
        path = built_survey(seed, args.galaxies, args.rare_scale, artefacts, Path(args.cache), args.workers)
    bundle = Bundle(path)
    result = run(bundle, args.embedding or default_space(bundle), args.viewed, args.per_round, args.interesting)
    report(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
