"""The contrastive embedding (seed 000) trained from cube maps on disk (precompute.rows) rather than in memory:
the same galaxies and seed give the same network, and an epoch reads at most ``max_galaxies_per_epoch`` of them."""
import numpy as np

from precompute.models.contrastive import ContrastiveEmbedding
from precompute.rows import NpyRows, NpyRowWriter

# a small network on small maps: the batches and draws are those of the build, the arithmetic is quick
SMALL = {"n_features": 32, "channels": (8, 16), "projection_dim": 16, "patience": 10, "progress": False, "seed": 3}


def mock_maps(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cube maps [n, 4, 16, 16] (3 PCA channels, luminosity last) of a square galaxy, and their noise."""
    rng = np.random.default_rng(seed)
    maps = np.zeros((n, 4, 16, 16), np.float32)
    maps[:, :3, 3:13, 3:13] = rng.normal(0, 1, (n, 3, 10, 10))
    maps[:, 3, 3:13, 3:13] = rng.uniform(0.1, 10, (n, 10, 10))
    return maps, np.where(maps[:, 3] > 0, 0.05, 0.0).astype(np.float32)


def written(array: np.ndarray, path) -> NpyRows:
    with NpyRowWriter(path, array.shape, array.dtype) as rows:
        for i, row in enumerate(array):  # one galaxy at a time, as precompute.cube_maps writes them
            rows[i] = row
    return NpyRows(path)


class RecordedRows:
    """An array's rows that records the rows of every read by index (the batches of training)."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.reads = array, array.shape, []

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key):
        if not isinstance(key, slice):
            self.reads.append(np.asarray(key))
        return self.array[key]


def test_maps_on_disk_give_the_embedding_of_maps_in_memory(tmp_path):
    maps, noise = mock_maps(30)
    train = np.arange(30) % 6 != 0
    # fewer galaxies an epoch than there are, so the random draw of each epoch is part of what must agree
    settings = {**SMALL, "epochs": 2, "passes_per_epoch": 2, "batch_size": 8, "max_galaxies_per_epoch": 16}
    in_memory = ContrastiveEmbedding(**settings).fit(maps, noise, galaxies=train, validation=~train)
    rows = written(maps, tmp_path / "maps.npy"), written(noise, tmp_path / "noise.npy")
    on_disk = ContrastiveEmbedding(**settings).fit(*rows, galaxies=np.flatnonzero(train), validation=~train)
    assert on_disk.history_ == in_memory.history_ and "val_loss" in on_disk.history_[0]
    vectors = on_disk.transform(rows[0])
    assert vectors.shape == (30, 32) and np.array_equal(vectors, in_memory.transform(maps))
    held_out = np.flatnonzero(~train)
    assert np.array_equal(on_disk.augmented_vectors(*rows, held_out, seed=9),
                          in_memory.augmented_vectors(maps, noise, held_out, seed=9))


def test_an_epoch_shows_at_most_max_galaxies_per_epoch_training_galaxies():
    maps, noise = mock_maps(40)
    train = np.arange(40) >= 4
    recorded = RecordedRows(noise)  # noise is read for training batches only
    model = ContrastiveEmbedding(**SMALL, epochs=3, passes_per_epoch=2, batch_size=8, max_galaxies_per_epoch=8)
    model.fit(maps, recorded, galaxies=train)
    assert len(model.history_) == 3 and len(recorded.reads) == 3 * 2  # one batch of 8 a pass
    epochs = [recorded.reads[2 * e:2 * e + 2] for e in range(3)]
    for first_pass, second_pass in epochs:
        # the same 8 training galaxies in both passes of an epoch, each once a pass, in new orders
        assert len(set(first_pass)) == 8 and set(first_pass) == set(second_pass) and train[first_pass].all()
    assert len({int(i) for reads in epochs for i in reads[0]}) > 8  # a new draw each epoch


def test_a_survey_within_the_bound_shows_every_training_galaxy_every_pass():
    maps, noise = mock_maps(20)
    recorded = RecordedRows(noise)
    ContrastiveEmbedding(**SMALL, epochs=2, passes_per_epoch=3, batch_size=8, max_galaxies_per_epoch=20).fit(
        maps, recorded)
    assert len(recorded.reads) == 2 * 3 * 3  # batches of 8, 8 and 4 in each of 3 passes, 2 epochs
    for start in range(0, len(recorded.reads), 3):
        assert sorted(np.concatenate(recorded.reads[start:start + 3])) == list(range(20))
