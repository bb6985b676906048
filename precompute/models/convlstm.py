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

from precompute.models.training import train_epochs


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

    Cubes ``[N, n_lines, n_bins, S, S]`` hold continuum-subtracted line fluxes, ``sigma`` their 1σ and ``good``
    the voxels with data. The network sees each voxel's signal-to-noise through asinh(S/N / ``snr_softening``):
    noise has the same spread in every galaxy, so a shallow observation does not look unusual, and bright lines
    are compressed logarithmically. The anomaly score is the mean absolute reconstruction error over the voxels
    where the data or the reconstruction show a detection (|S/N| ≥ ``detection_snr``): voxels of pure noise say
    nothing about the galaxy and would only dilute an unusual nucleus or companion.
    The three inputs are numpy arrays or rows read on demand (precompute.rows.NpyRows, a survey's cubes on disk):
    every method reads them a batch of galaxies at a time and scales each batch as it goes, so its memory does not
    grow with the survey; an epoch sees at most ``max_galaxies_per_epoch`` galaxies, a fresh random draw each time,
    so its cost does not either.
    Fitted state: ``network_``, ``history_`` (training loss per epoch).
    """

    def __init__(self, latent_dim: int = 16, hidden: int = 16, epochs: int = 30, batch_size: int = 16,
                 learning_rate: float = 2e-3, snr_softening: float = 3.0, detection_snr: float = 3.0,
                 seed: int = 0, device: str = "cpu", progress: bool = True, max_galaxies_per_epoch: int = 2048):
        self.latent_dim, self.hidden, self.epochs, self.batch_size = latent_dim, hidden, epochs, batch_size
        self.learning_rate, self.snr_softening, self.detection_snr = learning_rate, snr_softening, detection_snr
        self.seed, self.device, self.progress = seed, device, progress
        self.max_galaxies_per_epoch = max_galaxies_per_epoch

    def scaled(self, cubes: np.ndarray, sigma: np.ndarray, good: np.ndarray) -> np.ndarray:
        """The network's view of (a batch of) cubes: asinh(S/N / snr_softening), 0 where there is no data."""
        _check_cubes(cubes, sigma, good)
        if not (np.isfinite(cubes[good]).all() and np.isfinite(sigma[good]).all()):
            raise ValueError("emission-line cubes contain NaN or inf in good voxels")
        snr = np.divide(cubes, sigma, out=np.zeros(cubes.shape, np.float32), where=good & (sigma > 0))
        return np.arcsinh(snr / self.snr_softening).astype(np.float32)

    def fit(self, cubes, sigma, good, galaxies: np.ndarray | None = None) -> EmissionLineAnomaly:
        """Train on the galaxies (rows) ``galaxies``, indices or a boolean mask; all of them by default."""
        _check_cubes(cubes, sigma, good)
        rows = np.arange(len(cubes)) if galaxies is None else np.asarray(galaxies)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        _, n_lines, n_bins, size, _ = cubes.shape
        network = LineCubeAutoencoder(n_lines, n_bins, size, self.hidden, self.latent_dim).to(self.device)
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)

        # Each batch is read by index in this process (one pread per run of consecutive rows) rather than by a torch
        # DataLoader: its worker processes would each hold another torch against the build's memory bound and take
        # CPU cores from the training threads, and without workers it is this same loop. A batch (~28 MB from the
        # page cache) reads in far less time than the ConvLSTM's step on it.
        def batch_loss(index):  # squared error over the voxels with data
            batch_rows = rows[index.numpy()]
            has_data = good[batch_rows]
            batch = torch.as_tensor(self.scaled(cubes[batch_rows], sigma[batch_rows], has_data)).to(self.device)
            m = torch.as_tensor(has_data).to(self.device)
            reconstruction, _ = network(batch)
            return ((reconstruction - batch) ** 2 * m).sum() / m.sum().clamp_min(1)

        self.history_ = train_epochs(network, optimiser, len(rows), self.batch_size, self.epochs, batch_loss,
                                     generator, "anomaly autoencoder", self.progress,
                                     per_epoch=self.max_galaxies_per_epoch)
        self.network_ = network.eval()
        return self

    def _run(self, cubes, sigma, good, batch_size: int = 64):
        """Yield (good, scaled input, reconstruction, latent) numpy batches of ``batch_size`` consecutive galaxies."""
        _check_cubes(cubes, sigma, good)
        with torch.no_grad():
            for start in range(0, len(cubes), batch_size):
                rows = slice(start, start + batch_size)
                m = good[rows]
                x = self.scaled(cubes[rows], sigma[rows], m)
                reconstruction, latent = self.network_(torch.as_tensor(x).to(self.device))
                yield m, x, reconstruction.cpu().numpy(), latent.cpu().numpy()

    def transform(self, cubes, sigma, good) -> np.ndarray:
        """Latent vector of each galaxy, float32 ``[N, latent_dim]``."""
        return np.concatenate([latent for *_, latent in self._run(cubes, sigma, good)]).astype(np.float32)

    def residuals(self, cubes, sigma, good, top_lines: int = 0) -> dict[str, np.ndarray]:
        """Mean absolute reconstruction error over the detected voxels (see the class): ``score`` ``[N]`` (the
        anomaly score, 0 for a galaxy without any detection), ``line`` ``[N, n_lines]`` and ``spaxel``
        ``[N, S, S]`` (NaN where nothing is detected): which line and where make a galaxy unusual.
        With ``top_lines`` = n also ``top_lines`` ``[N, n]`` (each galaxy's lines of largest ``line`` residual,
        largest first, undetected lines last) and ``top_line_maps`` ``[N, n, 3, S, S]``: for each of those lines
        the data and the reconstruction (the network's asinh(S/N / snr_softening), mean over the line's pixels)
        and the residual (the score's error per spaxel for that line, NaN where nothing is detected)."""
        detected = np.arcsinh(self.detection_snr / self.snr_softening)
        scores, lines, spaxels, tops, maps = [], [], [], [], []
        for good_batch, x, reconstruction, _ in self._run(cubes, sigma, good):
            used = good_batch & ((np.abs(x) >= detected) | (np.abs(reconstruction) >= detected))
            error = np.where(used, np.abs(reconstruction - x), 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                scores.append(error.sum(axis=(1, 2, 3, 4)) / np.maximum(used.sum(axis=(1, 2, 3, 4)), 1))
                lines.append(error.sum(axis=(2, 3, 4)) / used.sum(axis=(2, 3, 4)))
                spaxels.append(error.sum(axis=(1, 2)) / used.sum(axis=(1, 2)))
                if top_lines:
                    top = np.argsort(-np.nan_to_num(lines[-1], nan=-np.inf), axis=1, kind="stable")[:, :top_lines]
                    per_line = np.stack([x.mean(axis=2), reconstruction.mean(axis=2),
                                         error.sum(axis=2) / used.sum(axis=2)], axis=2)  # [B, n_lines, 3, S, S]
                    tops.append(top)
                    maps.append(np.take_along_axis(per_line, top[:, :, None, None, None], axis=1))
        out = {"score": np.concatenate(scores).astype(np.float32), "line": np.concatenate(lines).astype(np.float32),
               "spaxel": np.concatenate(spaxels).astype(np.float32)}
        if top_lines:
            out.update(top_lines=np.concatenate(tops).astype(np.int32),
                       top_line_maps=np.concatenate(maps).astype(np.float32))
        return out

    def state(self) -> dict:
        return {"network": self.network_.config, "state_dict": self.network_.state_dict(),
                "snr_softening": self.snr_softening, "detection_snr": self.detection_snr, "history": self.history_}


def _check_cubes(cubes, sigma, good) -> None:
    """Shapes only: arrays and row sources alike have them (the values are checked batch by batch)."""
    if len(cubes.shape) != 5 or cubes.shape[-1] != cubes.shape[-2]:
        raise ValueError(f"emission-line cubes must be [N, n_lines, n_bins, S, S], got shape {cubes.shape}")
    if tuple(sigma.shape) != tuple(cubes.shape) or tuple(good.shape) != tuple(cubes.shape):
        raise ValueError(f"sigma {sigma.shape} and good-voxel mask {good.shape} must have the cube shape {cubes.shape}")
