"""`python -m precompute build ... --dry-run`: what a build would do, without writing anything.

Every input file is inspected on the build's engine (format, id, spectra); a sample of inputs is prepared (in
memory only) to measure binned spectra per galaxy, seconds and memory per galaxy and the size of a shard; the plan
projects the build from those: galaxies, binned spectra, wall time on the chosen workers, peak memory per worker,
disk for the bundle and for the staging shards. Model stages are projected from rates measured on the demo build.
"""
from __future__ import annotations

import json
import resource
import time
from collections import Counter

from precompute.config import check_build
from precompute.prepare import read_catalogue, resolved_inputs, rest_frame_grid

SAMPLE = 8  # inputs prepared to measure per-galaxy costs
# Model stages on the project's 2-core CPU machine, demo build (README): spectral maps 42 s for 43,765 binned
# spectra; cube embeddings 134 s for 160 galaxies. Rough, and the reason the plan names them separately.
SPECTRAL_MAPS_S_PER_SPECTRUM = 42 / 43_765
EMBEDDINGS_S_PER_GALAXY = 134 / 160


def inspect_unit(unit, catalogue=None) -> dict:
    """Task: what the reader makes of one input (format, id, spectra), or why it will be skipped."""
    from precompute.formats import inspect_file
    from precompute.observation import InputError

    try:
        return inspect_file(unit.path, catalogue=catalogue)
    except (InputError, OSError) as err:
        return {"path": unit.path, "skipped": str(err)}


def sample_unit(unit, config: dict, catalogue=None) -> dict:
    """Task: prepare one input in memory (nothing written) and measure it."""
    from precompute.prepare import prepare_input

    start, cpu = time.perf_counter(), time.process_time()
    galaxies, _ = prepare_input(unit, config, catalogue)
    return {"galaxies": len(galaxies), "binned_spectra": sum(len(g.bins) for g in galaxies),
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "shard_bytes": sum(getattr(g, name).nbytes for g in galaxies for name in
                               ("bin_flux", "bin_ivar", "spaxel_flux", "spaxel_ivar", "spaxel_norm", "image")),
            "thumbnail_bytes": sum(len(g.thumbnail_png) for g in galaxies)}


def plan(config: dict, out, workers: int | None = None, scheduler: str | None = None) -> dict:
    """Print the plan of a build of `config` into `out` on the engine, one JSON line last; returns it."""
    from precompute.engine import default_workers, engine, run_tasks
    from precompute.shards import file_units, mock_units

    check_build(config)
    files, skipped = resolved_inputs(config)
    catalogue = read_catalogue(config) if files else None
    units = file_units(files) if files else mock_units(config["mock"]["galaxies"])
    with engine(workers, scheduler) as client:
        n_workers = len(client.scheduler_info()["workers"]) if client is not None else 0
        if files:
            inspected = [r for _, r in run_tasks(client, inspect_unit, units, "inspect", catalogue=catalogue)]
            readable = [(u, r) for u, r in zip(units, inspected) if "skipped" not in r]
            skipped += [r["skipped"] for r in inspected if "skipped" in r]
        else:
            readable = [(u, {"format": f"mock {config['mock']['format']}", "n_spectra": 1}) for u in units]
        step = max(1, len(readable) // SAMPLE)
        chosen = [u for u, _ in readable[::step][:SAMPLE]]
        sample = [r for _, r in run_tasks(client, sample_unit, chosen, "sample", config=config, catalogue=catalogue)]

    formats = Counter(r["format"] for _, r in readable)
    galaxies = sum(1 if r["format"] in ("manga", "califa") or r["format"].startswith("mock") else r["n_spectra"]
                   for _, r in readable)
    sampled = max(sum(s["galaxies"] for s in sample), 1)
    per_galaxy = {key: sum(s[key] for s in sample) / sampled for key in
                  ("binned_spectra", "seconds", "shard_bytes", "thumbnail_bytes")}
    binned_spectra = int(round(galaxies * per_galaxy["binned_spectra"]))
    unmatched = []
    if catalogue is not None:
        key = config["inputs"]["catalogue_key"]
        known = set(catalogue[key].astype(str))
        unmatched = [r["id"] for _, r in readable if str(r.get("id")) not in known]
    n_wave, size = rest_frame_grid(config["prepare"]).size, config["prepare"]["image_size"]
    prepare_s = galaxies * per_galaxy["seconds"] / max(n_workers, 1)
    models_s = binned_spectra * SPECTRAL_MAPS_S_PER_SPECTRUM + (
        galaxies * EMBEDDINGS_S_PER_GALAXY if config["embedding_models"] else 0.0)
    result = {
        "out": str(out), "inputs": len(files) if files else f"mock survey of {len(units)}",
        "formats": dict(formats), "skipped": skipped, "galaxies": galaxies,
        "galaxies_without_catalogue_row": unmatched, "sampled_galaxies": sampled,
        "binned_spectra": binned_spectra, "workers": n_workers,
        "prepare_hours": round(prepare_s / 3600, 3), "models_hours": round(models_s / 3600, 3),
        "peak_memory_per_worker_gb": round(max((s["peak_rss_bytes"] for s in sample), default=0) / 1e9, 2),
        "bundle_gb": round((binned_spectra * n_wave * 8 + galaxies * (3 * size * size * 4
                                                                       + per_galaxy["thumbnail_bytes"])) / 1e9, 3),
        "staging_gb": round(galaxies * per_galaxy["shard_bytes"] / 1e9, 3),
    }
    for line in _lines(result, default_workers()):
        print(line)
    print(json.dumps(result))
    return result


def _lines(r: dict, cores: int) -> list[str]:
    lines = [f"plan for {r['out']}: {r['inputs']} inputs -> {r['galaxies']:,} galaxies"]
    lines += [f"  {n} {fmt}" for fmt, n in r["formats"].items()]
    lines += [f"  will skip {line}" for line in r["skipped"]]
    if r["galaxies_without_catalogue_row"]:
        lines.append(f"  {len(r['galaxies_without_catalogue_row'])} galaxies have no catalogue row: "
                     f"{', '.join(map(str, r['galaxies_without_catalogue_row'][:10]))}")
    engine = f"{r['workers']} workers" if r["workers"] else "in-process"
    lines += [
        f"  binned spectra: ~{r['binned_spectra']:,} (from {r['sampled_galaxies']} sampled galaxies)",
        f"  preparation: ~{r['prepare_hours'] * 60:.1f} min on {engine} ({cores} cores here); model stages: "
        f"~{r['models_hours'] * 60:.1f} min (rates of the demo build on 2 cores)",
        f"  peak memory per worker: ~{r['peak_memory_per_worker_gb']:.2f} GB; disk: bundle ~{r['bundle_gb']:.2f} GB, "
        f"staging shards ~{r['staging_gb']:.2f} GB during the build",
    ]
    return lines

