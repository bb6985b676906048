"""Contrastive embedding of galaxy cube maps (seed 000: SimCLR-style Siamese CNN, NT-Xent loss).

Two augmented views of each galaxy go through the same network (shared weights); the NT-Xent loss pulls the
two views of a galaxy together and pushes views of other galaxies apart in cosine similarity. The
representation kept for every galaxy is the first dense layer after flattening (512-d); a small projection head
on top of it is used only by the loss (SimCLR: the representation before the head transfers better).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from precompute.models.augment import CubeAugmenter


class CubeEncoder(nn.Module):
    """CNN in the spirit of seed 000 Table A.1: conv blocks (3×3 conv, batch norm, ReLU, 2×2 max-pool),
    flatten, dense ``n_features`` representation, then a 2-layer projection head for the loss.

    The input layer rescales raw maps: PCA channels by their spread over the training galaxies, the luminosity
    channel through asinh (it spans decades). Empty spaxels stay 0.
    """

    def __init__(self, n_channels: int, map_size: int, channels: tuple[int, ...] = (32, 64, 256),
                 n_features: int = 512, projection_dim: int = 128):
        super().__init__()
        self.config = {"n_channels": n_channels, "map_size": map_size, "channels": tuple(channels),
                       "n_features": n_features, "projection_dim": projection_dim}
        self.register_buffer("channel_scale", torch.ones(n_channels))
        blocks, c_in = [], n_channels
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        side = map_size // 2 ** len(channels)
        if side < 1:
            raise ValueError(f"map_size {map_size} is too small for {len(channels)} pooling blocks")
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.representation = nn.Linear(c_in * side * side, n_features)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(n_features, n_features), nn.ReLU(),
                                  nn.Linear(n_features, projection_dim))

    def scale_input(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps / self.channel_scale.view(1, -1, 1, 1)
        return torch.cat([x[:, :-1], torch.asinh(x[:, -1:])], dim=1)

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        return self.representation(self.features(self.scale_input(maps)))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(maps))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Normalised temperature-scaled cross entropy (Chen et al. 2020) of two views ``[B, D]`` of B galaxies.

    For each of the 2B views the positive is the other view of its galaxy and the 2B − 2 views of the other
    galaxies are negatives.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    n = z1.shape[0]
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own positive nor negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, target)


class ContrastiveEmbedding:
    """Fit a Siamese CNN on cube maps ``[N, C, S, S]`` and embed galaxies as ``n_features``-d vectors.

    Early stopping: training stops when the NT-Xent loss on the validation galaxies (fixed augmentations) has
    not improved for ``patience`` epochs, and the best weights are restored. Fitted state: ``network_``,
    ``history_`` (per-epoch train / val loss), ``best_epoch_``, ``n_parameters_``.
    """

    def __init__(self, n_features: int = 512, channels: tuple[int, ...] = (32, 64, 256), projection_dim: int = 128,
                 temperature: float = 0.5, epochs: int = 60, patience: int = 5, batch_size: int = 64,
                 learning_rate: float = 1e-3, weight_decay: float = 1e-5, augment: dict | None = None,
                 seed: int = 0, device: str = "cpu", progress: bool = True):
        self.n_features, self.channels, self.projection_dim = n_features, tuple(channels), projection_dim
        self.temperature, self.epochs, self.patience, self.batch_size = temperature, epochs, patience, batch_size
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.augment = dict(augment or {})
        self.seed, self.device, self.progress = seed, device, progress

    @property
    def augmenter(self) -> CubeAugmenter:
        return CubeAugmenter(**self.augment)

    def fit(self, maps: np.ndarray, val_maps: np.ndarray | None = None) -> "ContrastiveEmbedding":
        _check_maps(maps, "training maps")
        if len(maps) < 2:
            raise ValueError(f"contrastive training needs at least 2 galaxies, got {len(maps)}")
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        n, c, s, _ = maps.shape
        network = CubeEncoder(c, s, self.channels, self.n_features, self.projection_dim)
        network.channel_scale.copy_(torch.as_tensor(_channel_scale(maps)))
        network.to(self.device)
        optimiser = torch.optim.AdamW(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        augmenter = self.augmenter
        train = torch.as_tensor(maps, dtype=torch.float32)
        val = torch.as_tensor(val_maps, dtype=torch.float32) if val_maps is not None and len(val_maps) > 1 else None

        self.history_, best_loss, best_state, since_best = [], math.inf, None, 0
        epochs = tqdm(range(self.epochs), desc="contrastive", disable=not self.progress, leave=False)
        for epoch in epochs:
            network.train()
            order = torch.randperm(n, generator=generator)
            losses = []
            for start in range(0, n, self.batch_size):
                batch = train[order[start:start + self.batch_size]]
                if len(batch) < 2:  # NT-Xent needs a negative
                    continue
                views = [augmenter(batch, generator).to(self.device) for _ in range(2)]
                loss = nt_xent(network(views[0]), network(views[1]), self.temperature)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            if val is not None:
                record["val_loss"] = self._validation_loss(network, val, augmenter)
            self.history_.append(record)
            monitored = record.get("val_loss", record["train_loss"])
            epochs.set_postfix(loss=f"{monitored:.3f}")
            if monitored < best_loss - 1e-4:
                best_loss, best_state, since_best, self.best_epoch_ = monitored, copy.deepcopy(network.state_dict()), 0, epoch
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        network.load_state_dict(best_state)
        self.network_ = network.eval()
        self.n_parameters_ = sum(p.numel() for p in network.parameters())
        return self

    def _validation_loss(self, network: CubeEncoder, val: torch.Tensor, augmenter: CubeAugmenter) -> float:
        # The same augmentations every epoch, so the loss changes only because the network does.
        generator = torch.Generator().manual_seed(self.seed + 1)
        network.eval()
        with torch.no_grad():
            losses = []
            for start in range(0, len(val), self.batch_size):
                batch = val[start:start + self.batch_size]
                if len(batch) < 2:
                    continue
                views = [augmenter(batch, generator).to(self.device) for _ in range(2)]
                losses.append(nt_xent(network(views[0]), network(views[1]), self.temperature).item())
        return float(np.mean(losses))

    def transform(self, maps: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The ``n_features``-d representation of every galaxy, float32 ``[N, n_features]``."""
        _check_maps(maps, "maps")
        self.network_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(maps), batch_size):
                batch = torch.as_tensor(maps[start:start + batch_size], dtype=torch.float32).to(self.device)
                out.append(self.network_.embed(batch).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def augmented(self, maps: np.ndarray, seed: int) -> np.ndarray:
        """One random augmented view of each galaxy (seeded), e.g. to check augmented-view retrieval."""
        views = self.augmenter(torch.as_tensor(maps, dtype=torch.float32), torch.Generator().manual_seed(seed))
        return views.numpy()

    def state(self) -> dict:
        """Everything needed to rebuild the fitted network (torch.save-able)."""
        return {"network": self.network_.config, "state_dict": self.network_.state_dict(),
                "augment": self.augment, "temperature": self.temperature, "history": self.history_}


def retrieval_accuracy(reference: np.ndarray, queries: np.ndarray, targets: np.ndarray | None = None) -> float:
    """Fraction of queries whose nearest reference vector (cosine) is their target row of ``reference``
    (default: the row with the query's own index)."""
    targets = np.arange(len(queries)) if targets is None else np.asarray(targets)
    a = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    b = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    return float(np.mean(np.argmax(b @ a.T, axis=1) == targets))


def _channel_scale(maps: np.ndarray) -> np.ndarray:
    """Input scales: the RMS of each PCA channel over spaxels with data (brings coefficients of very different
    spread to ~1), and for the luminosity a faint spaxel's value (10th percentile), so that asinh(L / scale)
    behaves like log L over the galaxy and luminosity ratios, not the brightest centres, drive the network."""
    occupied = (maps != 0).any(axis=1)  # [N, S, S]
    values = np.moveaxis(maps, 1, -1)[occupied].astype(np.float64)  # [n_spaxels, C]
    if len(values) == 0:
        raise ValueError("cube maps are empty: no spaxel has data")
    scale = np.sqrt(np.mean(values[:, :-1] ** 2, axis=0))
    luminous = values[:, -1][values[:, -1] > 0]
    faint = np.percentile(luminous, 10) if luminous.size else 1.0
    return np.append(scale, faint).clip(1e-6).astype(np.float32)


def _check_maps(maps: np.ndarray, what: str) -> None:
    if maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"{what} must be [N, C, S, S], got shape {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError(f"{what} contain NaN or inf")
