"""The bundle schema is executable: real and synthetic bundles pass `validate`, each kind of defect is named by
file, and docs/bundle-schema.md is the schema module's own rendering."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precompute import schema
from precompute.__main__ import main as precompute_main

DOC = Path(__file__).resolve().parents[1] / "docs" / "bundle-schema.md"


def run_validate(path, capsys) -> tuple[int, str]:
    code = precompute_main(["validate", str(path)])
    return code, capsys.readouterr().out


@pytest.fixture
def defective(real_bundle, tmp_path):
    """A copy of the tiny real build to break."""
    return Path(shutil.copytree(real_bundle, tmp_path / "copy"))


def test_the_documentation_is_generated_from_the_schema():
    assert DOC.read_text() == schema.render_markdown(), (
        "docs/bundle-schema.md differs from precompute/schema.py: run "
        "`python -m precompute.schema > docs/bundle-schema.md`")


def test_every_file_is_declared_once_with_a_known_kind_and_section():
    paths = [spec.path for spec in schema.FILES]
    assert len(paths) == len(set(paths))
    assert all(spec.kind in schema.KINDS and spec.section in schema.SECTIONS for spec in schema.FILES)
    assert all(spec.dtype for spec in schema.FILES if spec.kind == "array")


def test_built_bundles_are_valid(bundle_path, request, capsys):
    code, out = run_validate(bundle_path, capsys)
    assert code == 0, out
    assert out.strip().endswith("valid")
    sections = json.loads((Path(bundle_path) / "manifest.json").read_text())["sections"]
    real = request.node.callspec.params["bundle_path"] == "real"
    expected = {"desom1", "fingerprints", "desom2", "embeddings"} | ({"contrastive", "anomaly", "image_vae"}
                                                                    if real else set())
    assert set(sections) == expected


def test_a_histogram_row_scaled_ten_times_is_named(defective, capsys):
    path = defective / schema.DESOM1_NODE_HISTOGRAMS.path
    with np.load(path) as stored:
        histograms = {k: stored[k] for k in stored.files}
    name = next(k for k in histograms if not k.endswith("__edges"))
    node = int(np.argmax(histograms[name].sum(axis=1)))
    histograms[name][node] *= 10
    np.savez_compressed(path, **histograms)
    code, out = run_validate(defective, capsys)
    assert code == 1
    assert f"desom1/node_histograms.npz: {name} rows must be fractions summing to 1" in out
    assert f"(node {node} sums to 10" in out


def test_a_bin_whose_galaxy_index_is_out_of_range_is_named(defective, capsys):
    path = defective / schema.BINS.path
    bins = pd.read_parquet(path)
    bins.loc[3, "galaxy_index"] = len(pd.read_parquet(defective / schema.GALAXIES.path)) + 5
    bins.to_parquet(path, index=False)
    code, out = run_validate(defective, capsys)
    assert code == 1 and "bins.parquet: galaxy_index: galaxy index outside 0.." in out


def test_a_missing_file_is_named(defective, capsys):
    (defective / schema.DESOM1_UMATRIX.path).unlink()
    code, out = run_validate(defective, capsys)
    assert code == 1 and "desom1/umatrix.npy: missing (declared by section 'desom1')" in out


def test_a_wrong_dtype_is_named(defective, capsys):
    path = defective / schema.DESOM1_HITS.path
    np.save(path, np.load(path).astype(np.float32))
    code, out = run_validate(defective, capsys)
    assert code == 1 and "desom1/hits.npy: dtype float32, expected int64" in out


def test_shapes_are_checked_across_files(defective, capsys):
    umap = schema.EMBEDDING_UMAP.at(embedding="fingerprint")
    np.save(defective / umap, np.zeros((3, 2), np.float32))
    flux = np.load(defective / schema.FLUX.path)
    np.save(defective / schema.FLUX.path, np.where(np.arange(flux.shape[1]) == 0, np.nan, flux).astype(np.float32))
    code, out = run_validate(defective, capsys)
    assert code == 1
    assert f"{umap}: shape (3, 2), expected [n_galaxies, 2] with n_galaxies = " in out
    assert f"spectra/flux.npy: {flux.shape[0]:,} values are NaN or inf" in out


def test_a_folder_that_is_no_bundle_is_named(tmp_path, capsys):
    code, out = run_validate(tmp_path, capsys)
    assert code == 1 and "manifest.json missing" in out
