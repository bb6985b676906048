"""Convolutional variational autoencoder on single-band galaxy images (seed 004).

A few latent features (2 for a direct map, 16 for more detail) summarise each galaxy's appearance; their
correlations with physical properties, and images decoded while one feature is varied (traversals), say what
each feature means.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from precompute.models.training import train_epochs

BANDS = ("g", "r", "i")


def log_scaled(images: np.ndarray, band: str = "r", stretch: tuple[float, float] | None = None):
    """One band of gri images ``[N, 3, S, S]`` (nanomaggies) as log-scaled images in [0, 1]: ``([N, S, S], stretch)``.

    log10 of the flux above a floor of the sky noise (median absolute deviation of the image border); the
    ``stretch`` (low, high) in log10 flux maps to 0 and 1, from the 1st and 99.9th percentiles unless given, so
    new galaxies are scaled as the training ones.
    """
    if images.ndim != 4 or images.shape[1] != len(BANDS):
        raise ValueError(f"images must be [N, 3 (g, r, i), S, S], got shape {images.shape}")
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    x = images[:, BANDS.index(band)].astype(np.float64)
    border = np.concatenate([x[:, :2].reshape(len(x), -1), x[:, -2:].reshape(len(x), -1)], axis=1)
    sky = 1.4826 * np.median(np.abs(border - np.median(border, axis=1, keepdims=True)), axis=1)
    floor = np.maximum(sky, 1e-6 * np.abs(x).max(axis=(1, 2)).clip(1e-12))[:, None, None]
    logged = np.log10(np.maximum(x, 0.0) + floor)
    if stretch is None:
        stretch = (float(np.percentile(logged, 1)), float(np.percentile(logged, 99.9)))
    low, high = stretch
    return np.clip((logged - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32), stretch


class ConvVAE(nn.Module):
    """Encoder: strided 4×4 convolutions (÷2 each) → dense → mean and log-variance of ``latent_dim`` Gaussians.
    Decoder mirrors it with transposed convolutions and a sigmoid (pixels in [0, 1])."""

    def __init__(self, size: int = 64, latent_dim: int = 16, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        factor = 2 ** len(channels)
        if size % factor:
            raise ValueError(f"image size {size} must be divisible by {factor}")
        self.config = {"size": size, "latent_dim": latent_dim, "channels": tuple(channels)}
        self.code_shape = (channels[-1], size // factor, size // factor)
        layers, c_in = [], 1
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.1)]
            c_in = c_out
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        flat = int(np.prod(self.code_shape))
        self.mean = nn.Linear(flat, latent_dim)
        self.log_var = nn.Linear(flat, latent_dim)
        layers = [nn.Linear(latent_dim, flat), nn.LeakyReLU(0.1), nn.Unflatten(1, self.code_shape)]
        widths = list(reversed(channels))[1:] + [1]
        for i, c_out in enumerate(widths):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            layers.append(nn.LeakyReLU(0.1) if i < len(widths) - 1 else nn.Sigmoid())
            c_in = c_out
        self.decoder = nn.Sequential(*layers)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(images.unsqueeze(1))
        return self.mean(h), self.log_var(h)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent).squeeze(1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_var = self.encode(images)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)  # reparameterisation trick
        return self.decode(latent), mean, log_var


def vae_loss(reconstruction, images, mean, log_var, beta: float = 1.0) -> torch.Tensor:
    """Per-image binary cross entropy (pixels in [0, 1]) plus beta × KL divergence to the unit Gaussian."""
    bce = F.binary_cross_entropy(reconstruction, images, reduction="sum")
    kl = -0.5 * torch.sum(1 + log_var - mean**2 - log_var.exp())
    return (bce + beta * kl) / len(images)


class ImageVAE:
    """Fit a ConvVAE on gri images ``[N, 3, S, S]`` (one band, log-scaled); embed galaxies as latent means.

    Fitted state: ``network_``, ``stretch_`` (log-flux scaling of the training images), ``history_``.
    """

    def __init__(self, latent_dim: int = 16, band: str = "r", channels: tuple[int, ...] = (16, 32, 64),
                 beta: float = 1.0, epochs: int = 30, batch_size: int = 32, learning_rate: float = 2e-3,
                 seed: int = 0, device: str = "cpu", progress: bool = True):
        self.latent_dim, self.band, self.channels, self.beta = latent_dim, band, tuple(channels), beta
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.seed, self.device, self.progress = seed, device, progress

    def fit(self, images: np.ndarray) -> "ImageVAE":
        x, self.stretch_ = log_scaled(images, self.band)
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        network = ConvVAE(x.shape[-1], self.latent_dim, self.channels).to(self.device)
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        x = torch.as_tensor(x)

        def batch_loss(index):
            batch = x[index].to(self.device)
            reconstruction, mean, log_var = network(batch)
            return vae_loss(reconstruction, batch, mean, log_var, beta=self.beta)

        self.history_ = train_epochs(network, optimiser, len(x), self.batch_size, self.epochs, batch_loss, generator,
                                     "image VAE", self.progress)
        self.network_ = network.eval()
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Latent means, float32 ``[N, latent_dim]``."""
        x, _ = log_scaled(images, self.band, self.stretch_)
        with torch.no_grad():
            mean, _ = self.network_.encode(torch.as_tensor(x).to(self.device))
        return mean.cpu().numpy().astype(np.float32)

    def traversals(self, latent: np.ndarray, n_steps: int = 7) -> np.ndarray:
        """Images decoded while each feature sweeps its 2nd–98th percentile range over ``latent`` (others at
        their median): float32 ``[latent_dim, n_steps, S, S]`` (seed 004's way to read what a feature means)."""
        low, mid, high = np.percentile(latent, [2, 50, 98], axis=0)
        codes = np.repeat(mid[None, None], self.latent_dim, axis=0).repeat(n_steps, axis=1)
        for j in range(self.latent_dim):
            codes[j, :, j] = np.linspace(low[j], high[j], n_steps)
        with torch.no_grad():
            images = self.network_.decode(torch.as_tensor(codes.reshape(-1, self.latent_dim), dtype=torch.float32)
                                          .to(self.device))
        return images.cpu().numpy().reshape(self.latent_dim, n_steps, *images.shape[-2:]).astype(np.float32)

    def state(self) -> dict:
        return {"network": self.network_.config, "state_dict": self.network_.state_dict(), "band": self.band,
                "stretch": self.stretch_, "history": self.history_}
