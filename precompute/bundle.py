"""The bundle: the one contract between precompute/ and explorer/ (documented in docs/bundle-schema.md).

A bundle is a folder of Parquet tables, .npy arrays, PNG thumbnails and manifest.json. It is written into a
temporary sibling folder and renamed into place only when complete, so a crash never leaves a half bundle and
an existing bundle is replaced only by a finished one.
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

SCHEMA_VERSION = 1

# Files every bundle has, and the files each optional section adds (see docs/bundle-schema.md).
CORE_FILES = (
    "manifest.json",
    "galaxies.parquet",
    "bins.parquet",
    "spectra/wave.npy",
    "spectra/flux.npy",
    "spectra/ivar.npy",
    "spaxel_bins.npz",
    "images/gri.npy",
)
# Files of each embedding named in embeddings/index.json (section `embeddings`).
EMBEDDING_FILES = ("vectors.npy", "umap.npy", "knn.npy", "knn_distance.npy", "clusters.parquet",
                   "property_correlation.parquet")


def embedding_files(name: str) -> tuple[str, ...]:
    return tuple(f"embeddings/{name}/{f}" for f in EMBEDDING_FILES)


SECTION_FILES: dict[str, tuple[str, ...]] = {
    "desom1": ("desom1/grid.json", "desom1/model.pt", "desom1/prototypes_latent.npy", "desom1/prototype_spectra.npy",
               "desom1/member_spectra.npy", "desom1/hits.npy", "desom1/umatrix.npy", "desom1/node_properties.parquet",
               "desom1/node_histograms.npz"),
    "fingerprints": ("fingerprints/counts.npy", "fingerprints/fingerprints.npy", "fingerprints/node_scale.npy"),
    # desom2/model.pt exists only for the DESOM backend (a MiniSom map is its prototypes).
    "desom2": ("desom2/grid.json", "desom2/prototypes.npy", "desom2/hits.npy", "desom2/umatrix.npy"),
    "embeddings": ("embeddings/index.json",),  # plus the files of every embedding the index names
    "contrastive": (*embedding_files("contrastive"), "contrastive/model.pt", "contrastive/pca.npz"),
    "anomaly": (*embedding_files("anomaly"), "anomaly/model.pt", "anomaly/lines.json", "anomaly/line_residuals.npy",
                "anomaly/spaxel_residuals.npy"),
    "image_vae": (*embedding_files("image_vae"), "image_vae/model.pt", "image_vae/traversals.npy",
                  "image_vae/property_correlation.parquet"),
}


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or of another schema version; the message says what and how to fix it."""


def config_hash(config: dict) -> str:
    """Stable hash of a configuration: the same config gives the same hash on every machine."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def register_section(name: str, files: tuple[str, ...]) -> None:
    """Declare a new section's files (extensions of the schema; the documented sections are listed above)."""
    SECTION_FILES[name] = tuple(files)


class BundleWriter:
    """Write a bundle atomically: ``with BundleWriter(path, config) as w: w.table(...); w.array(...)``."""

    def __init__(self, path: str | os.PathLike, config: dict, seed: int):
        self.path = Path(path)
        self.config, self.seed = config, seed
        self.metrics: dict = {}
        self.sections: list[str] = []
        self.provenance: dict = {}
        self._tmp: Path | None = None

    def __enter__(self) -> "BundleWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        try:
            self._write_manifest()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.rename(self.path, old)
        os.rename(self._tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _file(self, relpath: str) -> Path:
        target = self._tmp / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def table(self, name: str, frame: pd.DataFrame) -> None:
        frame.to_parquet(self._file(f"{name}.parquet"), index=False)

    def array(self, relpath: str, values: np.ndarray) -> None:
        np.save(self._file(f"{relpath}.npy"), np.ascontiguousarray(values))

    def arrays(self, relpath: str, values: dict[str, np.ndarray]) -> None:
        np.savez_compressed(self._file(f"{relpath}.npz"), **values)

    def blob(self, relpath: str, data: bytes) -> None:
        self._file(relpath).write_bytes(data)

    def json(self, relpath: str, value) -> None:
        self._file(relpath).write_text(json.dumps(value, indent=1, default=_json_default))

    def section(self, name: str) -> None:
        """Declare that the bundle carries an optional section (its files are checked on reading)."""
        if name not in SECTION_FILES:
            raise KeyError(f"unknown bundle section {name!r}; known: {sorted(SECTION_FILES)}")
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
        for relpath in CORE_FILES + tuple(f for s in self.sections for f in SECTION_FILES[s]):
            if relpath != "manifest.json" and not (self._tmp / relpath).exists():
                raise BundleError(f"bundle {self.path}: writer finished without {relpath}")
        (self._tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json_default))


class Bundle:
    """Read a bundle, checking its schema version and that every declared file is present.

    Tables load on first use; arrays are memory-mapped so the dashboard's server shares pages between sessions.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise BundleError(
                f"{self.path}: no bundle here (manifest.json missing); build one with `python -m precompute build --out {self.path}`"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise BundleError(f"{manifest_path}: not valid JSON ({err})") from None
        version = self.manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(f"{self.path}: bundle schema version {version}, this software reads version {SCHEMA_VERSION}; rebuild it")
        missing = [f for f in self.expected_files() if not (self.path / f).exists()]
        if missing:
            raise BundleError(f"{self.path}: bundle is incomplete, missing {', '.join(missing)}")
        self._cache: dict = {}

    def expected_files(self) -> list[str]:
        files = list(CORE_FILES)
        for section in self.manifest.get("sections", []):
            if section not in SECTION_FILES:
                raise BundleError(f"{self.path}: unknown section {section!r} (written by a newer version?)")
            files += SECTION_FILES[section]
        index = self.path / "embeddings" / "index.json"
        if self.has("embeddings") and index.exists():
            files += [f for name in json.loads(index.read_text()) for f in embedding_files(name)]
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

    def table(self, name: str) -> pd.DataFrame:
        key = ("table", name)
        if key not in self._cache:
            self._cache[key] = pd.read_parquet(self.path / f"{name}.parquet")
        return self._cache[key]

    def array(self, relpath: str) -> np.ndarray:
        key = ("array", relpath)
        if key not in self._cache:
            self._cache[key] = np.load(self.path / f"{relpath}.npy", mmap_mode="r")
        return self._cache[key]

    def arrays(self, relpath: str) -> dict[str, np.ndarray]:
        key = ("arrays", relpath)
        if key not in self._cache:
            with np.load(self.path / f"{relpath}.npz") as data:
                self._cache[key] = {k: data[k] for k in data.files}
        return self._cache[key]

    def json(self, relpath: str):
        return json.loads((self.path / relpath).read_text())

    @property
    def galaxies(self) -> pd.DataFrame:
        return self.table("galaxies")

    @property
    def bins(self) -> pd.DataFrame:
        return self.table("bins")

    @property
    def wave(self) -> np.ndarray:
        return self.array("spectra/wave")


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
