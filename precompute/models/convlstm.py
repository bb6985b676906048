"""Emission-line anomaly autoencoder (seed 003): a convolutional LSTM autoencoder on emission-line cubes.

An emission-line cube holds, for every spaxel of a centred crop, a few velocity bins around each of the optical
emission lines (precompute.cube_maps). The velocity bins are the sequence: at each step the ConvLSTM sees an
image with one channel per line, so it learns line ratios (channels), their spatial structure (convolutions)
and line profiles / velocity fields (the recurrence). Galaxies the autoencoder reconstructs badly are unusual;
the per-line and per-spaxel residuals say which line and where.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


class ConvLSTMCell(nn.Module):
    """LSTM cell whose gates are 2-D convolutions (Shi et al. 2015): state ``(h, c)`` are feature maps."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                               padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvLSTM2D(nn.Module):
    """Run a ConvLSTMCell over the steps of ``[B, T, C, H, W]``: all hidden maps ``[B, T, hidden, H, W]`` and the
    final state (as Keras ConvLSTM2D with ``return_sequences=True`` and ``return_state=True``)."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, _, h, w = x.shape
        zeros = x.new_zeros(b, self.cell.hidden_channels, h, w)
        state, outputs = (zeros, zeros), []
        for step in range(t):
            state = self.cell(x[:, step], state)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1), state


class LineCubeAutoencoder(nn.Module):
    """Encoder: per-step strided convolutions (crop/4), ConvLSTM2D, last hidden map → dense latent vector.
    Decoder: dense → feature map repeated over the steps → ConvLSTM2D → per-step transposed convolutions.

    Input and output ``[B, n_lines, n_bins, S, S]`` (S divisible by 4).
    """

    def __init__(self, n_lines: int, n_bins: int, size: int, hidden: int = 16, latent_dim: int = 16):
        super().__init__()
        if size % 4:
            raise ValueError(f"crop size must be divisible by 4, got {size}")
        self.config = {"n_lines": n_lines, "n_bins": n_bins, "size": size, "hidden": hidden, "latent_dim": latent_dim}
        self.code_shape = (hidden, size // 4, size // 4)
        self.frame_encoder = nn.Sequential(
            nn.Conv2d(n_lines, hidden // 2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden // 2, hidden, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.encoder_lstm = ConvLSTM2D(hidden, hidden)
        self.to_latent = nn.Linear(int(np.prod(self.code_shape)), latent_dim)
        self.from_latent = nn.Linear(latent_dim, int(np.prod(self.code_shape)))
        self.decoder_lstm = ConvLSTM2D(hidden, hidden)
        self.frame_decoder = nn.Sequential(
            nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(hidden // 2, n_lines, 4, stride=2, padding=1),
        )

    def _per_step(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        y = module(x.reshape(b * t, *x.shape[2:]))
        return y.reshape(b, t, *y.shape[1:])

    def encode(self, cubes: torch.Tensor) -> torch.Tensor:
        frames = cubes.transpose(1, 2)  # [B, n_bins (steps), n_lines, S, S]
        _, (h, _) = self.encoder_lstm(self._per_step(self.frame_encoder, frames))
        return self.to_latent(h.flatten(1))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        code = F.relu(self.from_latent(latent)).view(-1, *self.code_shape)
        steps = code.unsqueeze(1).expand(-1, self.config["n_bins"], *self.code_shape)
        hidden, _ = self.decoder_lstm(steps)
        return self._per_step(self.frame_decoder, hidden).transpose(1, 2)

    def forward(self, cubes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encode(cubes)
        return self.decode(latent), latent


class EmissionLineAnomaly:
    """Fit the ConvLSTM autoencoder on emission-line cubes; score galaxies by their reconstruction error.

    Cubes ``[N, n_lines, n_bins, S, S]`` are continuum-subtracted line fluxes (units of the normalised
    continuum); ``good`` marks the voxels with data. Fluxes enter through asinh(x / ``scale_``) so that strong
    and faint lines both count; errors are measured in that space over good voxels only.
    Fitted state: ``network_``, ``scale_``, ``history_`` (loss per epoch).
    """

    def __init__(self, latent_dim: int = 16, hidden: int = 16, epochs: int = 20, batch_size: int = 16,
                 learning_rate: float = 2e-3, seed: int = 0, device: str = "cpu", progress: bool = True):
        self.latent_dim, self.hidden, self.epochs, self.batch_size = latent_dim, hidden, epochs, batch_size
        self.learning_rate, self.seed, self.device, self.progress = learning_rate, seed, device, progress

    def _scaled(self, cubes: np.ndarray, good: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.where(good, np.arcsinh(cubes / self.scale_), 0.0), dtype=torch.float32)

    def fit(self, cubes: np.ndarray, good: np.ndarray) -> "EmissionLineAnomaly":
        _check_cubes(cubes, good)
        strong = np.abs(cubes[good])
        # Scale: a typical line peak, so asinh is linear for faint lines and logarithmic for strong ones
        self.scale_ = float(np.percentile(strong, 95)) if strong.size else 1.0
        self.scale_ = self.scale_ if self.scale_ > 0 else 1.0
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        n, n_lines, n_bins, size, _ = cubes.shape
        network = LineCubeAutoencoder(n_lines, n_bins, size, self.hidden, self.latent_dim).to(self.device)
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        x, mask = self._scaled(cubes, good), torch.as_tensor(good)
        self.history_ = []
        for _ in tqdm(range(self.epochs), desc="anomaly autoencoder", disable=not self.progress, leave=False):
            network.train()
            order, losses = torch.randperm(n, generator=generator), []
            for start in range(0, n, self.batch_size):
                index = order[start:start + self.batch_size]
                batch, m = x[index].to(self.device), mask[index].to(self.device)
                reconstruction, _ = network(batch)
                loss = ((reconstruction - batch) ** 2 * m).sum() / m.sum().clamp_min(1)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            self.history_.append(float(np.mean(losses)))
        self.network_ = network.eval()
        return self

    def _run(self, cubes: np.ndarray, good: np.ndarray, batch_size: int = 64):
        _check_cubes(cubes, good)
        x = self._scaled(cubes, good)
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size].to(self.device)
                reconstruction, latent = self.network_(batch)
                yield batch.cpu(), reconstruction.cpu(), latent.cpu()

    def transform(self, cubes: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Latent vector of each galaxy, float32 ``[N, latent_dim]``."""
        return np.concatenate([latent.numpy() for _, _, latent in self._run(cubes, good)]).astype(np.float32)

    def residuals(self, cubes: np.ndarray, good: np.ndarray) -> dict[str, np.ndarray]:
        """Mean absolute reconstruction error over good voxels: ``score`` ``[N]`` (the anomaly score),
        ``line`` ``[N, n_lines]`` (per line) and ``spaxel`` ``[N, S, S]`` (per spaxel, NaN without data)."""
        errors = [(r - b).abs().numpy() for b, r, _ in self._run(cubes, good)]
        error = np.where(good, np.concatenate(errors), 0.0)
        count = good.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "score": (error.sum(axis=(1, 2, 3, 4)) / count.sum(axis=(1, 2, 3, 4))).astype(np.float32),
                "line": (error.sum(axis=(2, 3, 4)) / count.sum(axis=(2, 3, 4))).astype(np.float32),
                "spaxel": (error.sum(axis=(1, 2)) / count.sum(axis=(1, 2))).astype(np.float32),
            }

    def state(self) -> dict:
        return {"network": self.network_.config, "state_dict": self.network_.state_dict(), "scale": self.scale_,
                "history": self.history_}


def _check_cubes(cubes: np.ndarray, good: np.ndarray) -> None:
    if cubes.ndim != 5 or cubes.shape[-1] != cubes.shape[-2]:
        raise ValueError(f"emission-line cubes must be [N, n_lines, n_bins, S, S], got shape {cubes.shape}")
    if good.shape != cubes.shape:
        raise ValueError(f"good-voxel mask shape {good.shape} differs from cube shape {cubes.shape}")
    if not np.isfinite(cubes[good]).all():
        raise ValueError("emission-line cubes contain NaN or inf in good voxels")
