"""Model-stage checkpoints: what makes a build killed after preparation resume at its last finished stage.

A stage is a function of the unfinished bundle (`BundleWriter`) that writes its files and returns small values the
next stages need (tables, fingerprints). When it finishes, `run_stage` keeps what the bundle holds at that point
beside the preparation shards: hard links to its files (no copy of the survey-size arrays) and a pickle of the
stage's result, metrics, sections and provenance. A rerun of the same build (same config hash) puts those files
back and skips the stage. A checkpoint is written into a temporary folder and renamed into place, so it exists
whole or not at all; checkpoints of another configuration are removed, and all of them go with the staging folder
once the bundle is in place.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

from precompute.bundle import SCRATCH, BundleWriter, config_hash

STATE = "stage.pkl"  # written last inside a checkpoint


def run_stage(writer: BundleWriter, staging: Path, name: str, stage, *args):
    """`stage(writer, *args)`, or its result restored from a checkpoint of this very build."""
    folder = _stages_folder(staging, writer.config) / name.replace(" ", "-")
    if (folder / STATE).is_file():
        with open(folder / STATE, "rb") as f:
            state = pickle.load(f)
        _link_tree(folder, writer.unfinished, skip={STATE})
        resumed = writer.provenance.get("resumed_stages", [])  # in this run: earlier runs' lists do not count
        writer.metrics, writer.sections = state["metrics"], state["sections"]
        writer.provenance = {**state["provenance"], "resumed_stages": [*resumed, name]}
        print(f"{name}: finished in an earlier run of this build, reused")
        return state["result"]
    result = stage(writer, *args)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        _link_tree(writer.unfinished, tmp, skip={SCRATCH})
        state = {"result": result, "metrics": writer.metrics, "sections": writer.sections,
                 "provenance": writer.provenance}
        with open(tmp / STATE, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _stages_folder(staging: Path, config: dict) -> Path:
    """This config's checkpoint folder; those of other configs (changed model settings) can never be reused."""
    root = Path(staging) / "stages"
    mine = root / config_hash(config)
    if root.is_dir():
        for other in root.iterdir():
            if other != mine:
                shutil.rmtree(other, ignore_errors=True)
    mine.mkdir(parents=True, exist_ok=True)
    for partial in mine.glob(".*.partial-*"):  # left by a kill while a checkpoint was written
        shutil.rmtree(partial, ignore_errors=True)
    return mine


def _link_tree(source: Path, target: Path, skip: set[str]) -> None:
    """Hard-link every file under `source` into `target` (a copy where the file system cannot link). The writer
    unlinks a file before writing it again, so a linked file is never changed in place."""
    for path in sorted(Path(source).rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in skip or not path.is_file():
            continue
        destination = Path(target) / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.unlink(missing_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
