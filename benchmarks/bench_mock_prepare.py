"""Benchmark: streaming the mock survey, then preparing it into a core bundle. Prints figures; asserts nothing.

    python benchmarks/bench_mock_prepare.py [--galaxies 40] [--seed 0] [--format manga]
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np


def bench_mock(n_galaxies: int = 40, seed: int = 0, fmt: str = "manga") -> dict:
    """Stream n galaxies; print galaxies/s, spectra (spaxels)/s, wall and CPU s per galaxy (generation only;
    CPU is the fairer figure on a shared machine) and a summary of the population drawn."""
    from precompute.mock import make_galaxy
    from precompute.mock.population import cosmology_table
    from precompute.ssp import load_templates

    load_templates(), cosmology_table()  # one-off start-up costs, left out
    truth, spaxels, snr_centre, snr_rim, wall, cpu = [], 0, [], [], [], []
    for index in range(n_galaxies):
        t0, c0 = time.perf_counter(), time.process_time()
        galaxy = make_galaxy(seed, index, fmt)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        obs = galaxy.observation
        spaxels += int(np.isfinite(galaxy.truth_maps["av"]).sum())
        window = (obs.wave > 4500) & (obs.wave < 5500)
        snr = np.median(obs.flux[..., window] * np.sqrt(obs.ivar[..., window]), axis=-1)
        snr_centre.append(snr.max())
        snr_rim.append(np.percentile(snr[snr > 0], 10))
        truth.append(galaxy.truth)
    elapsed = sum(wall)
    figures = {
        "galaxies": n_galaxies, "seconds": round(elapsed, 2),
        "galaxies_per_s": round(n_galaxies / elapsed, 2), "spectra_per_s": round(spaxels / elapsed),
        "s_per_galaxy_median": round(float(np.median(wall)), 3),
        "cpu_s_per_galaxy_median": round(float(np.median(cpu)), 3),
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


def bench_prepare(n_galaxies: int = 40, seed: int = 0, fmt: str = "manga") -> dict:
    """Prepare n streamed mock galaxies and write their core bundle; times preparation alone (not the mock).

    Prints galaxies/s and spectra/s (input spaxels and binned spectra out), wall and CPU seconds per galaxy
    (CPU is the fairer figure on a shared machine), and the write_core time.
    """
    import tempfile

    from precompute import prepare
    from precompute.bundle import BundleWriter
    from precompute.config import load_config
    from precompute.mock import iter_mock_survey

    config = load_config(seed=seed)
    wall, cpu, spaxels, galaxies = [], [], 0, []
    for galaxy in iter_mock_survey(n_galaxies, seed, fmt):
        w0, c0 = time.perf_counter(), time.process_time()
        prepared = prepare.prepare_galaxy(galaxy.observation, config["prepare"], truth=galaxy.truth,
                                          truth_maps=galaxy.truth_maps, image=galaxy.image)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        spaxels += galaxy.observation.n_spectra
        galaxies.append(prepared)
    w0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, BundleWriter(f"{tmp}/core", config, seed=seed) as writer:
        _, bins = prepare.write_core(writer, galaxies, config)
    write_s = time.perf_counter() - w0
    figures = {
        "galaxies": n_galaxies, "prepare_s": round(sum(wall), 2),
        "galaxies_per_s": round(n_galaxies / sum(wall), 2),
        "spaxels_per_s": round(spaxels / sum(wall)), "binned_spectra_per_s": round(len(bins) / sum(wall)),
        "s_per_galaxy_median": round(float(np.median(wall)), 3), "s_per_galaxy_max": round(max(wall), 3),
        "cpu_s_per_galaxy_median": round(float(np.median(cpu)), 3),
        "binned_spectra": len(bins), "bins_per_galaxy_median": float(np.median([len(g.bins) for g in galaxies])),
        "bin_snr_median": round(float(bins["snr"].median()), 1), "write_core_s": round(write_s, 2),
    }
    print(f"prepare {fmt}: {figures}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="manga", choices=("manga", "califa"))
    args = parser.parse_args()
    bench_mock(args.galaxies, args.seed, args.format)
    bench_prepare(args.galaxies, args.seed, args.format)


if __name__ == "__main__":
    main()
