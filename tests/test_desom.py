"""DESOM building blocks on small synthetic data: autoencoders, the joint training loop, fingerprints."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from precompute.device import resolve_device
from precompute.fingerprints import fingerprint_counts, fingerprint_string, node_scale, normalise_fingerprints
from precompute.models.autoencoder import fingerprint_autoencoder, spectrum_autoencoder
from precompute.models.desom import DESOM, masked_mse

N_WAVE = 203  # deliberately not a multiple of 16: the autoencoder pads and crops


def toy_spectra(n: int, seed: int = 0, noise: float = 0.02):
    """Spectra along a 2-parameter family (old/young mix, emission strength): (flux, age, line)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, N_WAVE)
    age, line = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    old = 0.6 / (1 + np.exp(-(x - 0.3) / 0.02)) + 0.4 * (0.5 + x) ** 0.5
    young = (0.5 + x) ** -1.0
    flux = age[:, None] * old + (1 - age[:, None]) * young
    flux += 2.0 * line[:, None] * np.exp(-0.5 * ((x - 0.7) / 0.01) ** 2)
    flux += noise * rng.standard_normal(flux.shape)
    return flux.astype(np.float32), age, line


def small_desom(**overrides) -> DESOM:
    params = dict(rows=5, cols=5, latent_dim=4, pretrain_epochs=5, n_epochs=6, batch_size=32, learning_rate=5e-3,
                  seed=3, device="cpu", verbose=False)
    params.update(overrides)
    autoencoder = spectrum_autoencoder(N_WAVE, params.pop("latent_dim"), channels=(4, 8, 8, 8))
    return DESOM(autoencoder, **params)


@pytest.fixture(scope="module")
def fitted():
    flux, age, line = toy_spectra(600)
    mask = np.ones_like(flux)
    mask[:, 40:50] = 0  # a bad stretch: must not enter the loss
    flux[:, 40:50] = 1e3
    return small_desom().fit(flux, mask), flux, age, line


def test_autoencoders_keep_the_input_shape():
    torch.manual_seed(0)
    spectra = spectrum_autoencoder(N_WAVE, latent_dim=7, channels=(2, 2, 2, 2))
    x_hat, z = spectra(torch.randn(5, N_WAVE))
    assert x_hat.shape == (5, N_WAVE) and z.shape == (5, 7)
    images = fingerprint_autoencoder(15, 15, latent_dim=6)
    x_hat, z = images(torch.rand(3, 15, 15))
    assert x_hat.shape == (3, 15, 15) and z.shape == (3, 6)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        spectra.encode(torch.zeros(2, N_WAVE + 1))
    with pytest.raises(ValueError, match="odd"):
        spectrum_autoencoder(N_WAVE, kernel_size=4)


def test_masked_mse_ignores_bad_pixels():
    x, x_hat = torch.zeros(2, 4), torch.tensor([[0.0, 1.0, 100.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert masked_mse(x, x_hat, mask).item() == pytest.approx(2.0 / 7.0)


def test_desom_learns_an_ordered_map(fitted):
    model, flux, age, line = fitted
    test, test_age, test_line = toy_spectra(300, seed=9)
    # Reconstruction far below the spread of the spectra, despite the huge values in the masked stretch.
    mse = ((model.reconstruct(test) - test) ** 2)[:, np.r_[0:40, 50:N_WAVE]].mean()
    assert mse < 0.1 * test.var(axis=0).sum() / N_WAVE
    assert model.topographic_error(test) <= 0.1
    nodes = model.transform(test)
    assert np.unique(nodes).size >= 10, "the map collapsed onto a few nodes"
    # Similar spectra land on nearby nodes: node position predicts both physical parameters.
    grid = np.stack([nodes // model.cols, nodes % model.cols], 1).astype(float)
    design = np.c_[grid, grid**2, grid[:, :1] * grid[:, 1:], np.ones(len(grid))]
    for truth in (test_age, test_line):
        fit = np.linalg.lstsq(design, truth, rcond=None)[0]
        r2 = 1 - ((design @ fit - truth) ** 2).mean() / truth.var()
        assert r2 > 0.7
    assert model.hits(test).sum() == len(test)
    assert model.umatrix().shape == (5, 5)
    assert model.decoded_prototypes().shape == (25, N_WAVE)
    assert [h["phase"] for h in model.history_][:2] == ["pretrain", "pretrain"]


def test_fit_is_reproducible_and_saves(fitted, tmp_path):
    model, flux, _, _ = fitted
    loaded = DESOM.load(io.BytesIO(model.to_bytes()))
    np.testing.assert_array_equal(loaded.transform(flux), model.transform(flux))
    np.testing.assert_allclose(loaded.encode(flux[:5]), model.encode(flux[:5]), rtol=1e-5, atol=1e-5)
    # Same seed, same map; the best epoch is also written as a checkpoint that loads.
    quick = dict(pretrain_epochs=1, n_epochs=2)
    first = small_desom(**quick).fit(flux[:200])
    second = small_desom(**quick, checkpoint=tmp_path / "best.pt").fit(flux[:200])
    np.testing.assert_array_equal(first.transform(flux), second.transform(flux))
    np.testing.assert_allclose(first.prototypes_, second.prototypes_)
    np.testing.assert_array_equal(DESOM.load(tmp_path / "best.pt").transform(flux), second.transform(flux))


def scripted_losses(monkeypatch, losses):
    """Make every joint epoch report the next of `losses` as its validation loss."""
    values = iter(losses)

    def record(self, phase, epoch, sigma, *args):
        self.history_.append({"phase": phase, "epoch": epoch, "sigma": sigma, "val_loss": next(values)})
        return self.history_[-1]

    monkeypatch.setattr(DESOM, "_record", record)


def test_early_stopping_keeps_the_best_epoch(monkeypatch):
    flux, _, _ = toy_spectra(100)
    scripted_losses(monkeypatch, [5.0, 4.0, 4.5, 4.2, 3.0, 2.0])
    model = small_desom(pretrain_epochs=0, n_epochs=6, patience=2).fit(flux)
    assert model.best_epoch_ == 1 and model.n_epochs_ == 4
    scripted_losses(monkeypatch, [float("nan")] * 3)
    with pytest.raises(RuntimeError, match="diverged"):
        small_desom(pretrain_epochs=0, n_epochs=3, patience=5).fit(flux)


def test_desom_rejects_bad_input():
    model = small_desom()
    with pytest.raises(ValueError, match="shape"):
        model.fit(np.zeros((10, N_WAVE + 3)))
    with pytest.raises(ValueError, match="mask shape"):
        model.fit(np.zeros((10, N_WAVE)), np.ones((10, 5)))
    bad = np.zeros((10, N_WAVE), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.transform(np.zeros((2, N_WAVE)))
    with pytest.raises(ValueError, match="not a DESOM model"):
        DESOM.load(io.BytesIO(b"not a model"))


def test_device_auto_is_cpu_without_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected


def test_fingerprints_count_and_normalise_as_seed_001():
    galaxy = np.array([0, 0, 0, 1, 1, 2])
    nodes = np.array([3, 3, 1, 0, 3, 2])
    counts = fingerprint_counts(galaxy, nodes, n_galaxies=4, n_nodes=4)
    np.testing.assert_array_equal(counts, [[0, 1, 0, 2], [1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]])
    scale = node_scale(counts, 100.0)
    np.testing.assert_array_equal(scale, [1, 1, 1, 2])
    fingerprints = normalise_fingerprints(counts, scale, 2, 2)
    assert fingerprints.shape == (4, 2, 2)
    np.testing.assert_allclose(fingerprints[0].ravel(), [0, 1, 0, 1])  # node 3 scaled by its level 2
    np.testing.assert_allclose(fingerprints[1].ravel(), [1, 0, 0, 0.5])
    np.testing.assert_array_equal(fingerprints[3], 0)  # a galaxy with no bins stays empty
    # Clipping: a galaxy far above a node's level saturates at 1 instead of squashing the others.
    big = np.vstack([np.tile([1, 2], (999, 1)), [[1000, 2]]])
    scale = node_scale(big, 99.9)
    assert scale[0] < 3 and scale[1] == 2
    clipped = normalise_fingerprints(big, scale, 1, 2)
    np.testing.assert_allclose(clipped[:-1, 0, 0], 1 / scale[0], rtol=1e-6)  # not 1/1000
    np.testing.assert_allclose(clipped[-1].ravel(), [1, 1])
    assert fingerprint_string(fingerprints[1]) == "0:1 3:0.5"
    with pytest.raises(ValueError, match="nodes must lie"):
        fingerprint_counts(galaxy, nodes + 4, 4, 4)


def test_a_fit_streamed_from_disk_is_the_fit_in_memory(tmp_path):
    """Rows of .npy files read a mini-batch at a time (how a survey larger than memory trains) give the model an
    in-memory fit of the same rows gives, and a sample bounds what the start of a large fit holds."""
    from precompute.models import desom as desom_module
    from precompute.models.desom import StreamedRows
    from precompute.rows import NpyRows

    flux, _, _ = toy_spectra(300, seed=4)
    ivar = np.ones_like(flux)
    ivar[::7, 40:50] = 0  # some bad stretches, which the mask must carry from the ivar file
    np.save(tmp_path / "flux.npy", flux)
    np.save(tmp_path / "ivar.npy", ivar)
    rows = np.arange(20, 260)  # a subset, in file order, like a build's training spectra
    quick = dict(pretrain_epochs=1, n_epochs=2)
    in_memory = small_desom(**quick).fit(flux[rows], ivar[rows] > 0)
    on_disk = StreamedRows(NpyRows(tmp_path / "flux.npy"), NpyRows(tmp_path / "ivar.npy"), rows)
    streamed = small_desom(**quick).fit(on_disk)
    np.testing.assert_array_equal(streamed.prototypes_, in_memory.prototypes_)
    np.testing.assert_array_equal(streamed.transform(flux), in_memory.transform(flux))

    read = []
    original = StreamedRows.read

    def recorded(self, positions):
        read.append(len(positions))
        return original(self, positions)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(desom_module, "FIT_SAMPLE", 50)
        patched.setattr(StreamedRows, "read", recorded)
        sampled = small_desom(**quick).fit(on_disk)
    # the starting statistics' sample, then mini-batches (training 32, loss evaluation 4 x 32): never every row
    assert read[0] == 50 and max(read[1:]) <= 4 * 32
    assert np.isfinite(sampled.prototypes_).all() and len(np.unique(sampled.transform(flux))) > 5
