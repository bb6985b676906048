"""The bundle writer is atomic and the reader says clearly what is wrong."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from precompute import schema
from precompute.bundle import Bundle, BundleError, BundleWriter, config_hash


def write_minimal(path, config=None, sections=()):
    with BundleWriter(path, config or {"seed": 1}, seed=1) as w:
        w.write(schema.GALAXIES, pd.DataFrame({"galaxy_id": ["a", "b"], "split": ["train", "val"]}))
        w.write(schema.BINS, pd.DataFrame({"galaxy_id": ["a"], "galaxy_index": [0]}))
        w.write(schema.WAVE, np.linspace(3650, 7000, 5))
        w.write(schema.FLUX, np.ones((1, 5), np.float32))
        w.write(schema.IVAR, np.ones((1, 5), np.float32))
        w.write(schema.SPAXEL_BINS, {"a": np.zeros((2, 2), np.int32)})
        w.write(schema.IMAGES, np.zeros((2, 3, 4, 4), np.float32))
        for s in sections:
            w.section(s)
    return path


def test_round_trip_and_manifest(tmp_path):
    b = Bundle(write_minimal(tmp_path / "demo", {"seed": 1, "x": [1, 2]}))
    assert list(b.galaxies.galaxy_id) == ["a", "b"]
    assert b.read(schema.FLUX).shape == (1, 5)
    assert b.read(schema.SPAXEL_BINS)["a"].shape == (2, 2)
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
            w.write(schema.GALAXIES, pd.DataFrame({"galaxy_id": ["z"]}))
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
    with pytest.raises(BundleError, match="without desom2/grid.json"):
        write_minimal(tmp_path / "demo", sections=["desom2"])
    with pytest.raises(KeyError, match="unknown bundle section 'nonsense'"):
        write_minimal(tmp_path / "demo", sections=["nonsense"])


def test_writer_takes_declared_dtypes_and_refuses_other_kinds(tmp_path):
    with pytest.raises(RuntimeError, match="not kept"):
        with BundleWriter(tmp_path / "b", {}, seed=0) as w:
            w.write(schema.WAVE, np.linspace(3650, 7000, 5, dtype=np.float32))
            assert np.load(w._tmp / schema.WAVE.path).dtype == np.float64  # cast to the declared dtype
            with pytest.raises(BundleError, match="desom1/hits.npy: got float64 values, declared int64"):
                w.write(schema.DESOM1_HITS, np.ones(4))
            with pytest.raises(BundleError, match=r"spectra/flux.npy: got shape \(5,\)"):
                w.write(schema.FLUX, np.ones(5, np.float32))
            raise RuntimeError("not kept")
    assert list(tmp_path.iterdir()) == []


def test_replacing_a_bundle_never_leaves_the_folder_missing_and_killed_writers_are_cleaned_up(tmp_path):
    path = write_minimal(tmp_path / "demo")
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    (tmp_path / f".demo.tmp-{dead}-abc").mkdir()  # a writer killed while writing
    write_minimal(path, {"seed": 7})  # replaces the bundle in one exchange
    assert Bundle(path).manifest["config"] == {"seed": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o700), "a data product must be readable by others"
    path.rename(tmp_path / f".demo.old-{dead}")  # a writer killed between the two renames of the fallback swap
    with pytest.raises(BundleError, match="without galaxies.parquet"):  # it writes nothing: refused at exit
        with BundleWriter(path, {"seed": 8}, seed=8):
            assert Bundle(path).manifest["config"] == {"seed": 7}, "the previous bundle is back before any work"
    assert Bundle(path).manifest["config"] == {"seed": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_bundle_without_optional_files_opens_and_validates(synthetic_bundle, tmp_path):
    """Files a schema change adds as optional (the embeddings' projectors) are absent from bundles built before it:
    such a bundle still opens in the reader and the dashboard, and validates."""
    from explorer.data import ExplorerData

    older = tmp_path / "older"
    shutil.copytree(synthetic_bundle, older)
    removed = list(older.glob("embeddings/*/projector.pkl"))
    assert removed and not schema.EMBEDDING_PROJECTOR.required
    for path in removed:
        path.unlink()
    assert Bundle(older).galaxies is not None and ExplorerData(older).n_galaxies > 0
    assert schema.validate(older) == []
