"""The bundle: the one contract between precompute/ and explorer/ (documented in docs/bundle-schema.md).

A bundle is a folder of Parquet tables, .npy arrays, PNG thumbnails and manifest.json, each file declared once in
precompute.schema. It is written into a temporary sibling folder and renamed into place only when complete, so a
crash never leaves a half bundle and an existing bundle is replaced only by a finished one.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from precompute import schema
from precompute.rows import NpyRows, NpyRowWriter
from precompute.schema import SCHEMA_VERSION, BundleFile

SCRATCH = ".scratch"  # inside the unfinished bundle: see BundleWriter.scratch


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or of another schema version; the message says what and how to fix it."""


def config_hash(config: dict) -> str:
    """Stable hash of a configuration: the same config gives the same hash on every machine."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BundleWriter:
    """Write a bundle atomically: ``with BundleWriter(path, config, seed) as w: w.write(schema.GALAXIES, table); ...``."""

    def __init__(self, path: str | os.PathLike, config: dict, seed: int):
        self.path = Path(path)
        self.config, self.seed = config, seed
        self.metrics: dict = {}
        self.sections: list[str] = []
        self.provenance: dict = {}
        self._tmp: Path | None = None

    def __enter__(self) -> "BundleWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _recover(self.path)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-{os.getpid()}-", dir=self.path.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o777 & ~umask)  # a data product, readable by others like any folder (mkdtemp: 0700)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        shutil.rmtree(self._tmp / SCRATCH, ignore_errors=True)
        try:
            self._write_manifest()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        if self.path.exists() and _exchange(self._tmp, self.path):
            shutil.rmtree(self._tmp, ignore_errors=True)  # it holds the old bundle now
            return
        old = None
        if self.path.exists():  # no atomic exchange here: a kill between the renames is undone by _recover
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.rename(self.path, old)
        os.rename(self._tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    @property
    def unfinished(self) -> Path:
        """The temporary folder the bundle is being written into (precompute.checkpoints keeps copies of it)."""
        return self._tmp

    def _file(self, relpath: str) -> Path:
        target = self._tmp / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # a new file: a stage checkpoint may hold a hard link to the old one
        return target

    def write(self, spec: BundleFile, value, **names) -> None:
        """Write one declared file: a DataFrame (table), an array (cast to the declared dtype when that keeps its
        kind, e.g. float64 → float32), a dict of arrays (npz), a JSON-able value or bytes."""
        target = self._file(spec.at(**names))
        if spec.kind == "table":
            value.to_parquet(target, index=False)
        elif spec.kind == "array":
            np.save(target, _declared_array(spec, value))
        elif spec.kind == "arrays":
            np.savez_compressed(target, **value)
        elif spec.kind == "json":
            target.write_text(json.dumps(value, indent=1, default=_json_default))
        else:
            target.write_bytes(value)

    def read(self, spec: BundleFile, **names) -> np.ndarray:
        """A (small) array already written into the unfinished bundle, memory-mapped."""
        return np.load(self._tmp / spec.at(**names), mmap_mode="r")

    def read_rows(self, spec: BundleFile, **names) -> NpyRows:
        """A survey-size array already written, as rows read on demand (precompute.rows: no memory map)."""
        return NpyRows(self._tmp / spec.at(**names))

    def open_rows(self, spec: BundleFile, shape: tuple[int, ...], **names) -> NpyRowWriter:
        """A declared array written block of rows by block of rows (precompute.rows); `close` it."""
        if spec.kind != "array":
            raise BundleError(f"{spec.path} is a {spec.kind}, not an array")
        return NpyRowWriter(self._file(spec.at(**names)), shape, spec.dtype)

    def scratch(self, name: str) -> Path:
        """A folder for a stage's intermediate files (e.g. model inputs streamed from disk). It lives inside the
        unfinished bundle, so whatever ends the build (success, error or kill) removes it with the bundle's
        temporary folder; it is never part of the bundle."""
        folder = self._tmp / SCRATCH / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def section(self, name: str) -> None:
        """Declare that the bundle carries an optional section (its files are checked on reading)."""
        schema.section_files(name)  # unknown sections raise here, not when the bundle is read
        self.sections.append(name)

    def _write_manifest(self) -> None:
        chash = config_hash(self.config)
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "bundle_id": f"{self.path.name}-{chash[:8]}-{created.replace(':', '').replace('-', '')[:15]}",
            "created": created,
            "seed": self.seed,
            "config": self.config,
            "config_hash": chash,
            "sections": self.sections,
            "metrics": self.metrics,
            "provenance": {**_software_versions(), **self.provenance},
        }
        for spec in _declared_files(["core", *self.sections]):
            if spec.required and spec is not schema.MANIFEST and not (self._tmp / spec.path).exists():
                raise BundleError(f"bundle {self.path}: writer finished without {spec.path}")
        (self._tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json_default))


class Bundle:
    """Read a bundle, checking its schema version and that every declared file is present.

    Files are read through their declarations (``bundle.read(schema.DESOM1_HITS)``). Tables load on first use;
    arrays are memory-mapped so the dashboard's server shares pages between sessions.
    """

    def __init__(self, path: str | os.PathLike, check_files: bool = True):
        self.path = Path(path)
        manifest_path = self.path / schema.MANIFEST.path
        if not manifest_path.exists():
            raise BundleError(
                f"{self.path}: no bundle here (manifest.json missing); build one with `python -m precompute build --out {self.path}`"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise BundleError(f"{manifest_path}: not valid JSON ({err})") from None
        if not isinstance(self.manifest, dict):
            raise BundleError(f"{manifest_path}: expected a JSON object, got {type(self.manifest).__name__}")
        version = self.manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{self.path}: bundle schema version {version}, this software reads version {SCHEMA_VERSION}; rebuild it")
        self._cache: dict = {}
        if check_files:
            missing = [f for f in self.expected_files() if not (self.path / f).exists()]
            if missing:
                raise BundleError(f"{self.path}: bundle is incomplete, missing {', '.join(missing)}; "
                                  f"`python -m precompute validate {self.path}` lists every problem")

    def expected_files(self) -> list[str]:
        """Paths of every required file of the manifest's sections (per-embedding files for each indexed name)."""
        sections = ["core", *self.manifest.get("sections", [])]
        unknown = [s for s in sections if s not in schema.SECTIONS]
        if unknown:
            raise BundleError(f"{self.path}: unknown section {unknown[0]!r} (written by a newer version?)")
        files = [spec.path for spec in _declared_files(sections) if spec.required]
        if self.has("embeddings") and (self.path / schema.EMBEDDING_INDEX.path).exists():
            files += [spec.at(embedding=name) for name in self.read(schema.EMBEDDING_INDEX)
                      for spec in schema.EMBEDDING_FILES if spec.required]
        return files

    def has(self, section: str) -> bool:
        return section in self.manifest.get("sections", [])

    @property
    def id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    def read(self, spec: BundleFile, **names):
        """One declared file: DataFrame (table), memory-mapped array, dict of arrays (npz), JSON value or bytes.
        Cached: every view of a dashboard process shares one copy."""
        relpath = spec.at(**names)
        key = (spec.kind, relpath)
        if key not in self._cache:
            path = self.path / relpath
            if spec.kind == "table":
                value = pd.read_parquet(path)
            elif spec.kind == "array":
                value = np.load(path, mmap_mode="r")
            elif spec.kind == "arrays":
                with np.load(path) as data:
                    value = {k: data[k] for k in data.files}
            elif spec.kind == "json":
                value = json.loads(path.read_text())
            else:
                return path.read_bytes()  # blobs (model weights) are read once by their user: not cached
            self._cache[key] = value
        return self._cache[key]

    @property
    def galaxies(self) -> pd.DataFrame:
        return self.read(schema.GALAXIES)

    @property
    def bins(self) -> pd.DataFrame:
        return self.read(schema.BINS)

    @property
    def wave(self) -> np.ndarray:
        return self.read(schema.WAVE)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE), so `b` is never missing; False where the
    system or file system cannot."""
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(path: Path) -> None:
    """Clean up after writers that were killed: remove their temporary folders, and put back a previous bundle
    left aside between the two renames of the fallback swap."""
    for leftover in path.parent.glob(f".{path.name}.*"):
        kind, _, rest = leftover.name[len(path.name) + 2:].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not path.exists():
            os.rename(leftover, path)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def _declared_files(sections) -> list[BundleFile]:
    """The non-templated files of these sections (per-embedding files are listed through the index)."""
    return [spec for section in sections for spec in schema.section_files(section) if not spec.templated]


def _declared_array(spec: BundleFile, value) -> np.ndarray:
    """The array in its declared dtype; refuses a cast that would change its kind (float data into ints, say)."""
    value = np.asarray(value)
    dtype = np.dtype(spec.dtype)
    if value.dtype != dtype and not np.can_cast(value.dtype, dtype, "same_kind"):
        raise BundleError(f"{spec.path}: got {value.dtype} values, declared {dtype}")
    if spec.shape and value.ndim != len(spec.shape):
        raise BundleError(f"{spec.path}: got shape {value.shape}, declared [{', '.join(map(str, spec.shape))}]")
    return np.ascontiguousarray(value, dtype=dtype)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _software_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "astropy", "torch", "vorbin", "umap-learn", "minisom", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"software": out}
