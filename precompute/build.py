"""`python -m precompute build`: mock/read -> prepare -> spectral maps -> embeddings, into one bundle.

With no config it builds the demo bundle data/bundles/demo from the embedded mock survey.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from precompute import schema
from precompute.bundle import BundleWriter
from precompute.config import ConfigError, check_build, load_config
from precompute.device import resolve_device
from precompute.engine import add_engine_arguments

DEFAULT_OUT = Path("data/bundles/demo")


def check_overwrite(out: Path, config: dict, overwrite: bool) -> None:
    """Refuse to replace what `out` holds unless it is this very build (same config and inputs: a rerun, which
    resumes) or `overwrite` is given. A folder that is no bundle is never replaced without `overwrite` either."""
    from precompute.bundle import BundleError, config_hash
    from precompute.inputs import inputs_record
    from precompute.prepare import resolved_inputs

    out = Path(out)
    if overwrite or not out.exists() or not any(out.iterdir()):
        return
    manifest = out / schema.MANIFEST.path
    if not manifest.is_file():
        raise BundleError(f"{out}: exists and holds no bundle; choose another --out or pass --overwrite")
    built = json.loads(manifest.read_text())
    files = resolved_inputs(config)[0]
    inputs = inputs_record(files)["paths_sha256"] if files else f"mock:{config['seed']}:{config['mock']['galaxies']}"
    was = built.get("provenance", {}).get("inputs")
    was = was.get("paths_sha256") if isinstance(was, dict) else was
    if built.get("config_hash") != config_hash(config) or was != inputs:
        raise BundleError(f"{out}: holds a bundle built from other inputs or another config (config hash "
                          f"{built.get('config_hash')} vs {config_hash(config)}); pass --overwrite to replace it")


def build(config: dict, out: Path, workers: int | None = 0, scheduler: str | None = None,
          overwrite: bool = False) -> Path:
    """Run every stage and write the bundle atomically; returns the bundle path.

    Preparation runs one task per input on the engine (precompute.engine: `workers` single-threaded processes of a
    LocalCluster, None = one per core, 0 = in this process; or the cluster at `scheduler`) and writes per-input
    shards next to `out`; a build started again with the same inputs and settings reuses the finished ones, and
    with the same config also every finished model stage (precompute.checkpoints). Shards and checkpoints are
    removed once the bundle is in place."""
    check_build(config)  # refuse at once what would otherwise fail after minutes
    # The bundle records the device the build ran on; a rerun compares like with like
    config = dict(config, device=resolve_device(config.get("device", "auto")))
    check_overwrite(out, config, overwrite)
    import torch

    from precompute import embeddings, prepare, sed_map, spectral_maps
    from precompute.checkpoints import run_stage
    from precompute.engine import engine
    from precompute.shards import staging_folder

    staging = staging_folder(out, config)
    timings = {}
    start = time.perf_counter()
    with engine(workers, scheduler) as client:
        galaxies_prepared, skipped, provenance = prepare.prepare_to_staging(config, staging, client)
    timings["prepare_s"] = time.perf_counter() - start
    if not len(galaxies_prepared):
        raise ValueError(f"no galaxy could be prepared: all {len(skipped)} inputs were skipped (see above)")
    with BundleWriter(out, config, seed=config["seed"]) as writer:
        galaxies, bins = run_stage(writer, staging, "core", prepare.write_core, galaxies_prepared, config)
        wave = prepare.rest_frame_grid(config["prepare"])

        flux, ivar = writer.read_rows(schema.FLUX), writer.read_rows(schema.IVAR)  # streamed, never loaded whole
        t0 = time.perf_counter()
        spaxel_bins = writer.read(schema.SPAXEL_BINS)
        single = sum(np.size(b) == 1 for b in spaxel_bins.values())
        if 0 < single < len(spaxel_bins):
            print(f"{single} of {len(spaxel_bins)} inputs are single spectra and the others cubes: the build maps "
                  f"them all as cubes (a spectrum's fingerprint is one node); build them apart for seed 002")
        if sed_map.is_single_spectrum_survey(spaxel_bins):
            galaxies, bins = run_stage(writer, staging, "single spectra", build_single_spectra, galaxies, bins, wave,
                                       flux, ivar, config)
            timings["spectral_maps_s"] = time.perf_counter() - t0  # UMAP and projections of the latent included
        else:
            galaxies, bins, fingerprints = run_stage(writer, staging, "spectral maps",
                                                     spectral_maps.build_spectral_maps, galaxies, bins, wave, flux,
                                                     ivar, config)
            timings["spectral_maps_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            galaxies = run_stage(writer, staging, "embeddings", embeddings.build_embeddings, galaxies,
                                 galaxies_prepared, config, fingerprints)
            timings["embeddings_s"] = time.perf_counter() - t0

        writer.write(schema.GALAXIES, galaxies)
        writer.write(schema.BINS, bins)
        timings["total_s"] = time.perf_counter() - start
        writer.provenance["timings"] = {k: round(v, 2) for k, v in timings.items()}
        # On CPU, trained weights depend on torch's thread count (it changes the order of sums): kept to rerun alike
        writer.provenance["torch_threads"] = torch.get_num_threads()
        prepare.record_inputs(writer, config, provenance)
        writer.provenance["skipped"] = skipped
    shutil.rmtree(staging, ignore_errors=True)  # the bundle holds everything now; shards duplicate the cubes
    print(f"bundle written to {out} in {timings['total_s']:.0f} s "
          f"({len(galaxies)} galaxies, {len(bins)} binned spectra, {len(skipped)} inputs skipped)")
    return out


def build_single_spectra(writer: BundleWriter, galaxies, bins, wave, flux, ivar, config: dict):
    """The model stages of a survey of single spectra (seed 002, precompute.sed_map): DESOM-1 on the spectra, k-means
    and MiniSom on their latent codes, and the latent as the one embedding. Returns (galaxies, bins)."""
    from precompute import embeddings, sed_map, spectral_maps

    skipped = [m for m in config.get("embedding_models", []) if m in schema.EMBEDDING_SECTIONS]
    if skipped:  # said once, so nobody waits for a model that cannot run on these inputs
        print(f"every input is a single spectrum: {', '.join(skipped)} need cubes or images and are not run")
    bins, latent = spectral_maps.build_desom1(writer, galaxies, bins, wave, flux, ivar, config)
    latent = sed_map.galaxy_latent(bins, latent, len(galaxies))
    galaxies = sed_map.build_sed_map(writer, galaxies, latent, config)
    description = "seed 002: DESOM-1 latent code of each spectrum"
    writer.metrics["embeddings"] = {schema.LATENT_EMBEDDING: embeddings.write_embedding(
        writer, schema.LATENT_EMBEDDING, latent, galaxies, "euclidean", config)}
    writer.write(schema.EMBEDDING_INDEX, {schema.LATENT_EMBEDDING: {"dim": int(latent.shape[1]), "metric": "euclidean",
                                                                    "description": description}})
    writer.section("embeddings")
    return galaxies, bins


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute build", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="survey files, directories (searched for FITS files) or quoted glob patterns; "
                             "none: the embedded mock survey")
    parser.add_argument("--catalogue", help="table of galaxy properties (drpall, FITS/VOTable/CSV/Parquet)")
    parser.add_argument("--key", help="catalogue column holding the input ids (default: config, plateifu)")
    parser.add_argument("--column-map", type=Path, help="JSON file mapping catalogue columns to the bundle's names")
    parser.add_argument("--config", help="JSON file overriding precompute/config.py defaults")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"bundle folder (default {DEFAULT_OUT})")
    parser.add_argument("--galaxies", type=int, help="mock survey size (overrides the config)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument("--device", help="cpu, cuda or auto (overrides the config)")
    parser.add_argument("--dry-run", action="store_true",
                        help="inspect the inputs and print the plan (time, memory, disk); write nothing")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a bundle at --out built from other inputs or another config")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    overrides: dict = {}
    if args.galaxies is not None:
        overrides["mock"] = {"galaxies": args.galaxies}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    inputs = {k: v for k, v in (("files", args.inputs), ("catalogue", args.catalogue), ("catalogue_key", args.key))
              if v}
    if args.column_map is not None:
        try:
            inputs["column_map"] = json.loads(args.column_map.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError([f"{args.column_map}: cannot read the column map ({err})"]) from None
    if inputs:
        overrides["inputs"] = inputs  # the command line wins over the config file
    config = load_config(args.config, **overrides)
    if args.dry_run:
        from precompute.plan import plan

        plan(config, args.out, args.workers, args.scheduler)
        return 0
    build(config, args.out, args.workers, args.scheduler, args.overwrite)
    return 0
