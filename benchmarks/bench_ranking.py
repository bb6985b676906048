"""Ranking benchmark (issue 13): time of one "what to look at next" update after a label, at 10,000 galaxies.

    python benchmarks/bench_ranking.py                         # 10,000 galaxies × 512-d (the contrastive width)
    python benchmarks/bench_ranking.py --galaxies 10000 --dim 512 --labelled 1 10 100 1000 --repeats 5
    python benchmarks/bench_ranking.py --bundle data/bundles/bench-1m --embedding contrastive   # a built bundle

One update is what the dashboard does after a label: append the event to a labels file (written and fsynced),
recompute the galaxy label columns, and rank every galaxy (precompute.rank.rank: the kernel vote of the labelled
galaxies in the embedding times the anomaly percentile, then the sort). Without --bundle the vectors and anomaly
scores are random (the cost depends on their sizes, not their values); with --bundle the whole
`precompute.rank.rank_bundle` runs on that bundle's memory-mapped files. Prints the median and worst wall and CPU
time per update for each number of labelled galaxies (target: ≤ 1 s).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from precompute.bundle import Bundle
from precompute.labels import INTERESTING, NOT_INTERESTING, LabelLog
from precompute.rank import rank, rank_bundle

TARGET_S = 1.0


def update(log: LabelLog, g: int, label: str, ranking) -> None:
    log.add(label, [g])
    log.columns()
    ranking()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--galaxies", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labelled", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bundle", help="rank a built bundle instead of random vectors")
    parser.add_argument("--embedding", default="contrastive")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle:
            bundle = Bundle(args.bundle)
            ids = bundle.galaxies["galaxy_id"].to_numpy()
            log = LabelLog(Path(tmp) / "bench.labels.jsonl", ids, bundle.id)
            ranking = lambda: rank_bundle(bundle, log, args.embedding)
            what = f"{args.bundle} ({len(ids):,} galaxies, embedding {args.embedding})"
        else:
            ids = np.array([f"g{i}" for i in range(args.galaxies)], dtype=object)
            vectors = np.maximum(rng.normal(size=(args.galaxies, args.dim)), 0).astype(np.float32)  # ReLU outputs
            anomaly = rng.gamma(2.0, size=args.galaxies)
            log = LabelLog(Path(tmp) / "bench.labels.jsonl", ids, "bench")
            ranking = lambda: rank(vectors, "cosine", 0.05, log.relevance(), anomaly)
            what = f"random {args.galaxies:,} × {args.dim} cosine vectors"
        print(f"ranking update after one label: {what}")
        order = rng.permutation(len(ids))
        done = 0
        for target in sorted(args.labelled):
            while done < target - 1:  # labels already given before the measured updates
                log.add(INTERESTING if done % 3 == 0 else NOT_INTERESTING, [order[done]])
                done += 1
            walls, cpus = [], []
            for i in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                update(log, int(order[done]), INTERESTING if i % 2 else NOT_INTERESTING, ranking)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                log.undo(log.events[-1]["event"])  # keep `target` labelled for the next repeat
            worst = max(walls)
            print(f"  {target:>5} labelled: median {np.median(walls) * 1e3:7.1f} ms wall "
                  f"({np.median(cpus) * 1e3:7.1f} ms CPU), worst {worst * 1e3:7.1f} ms — "
                  f"{'within' if worst <= TARGET_S else 'OVER'} the {TARGET_S:.0f} s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
