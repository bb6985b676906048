"""`python -m precompute build`: mock/read -> prepare -> spectral maps -> embeddings, into one bundle.

With no config it builds the demo bundle data/bundles/demo from the embedded mock survey.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from precompute import schema
from precompute.bundle import BundleWriter
from precompute.config import check_build, load_config
from precompute.device import resolve_device

DEFAULT_OUT = Path("data/bundles/demo")


def prepared_galaxies(config: dict) -> list:
    """Prepare the configured inputs: the user's files when given, else the streamed mock survey."""
    from precompute import prepare

    inputs = config["inputs"]
    if inputs["files"]:
        stream = prepare.prepare_files(
            inputs["files"], config, catalogue=inputs["catalogue"], key=inputs["catalogue_key"],
            column_map=inputs["column_map"],
        )
    else:
        mock = config["mock"]
        stream = prepare.prepare_mock(mock["galaxies"], config["seed"], mock["format"], config)
    galaxies, skipped = prepare.collect(stream)
    if skipped:
        print(f"{skipped} input(s) skipped (see the messages above); building from {len(galaxies)} galaxies")
    return galaxies


def build(config: dict, out: Path) -> Path:
    """Run every stage and write the bundle atomically; returns the bundle path."""
    check_build(config)  # refuse at once what would otherwise fail after minutes
    import torch

    from precompute import embeddings, prepare, spectral_maps

    config = dict(config, device=resolve_device(config.get("device", "auto")))
    timings = {}
    start = time.perf_counter()
    galaxies_prepared = prepared_galaxies(config)
    timings["prepare_s"] = time.perf_counter() - start
    with BundleWriter(out, config, seed=config["seed"]) as writer:
        galaxies, bins = prepare.write_core(writer, galaxies_prepared, config)
        wave = prepare.rest_frame_grid(config["prepare"])
        flux = np.concatenate([g.bin_flux for g in galaxies_prepared])
        ivar = np.concatenate([g.bin_ivar for g in galaxies_prepared])

        t0 = time.perf_counter()
        galaxies, bins, fingerprints = spectral_maps.build_spectral_maps(
            writer, galaxies, bins, wave, flux, ivar, config
        )
        timings["spectral_maps_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        galaxies = embeddings.build_embeddings(writer, galaxies, galaxies_prepared, config, fingerprints)
        timings["embeddings_s"] = time.perf_counter() - t0

        writer.write(schema.GALAXIES, galaxies)
        writer.write(schema.BINS, bins)
        timings["total_s"] = time.perf_counter() - start
        writer.provenance["timings"] = {k: round(v, 2) for k, v in timings.items()}
        # On CPU, trained weights depend on torch's thread count (it changes the order of sums): kept to rerun alike
        writer.provenance["torch_threads"] = torch.get_num_threads()
        writer.provenance["inputs"] = config["inputs"]["files"] or f"mock:{config['seed']}:{config['mock']['galaxies']}"
    print(f"bundle written to {out} in {timings['total_s']:.0f} s "
          f"({len(galaxies)} galaxies, {len(bins)} binned spectra)")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute build", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="JSON file overriding precompute/config.py defaults")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"bundle folder (default {DEFAULT_OUT})")
    parser.add_argument("--galaxies", type=int, help="mock survey size (overrides the config)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument("--device", help="cpu, cuda or auto (overrides the config)")
    args = parser.parse_args(argv)
    overrides: dict = {}
    if args.galaxies is not None:
        overrides["mock"] = {"galaxies": args.galaxies}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    build(load_config(args.config, **overrides), args.out)
    return 0
