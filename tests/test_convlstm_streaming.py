"""The anomaly model (seed 003) on emission-line cubes streamed from disk (issue 11, survey scale).

A survey's cubes are written galaxy by galaxy to row files and the ConvLSTM reads them a batch at a time: it must
learn and score exactly as from the same cubes in memory, and an epoch must see at most
``max_galaxies_per_epoch`` galaxies.
"""
import numpy as np

from precompute.config import DEFAULT_CONFIG
from precompute.cube_maps import (
    EMISSION_LINES,
    emission_line_cubes,
    write_emission_line_cubes,
)
from precompute.models.convlstm import EmissionLineAnomaly
from precompute.prepare import rest_frame_grid
from precompute.rows import NpyRows

WAVE = rest_frame_grid(DEFAULT_CONFIG["prepare"])
SMALL = {"latent_dim": 2, "hidden": 4, "epochs": 3, "batch_size": 4, "seed": 7, "progress": False}


def _cubes(n: int = 14, shape=(4, 3, 8, 8), seed: int = 0):
    """Noise cubes with lines of random strength, a third of the voxels without data."""
    rng = np.random.default_rng(seed)
    good = rng.random((n, *shape)) > 0.3
    sigma = np.where(good, rng.uniform(0.5, 2.0, (n, *shape)), 0.0).astype(np.float32)
    strength = rng.uniform(0.0, 5.0, (n, 1, 1, 1, 1))
    cubes = np.where(good, (rng.normal(size=(n, *shape)) + strength) * sigma, 0.0).astype(np.float32)
    return cubes, sigma, good


def _on_disk(folder, arrays) -> list[NpyRows]:
    for name, array in zip(("cubes", "sigma", "good"), arrays):
        np.save(folder / f"{name}.npy", array)
    return [NpyRows(folder / f"{name}.npy") for name in ("cubes", "sigma", "good")]


def test_line_cubes_written_galaxy_by_galaxy_are_the_cubes_in_memory(tmp_path):
    rng = np.random.default_rng(1)

    class Galaxy:  # the fields the line cubes read: spectra with a few bad pixels, one IFU larger than the crop
        def __init__(self, size):
            self.galaxy_id = f"size-{size}"
            self.spaxel_flux = rng.normal(1.0, 0.1, (size, size, WAVE.size)).astype(np.float32)
            self.spaxel_ivar = (rng.random((size, size, WAVE.size)) > 0.05).astype(np.float32) * 100

    galaxies = [Galaxy(3), Galaxy(6), Galaxy(2)]
    in_memory = emission_line_cubes(galaxies, WAVE, n_bins=4, crop=4)
    on_disk = write_emission_line_cubes(galaxies, WAVE, tmp_path, n_bins=4, crop=4)
    for array, rows in zip(in_memory, on_disk):
        assert rows.shape == array.shape == (3, len(EMISSION_LINES), 4, 4, 4) and rows.dtype == array.dtype
        np.testing.assert_array_equal(rows[:], array)
    assert in_memory[2].any() and not in_memory[2].all()


def test_training_and_scores_from_row_files_equal_those_from_arrays(tmp_path):
    cubes, sigma, good = _cubes()
    training = np.arange(len(cubes)) % 5 != 0  # some galaxies left out of training, scored all the same
    in_memory = EmissionLineAnomaly(**SMALL).fit(cubes, sigma, good, galaxies=training)
    rows = _on_disk(tmp_path, (cubes, sigma, good))
    streamed = EmissionLineAnomaly(**SMALL).fit(*rows, galaxies=np.flatnonzero(training))
    assert streamed.history_ == in_memory.history_ and len(streamed.history_) == SMALL["epochs"]
    expected, got = in_memory.residuals(cubes, sigma, good, top_lines=2), streamed.residuals(*rows, top_lines=2)
    assert set(got) == {"score", "line", "spaxel", "top_lines", "top_line_maps"}
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert got["score"].shape == (len(cubes),) and (got["score"] > 0).all()
    np.testing.assert_array_equal(streamed.transform(*rows), in_memory.transform(cubes, sigma, good))


class _Reads:
    """Cubes that record which galaxies each read asks for (the training reads a batch's cubes once)."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.reads = array, array.shape, []

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows):
        self.reads.append(np.arange(len(self.array))[rows])
        return self.array[rows]


def test_an_epoch_sees_at_most_max_galaxies_per_epoch():
    cubes, sigma, good = _cubes(n=20)
    training = np.arange(20) >= 4
    recorded = _Reads(cubes)
    capped = EmissionLineAnomaly(**SMALL, max_galaxies_per_epoch=6).fit(recorded, sigma, good, galaxies=training)
    assert len(capped.history_) == SMALL["epochs"]
    # batches of 4 and 2 galaxies: each epoch 6 distinct training galaxies, a new random draw each epoch
    assert [len(r) for r in recorded.reads] == [4, 2] * SMALL["epochs"]
    epochs = [np.concatenate(recorded.reads[i:i + 2]) for i in range(0, len(recorded.reads), 2)]
    assert all(len(np.unique(seen)) == 6 and training[seen].all() for seen in epochs)
    assert len(np.unique(np.concatenate(epochs))) > 6
    # a bound at or above the training set's size changes nothing: every epoch sees all of it, as without one
    exact = EmissionLineAnomaly(**SMALL, max_galaxies_per_epoch=int(training.sum())).fit(cubes, sigma, good, training)
    unbounded = EmissionLineAnomaly(**SMALL, max_galaxies_per_epoch=10**6).fit(cubes, sigma, good, training)
    assert exact.history_ == unbounded.history_
