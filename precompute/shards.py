"""Per-input shards: the unit of work of a build and what makes it resumable.

A task (`prepare_unit`) takes one input — one mock galaxy, or one file (a cube, or a set of spectra giving one
galaxy each) — prepares it and writes its galaxies into the build's staging area, one folder per galaxy of plain
.npy arrays (memory-mapped when read back), its bins table and its thumbnail. A finished shard is renamed into
place in one step and never rewritten, so a build killed at any point and started again with the same inputs and
preparation settings reuses every finished shard. The driver keeps only small per-galaxy rows; `StagedGalaxies`
gives the model stages lazy access to the prepared galaxies, one galaxy in memory at a time.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


ARRAYS = ("bin_flux", "bin_ivar", "spaxel_bins", "spaxel_flux", "spaxel_ivar", "spaxel_norm", "image")
DONE = "shard.json"  # written last inside a shard: its list of galaxies and skipped inputs
LOG = "prepared.log"  # one line per shard prepared (not reused): how tests count work done twice


@dataclass(frozen=True)
class Unit:
    """One task's input: mock galaxy `index` of the configured mock survey, or the file at `path`."""
    key: str
    index: int | None = None
    path: str | None = None


def mock_units(n: int) -> list[Unit]:
    return [Unit(f"mock-{i:07d}", index=i) for i in range(n)]


def file_units(paths) -> list[Unit]:
    return [Unit(f"file-{hashlib.sha1(str(p).encode()).hexdigest()[:16]}", path=str(p)) for p in paths]


@dataclass
class ShardResult:
    """What the driver keeps of a shard: its galaxies as (galaxy_id, folder, n_bins) and its skipped inputs."""
    key: str
    galaxies: list[tuple[str, str, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reused: bool = False


def staging_folder(out: Path, config: dict) -> Path:
    """Where a build of `out` keeps its shards: keyed by everything that changes a prepared galaxy, so another
    input list, seed or preparation setting never reuses stale shards."""
    keyed = {"prepare": config["prepare"], "inputs": config["inputs"], "mock": config["mock"], "seed": config["seed"]}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(out).parent / f".{Path(out).name}.staging-{digest}"


def prepare_unit(unit: Unit, config: dict, staging: str, catalogue=None) -> ShardResult:
    """The task: prepare one input into its shard (`precompute.prepare.prepare_input`), or reuse the finished
    shard. Bad input is reported in `skipped` (one line naming the file and the problem), never raised."""
    from precompute.prepare import prepare_input

    folder = Path(staging) / unit.key
    if (folder / DONE).exists():
        return _read_result(unit.key, folder, reused=True)
    galaxies, skipped = prepare_input(unit, config, catalogue)
    _write_shard(folder, galaxies, skipped)
    with open(Path(staging) / LOG, "a") as log:  # one short line, appended: safe from several processes
        log.write(unit.key + "\n")
    return _read_result(unit.key, folder, reused=False)


def _write_shard(folder: Path, galaxies: list, skipped: list[str]) -> None:
    """Write every galaxy into a temporary sibling, then rename it into place: a shard exists whole or not."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        names = []
        for j, galaxy in enumerate(galaxies):
            save_galaxy(galaxy, tmp / str(j))
            names.append([galaxy.galaxy_id, str(j), int(len(galaxy.bins))])
        (tmp / DONE).write_text(json.dumps({"galaxies": names, "skipped": skipped}))
        os.rename(tmp, folder)
    except FileExistsError:  # a retried task finished it meanwhile (a worker lost after writing): keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_result(key: str, folder: Path, reused: bool) -> ShardResult:
    done = json.loads((folder / DONE).read_text())
    galaxies = [(gid, str(folder / name), n) for gid, name, n in done["galaxies"]]
    return ShardResult(key, galaxies, list(done["skipped"]), reused)


def save_galaxy(galaxy, folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in ARRAYS:
        np.save(folder / f"{name}.npy", getattr(galaxy, name))
    galaxy.bins.to_parquet(folder / "bins.parquet", index=False)
    pd.DataFrame([galaxy.row]).to_parquet(folder / "row.parquet", index=False)
    (folder / "thumbnail.png").write_bytes(galaxy.thumbnail_png)


def load_galaxy(folder: str | Path):
    """A PreparedGalaxy from its shard folder; arrays are memory-mapped (read when used)."""
    from precompute.prepare import PreparedGalaxy

    folder = Path(folder)
    row = pd.read_parquet(folder / "row.parquet").iloc[0].to_dict()
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    return PreparedGalaxy(galaxy_id=row["galaxy_id"], row=row, bins=pd.read_parquet(folder / "bins.parquet"),
                          thumbnail_png=(folder / "thumbnail.png").read_bytes(), **arrays)


class StagedGalaxies(Sequence):
    """The prepared galaxies of a build, in bundle order, loaded from their shards one at a time on access."""

    def __init__(self, folders: list[str]):
        self.folders = list(folders)

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return StagedGalaxies(self.folders[i])
        return load_galaxy(self.folders[i])
