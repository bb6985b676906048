"""Scale benchmark: the build of mock surveys of growing size on a local Dask cluster.

    python benchmarks/bench_scale.py                         # 160, 640 and 2,560 galaxies, --workers 2
    python benchmarks/bench_scale.py --sizes 160 --prepare-workers 1 2

For each size: wall time per stage (from the bundle's provenance), CPU time of all processes, peak memory of the
driver and of all processes together (sampled every 0.2 s), galaxies/s and spectra/s of the preparation; the
preparation alone also with each of --prepare-workers. Prints a table and one JSON line, and projects the build of
MaNGA DR17 (10,010 galaxies) on N workers from the measured per-galaxy costs (preparation scales with workers; the
model stages run in the driver).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

DR17_GALAXIES = 10_010


class MemorySampler:
    """Peak RSS of a process and of it with all its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.2):
        self.process, self.every = psutil.Process(pid), every
        self.peak_driver = self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                family = [self.process, *self.process.children(recursive=True)]
                rss = [p.memory_info().rss for p in family]
            except psutil.Error:
                rss = []
            if rss:
                self.peak_driver = max(self.peak_driver, rss[0])
                self.peak_total = max(self.peak_total, sum(rss))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def run(command: list[str]) -> dict:
    """Run one precompute command; wall, CPU (all processes) and peak memory."""
    start, cpu_before = time.perf_counter(), psutil.Process().cpu_times()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with MemorySampler(process.pid) as sampler:
        _, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    children = psutil.Process().cpu_times()
    cpu = (children.children_user + children.children_system) - (cpu_before.children_user + cpu_before.children_system)
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu, "peak_driver_gb": sampler.peak_driver / 1e9,
            "peak_total_gb": sampler.peak_total / 1e9}


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 640, 2560])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prepare-workers", type=int, nargs="*", default=[1, 2],
                        help="also time the preparation alone with these worker counts (smallest size)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, help="keep the bundles under this folder")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    python = [sys.executable, "-m", "precompute"]
    rows = []
    try:
        for n in args.sizes:
            out = root / f"build-{n}"
            figures = run([*python, "build", "--galaxies", str(n), "--seed", str(args.seed), "--out", str(out),
                           "--workers", str(args.workers)])
            m = manifest(out)
            timings, spectra = m["provenance"]["timings"], m["metrics"]["prepare"]["binned_spectra"]
            rows.append({"stage": "build", "galaxies": n, "workers": args.workers, "binned_spectra": spectra,
                         **figures, **timings, "s_per_galaxy": figures["wall_s"] / n,
                         "prepare_galaxies_per_s": n / timings["prepare_s"],
                         "prepare_spectra_per_s": spectra / timings["prepare_s"]})
        for workers in args.prepare_workers:
            n = min(args.sizes)
            out = root / f"prepare-{n}-{workers}"
            figures = run([*python, "prepare", "--mock", str(n), "--seed", str(args.seed), "--out", str(out),
                           "--workers", str(workers)])
            rows.append({"stage": "prepare", "galaxies": n, "workers": workers, **figures,
                         "prepare_galaxies_per_s": n / figures["wall_s"]})
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"{'stage':<8} {'galaxies':>8} {'workers':>7} {'wall s':>8} {'CPU s':>8} {'driver GB':>9} {'all GB':>7} "
          f"{'s/galaxy':>8} {'prep gal/s':>10}")
    for r in rows:
        print(f"{r['stage']:<8} {r['galaxies']:>8} {r['workers']:>7} {r['wall_s']:>8.0f} {r['cpu_s']:>8.0f} "
              f"{r['peak_driver_gb']:>9.2f} {r['peak_total_gb']:>7.2f} {r['wall_s'] / r['galaxies']:>8.2f} "
              f"{r['prepare_galaxies_per_s']:>10.2f}")
    builds = [r for r in rows if r["stage"] == "build"]
    summary = {"rows": rows}
    if builds:
        largest = max(builds, key=lambda r: r["galaxies"])
        per_galaxy_prepare = largest["prepare_s"] * largest["workers"] / largest["galaxies"]  # worker-seconds
        per_galaxy_models = (largest["wall_s"] - largest["prepare_s"]) / largest["galaxies"]
        summary["dr17_projection_hours"] = {
            workers: round(DR17_GALAXIES * (per_galaxy_prepare / workers + per_galaxy_models) / 3600, 2)
            for workers in (2, 8, 32, 128)}
        print(f"MaNGA DR17 ({DR17_GALAXIES:,} galaxies), projected hours on N workers (from {largest['galaxies']} "
              f"galaxies): {summary['dr17_projection_hours']}")
    prepares = {r["workers"]: r for r in rows if r["stage"] == "prepare"}
    if 1 in prepares and 2 in prepares:
        summary["prepare_speedup_2_vs_1"] = prepares[1]["wall_s"] / prepares[2]["wall_s"]
        print(f"preparation with 2 workers vs 1: {summary['prepare_speedup_2_vs_1']:.2f}x faster")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
