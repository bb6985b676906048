"""Benchmark: streaming the mock survey (and, later, preparing it). Prints figures; asserts nothing.

    python benchmarks/bench_mock_prepare.py [--galaxies 40] [--seed 0] [--format manga]
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np


def bench_mock(n_galaxies: int = 40, seed: int = 0, fmt: str = "manga") -> dict:
    """Stream n galaxies; print galaxies/s, spectra (spaxels)/s and a summary of the population drawn."""
    from precompute.mock import iter_mock_survey
    from precompute.mock.population import cosmology_table
    from precompute.ssp import load_templates

    load_templates(), cosmology_table()  # one-off start-up costs, timed separately
    start = time.perf_counter()
    truth, spaxels, snr_centre, snr_rim, per_galaxy = [], 0, [], [], []
    for galaxy in iter_mock_survey(n_galaxies, seed, fmt):
        per_galaxy.append(time.perf_counter())
        obs = galaxy.observation
        spaxels += int(np.isfinite(galaxy.truth_maps["av"]).sum())
        window = (obs.wave > 4500) & (obs.wave < 5500)
        snr = np.median(obs.flux[..., window] * np.sqrt(obs.ivar[..., window]), axis=-1)
        covered = snr > 0
        snr_centre.append(snr.max())
        snr_rim.append(np.percentile(snr[covered], 10))
        truth.append(galaxy.truth)
    elapsed = time.perf_counter() - start
    figures = {
        "galaxies": n_galaxies, "seconds": round(elapsed, 2),
        "galaxies_per_s": round(n_galaxies / elapsed, 2), "spectra_per_s": round(spaxels / elapsed),
        "s_per_galaxy_median": round(float(np.median(np.diff([start] + per_galaxy))), 3),
        "snr_centre_median": round(float(np.median(snr_centre)), 1),
        "snr_rim_p10_median": round(float(np.median(snr_rim)), 1),
    }
    print(f"mock {fmt}: {figures}")

    def count(key):
        return dict(Counter(t[key] for t in truth))

    print("  morphology", count("morphology"))
    print("  environment", count("environment"), " bpt", count("bpt_class"), " whan", count("whan_class"))
    print("  quenched", sum(t["quenched"] for t in truth), " agn", sum(t["agn"] for t in truth),
          " disturbed", sum(t["disturbed"] for t in truth), " extreme emission", sum(t["extreme_emission"] for t in truth))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="manga", choices=("manga", "califa"))
    args = parser.parse_args()
    bench_mock(args.galaxies, args.seed, args.format)


if __name__ == "__main__":
    main()
