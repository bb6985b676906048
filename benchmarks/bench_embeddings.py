"""Galaxy embeddings on the mock survey: training times and how well each embedding recovers the known truth.

    python benchmarks/bench_embeddings.py                  # the demo size: 160 galaxies, default config, CPU
    python benchmarks/bench_embeddings.py --galaxies 400 --device cuda

Prepares the streamed mock survey, runs the embeddings build stage into a temporary bundle and prints, per
model, its training time and, per embedding, the figures the build records in the bundle's metrics:
augmented-view retrieval of held-out galaxies, k-NN (k = 10) R² of held-out stellar mass, light-weighted age
and EW(Hα) beside a PCA-of-cube baseline, 2-means accuracy at separating quenched from star-forming galaxies,
KS p-values of 10th-neighbour distances (train vs val; quenched vs star-forming) and the anomaly-score AUC of
mock AGN and disturbed galaxies.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from precompute.bundle import BundleWriter
from precompute.config import load_config
from precompute.device import resolve_device
from precompute.embeddings import build_embeddings
from precompute.prepare import collect, prepare_mock, write_core


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=160)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", help="JSON file overriding precompute/config.py defaults")
    args = parser.parse_args(argv)
    config = load_config(args.config, seed=args.seed, device=resolve_device(args.device),
                         mock={"galaxies": args.galaxies})

    start = time.perf_counter()
    prepared, skipped = collect(prepare_mock(args.galaxies, args.seed, config["mock"]["format"], config))
    prepare_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, BundleWriter(Path(tmp) / "bench", config, args.seed) as writer:
        galaxies, _ = write_core(writer, prepared, config)
        start = time.perf_counter()
        galaxies = build_embeddings(writer, galaxies, prepared, config, fingerprints=None)
        stage_s = time.perf_counter() - start
        metrics = writer.metrics

    n_val = int((galaxies["split"] == "val").sum())
    print(f"{len(galaxies)} mock galaxies ({n_val} held out, {skipped} skipped), device {config['device']}")
    print(f"prepare {prepare_s:.1f} s; embeddings stage {stage_s:.1f} s")
    c = metrics["contrastive"]
    print(f"contrastive: {c['seconds']:.1f} s ({c['epochs']} epochs, best {c['best_epoch']}, "
          f"{c['n_parameters'] / 1e6:.2f} M parameters, PCA of {c['pca_spectra']} spectra "
          f"explains {c['pca_explained_variance']:.3f})")
    print(f"  augmented-view retrieval of held-out galaxies: {c['augmented_retrieval_val']:.1%} among all galaxies, "
          f"{c['augmented_retrieval_within_val']:.1%} among the held-out ones")
    print(f"anomaly autoencoder: {metrics['anomaly']['seconds']:.1f} s; "
          + ", ".join(f"{k.removeprefix('auc_')} AUC {v:.3f}" for k, v in metrics["anomaly"].items()
                      if k.startswith("auc_")))
    print(f"image VAE: {metrics['image_vae']['seconds']:.1f} s")
    print()
    names = list(metrics["embeddings"])
    rows = sorted({key for figures in metrics["embeddings"].values() for key in figures})
    print(f"{'figure':<36}" + "".join(f"{n:>14}" for n in names) + f"{'cube PCA':>14}")
    for key in rows:
        baseline = c.get(f"baseline_cube_pca_{key}")
        cells = "".join(f"{metrics['embeddings'][n].get(key, float('nan')):>14.3f}" for n in names)
        print(f"{key:<36}{cells}" + (f"{baseline:>14.3f}" if baseline is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
