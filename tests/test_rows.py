"""precompute.rows: .npy rows read and written with file I/O give what numpy gives."""
import pickle

import numpy as np
import pytest

from precompute.rows import NpyRows, NpyRowWriter


@pytest.fixture
def spectra(tmp_path):
    values = np.random.default_rng(0).normal(size=(1000, 7, 3)).astype(np.float32)
    with NpyRowWriter(tmp_path / "spectra.npy", values.shape, np.float32) as out:
        out[500:] = values[500:]  # any order of blocks, and single rows
        out[:500] = values[:500]
        out[3] = values[3]
    return tmp_path / "spectra.npy", values


def test_written_rows_are_a_numpy_file(spectra):
    path, values = spectra
    assert np.array_equal(np.load(path), values)


def test_rows_read_like_numpy_indexing(spectra):
    path, values = spectra
    rows = NpyRows(path)
    assert rows.shape == values.shape and rows.dtype == values.dtype and len(rows) == 1000
    index = np.array([5, 3, 4, 999, 0, 1, 2, -1, 4])  # unordered, repeated, negative
    mask = values[:, 0, 0] > 0.5
    for key in (7, -2, slice(10, 20), slice(None, None, 7), slice(990, 2000), index, mask, []):
        assert np.array_equal(rows[key], values[key]), key
    assert np.array_equal(np.concatenate([chunk for _, chunk in rows.chunks(300)]), values)


def test_rows_of_a_file_written_by_numpy_and_sent_to_another_process(tmp_path, spectra):
    _, values = spectra
    np.save(tmp_path / "saved.npy", values)
    rows = pickle.loads(pickle.dumps(NpyRows(tmp_path / "saved.npy")))  # how a Dask task would receive it
    assert np.array_equal(rows[[9, 2]], values[[9, 2]])


def test_bad_indices_and_truncated_files_are_named(tmp_path, spectra):
    path, _ = spectra
    rows = NpyRows(path)
    with pytest.raises(IndexError, match="out of range"):
        rows[1000]
    with pytest.raises(IndexError, match="out of range"):
        rows[np.array([0, 1000])]
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated.npy: file ends before row 1000"):
        NpyRows(truncated)[990:]
