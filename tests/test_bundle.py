"""The bundle writer is atomic and the reader says clearly what is wrong."""
import json

import numpy as np
import pandas as pd
import pytest

from precompute.bundle import CORE_FILES, Bundle, BundleError, BundleWriter, config_hash, register_section


def write_minimal(path, config=None, sections=()):
    with BundleWriter(path, config or {"seed": 1}, seed=1) as w:
        w.table("galaxies", pd.DataFrame({"galaxy_id": ["a", "b"], "split": ["train", "val"]}))
        w.table("bins", pd.DataFrame({"galaxy_id": ["a"], "galaxy_index": [0]}))
        w.array("spectra/wave", np.linspace(3650, 7000, 5))
        w.array("spectra/flux", np.ones((1, 5), np.float32))
        w.array("spectra/ivar", np.ones((1, 5), np.float32))
        w.arrays("spaxel_bins", {"a": np.zeros((2, 2), np.int32)})
        w.array("images/gri", np.zeros((2, 3, 4, 4), np.float32))
        for s in sections:
            w.section(s)
    return path


def test_round_trip_and_manifest(tmp_path):
    b = Bundle(write_minimal(tmp_path / "demo", {"seed": 1, "x": [1, 2]}))
    assert list(b.galaxies.galaxy_id) == ["a", "b"]
    assert b.array("spectra/flux").shape == (1, 5)
    assert b.arrays("spaxel_bins")["a"].shape == (2, 2)
    assert b.manifest["config_hash"] == config_hash({"seed": 1, "x": [1, 2]})
    assert b.id.startswith("demo-")
    assert not list(tmp_path.glob(".demo.tmp-*")), "temporary folder left behind"


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_failed_write_keeps_the_old_bundle(tmp_path):
    path = write_minimal(tmp_path / "demo")
    before = (path / "manifest.json").read_text()
    with pytest.raises(RuntimeError, match="boom"):
        with BundleWriter(path, {"seed": 2}, seed=2) as w:
            w.table("galaxies", pd.DataFrame({"galaxy_id": ["z"]}))
            raise RuntimeError("boom")
    assert (path / "manifest.json").read_text() == before
    assert list(Bundle(path).galaxies.galaxy_id) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_incomplete_write_is_refused(tmp_path):
    with pytest.raises(BundleError, match="without galaxies.parquet"):
        with BundleWriter(tmp_path / "demo", {}, seed=0):
            pass
    assert list(tmp_path.iterdir()) == []


def test_reader_names_missing_files_and_versions(tmp_path):
    with pytest.raises(BundleError, match="manifest.json missing"):
        Bundle(tmp_path / "nothing")
    path = write_minimal(tmp_path / "demo")
    (path / "spectra" / "ivar.npy").unlink()
    with pytest.raises(BundleError, match="missing spectra/ivar.npy"):
        Bundle(path)
    path = write_minimal(tmp_path / "demo2")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version 99"):
        Bundle(path)


def test_sections_are_checked(tmp_path):
    register_section("test_section", ("test_section/values.npy",))
    with pytest.raises(BundleError, match="without test_section/values.npy"):
        write_minimal(tmp_path / "demo", sections=["test_section"])
    assert set(CORE_FILES) >= {"galaxies.parquet", "bins.parquet", "manifest.json"}
