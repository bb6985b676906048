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

from precompute.models.augment import CubeAugmenter, rotate_flip

VALIDATION_PAIRS = 4  # augmented pairs of each validation galaxy in the early-stopping loss
READ_ROWS = 128  # galaxies read and embedded at a time outside training (~16 MB of 30-channel 32 × 32 maps)


class CubeEncoder(nn.Module):
    """CNN in the spirit of seed 000 Table A.1: conv blocks (3×3 conv, batch norm, ReLU, 2×2 max-pool),
    flatten, dense ``n_features`` representation, then a 2-layer projection head for the loss.

    The input layer rescales raw maps to a spread of ~1 over the training spaxels: the PCA channels together by
    the RMS of all their coefficients (so their relative sizes, the spectral differences, are kept), the
    luminosity (which spans decades) through asinh(L / a faint spaxel's L), then by the RMS of that. Empty
    spaxels stay 0.
    """

    def __init__(self, n_channels: int, map_size: int, channels: tuple[int, ...] = (32, 64, 256),
                 n_features: int = 512, projection_dim: int = 128):
        super().__init__()
        self.config = {"n_channels": n_channels, "map_size": map_size, "channels": tuple(channels),
                       "n_features": n_features, "projection_dim": projection_dim}
        self.register_buffer("channel_scale", torch.ones(n_channels))  # PCA RMS (shared), faint-spaxel luminosity
        self.register_buffer("luminosity_spread", torch.ones(()))  # RMS of asinh(L / faint L)
        blocks, c_in = [], n_channels
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        side = map_size // 2 ** len(channels)
        if side < 1:
            raise ValueError(f"map_size {map_size} is too small for {len(channels)} pooling blocks")
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.representation = nn.Linear(c_in * side * side, n_features)
        self.head = nn.Sequential(nn.Linear(n_features, n_features), nn.ReLU(), nn.Linear(n_features, projection_dim))

    def scale_input(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps / self.channel_scale.view(1, -1, 1, 1)
        return torch.cat([x[:, :-1], torch.asinh(x[:, -1:]) / self.luminosity_spread], dim=1)

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """The representation: the first dense layer's activations (ReLU, as a Keras ``Dense(512, 'relu')``)."""
        return F.relu(self.representation(self.features(self.scale_input(maps))))

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

    Training also needs each map's noise ``[N, S, S]`` (1σ per spectral pixel of each spaxel, from
    precompute.cube_maps) to augment to a uniform S/N; embedding a galaxy needs only its maps. Both are numpy
    arrays or rows read on demand (precompute.rows.NpyRows: a survey's maps on disk); every method reads them a
    batch of galaxies at a time, so its memory does not grow with the survey.

    An epoch shows ``max_galaxies_per_epoch`` training galaxies (all of them when there are no more; otherwise a
    new random draw each epoch, so that an epoch's cost is bounded whatever the survey) ``passes_per_epoch`` times
    each, each time in new augmented views (a few passes per epoch let the small training sets of IFU surveys
    converge before early stopping looks at the validation loss). The network kept is the exponential moving
    average of the trained weights (``ema_decay`` per step). Early stopping: training stops when the NT-Xent loss
    of that average on the validation galaxies (at most ``max_galaxies_per_epoch`` of them, the same ones every
    epoch; fixed augmentations, smoothed over epochs) has not improved for ``patience`` epochs; the best weights
    are restored.
    Fitted state: ``network_``, ``history_`` (per-epoch train / val loss), ``best_epoch_``, ``n_parameters_``.
    """

    def __init__(self, n_features: int = 512, channels: tuple[int, ...] = (32, 64, 256), projection_dim: int = 128,
                 temperature: float = 0.5, epochs: int = 60, patience: int = 5, passes_per_epoch: int = 3,
                 batch_size: int = 64,
                 learning_rate: float = 1e-3, weight_decay: float = 1e-5, ema_decay: float = 0.98,
                 augment: dict | None = None, seed: int = 0, device: str = "cpu", progress: bool = True,
                 max_galaxies_per_epoch: int = 256):
        self.n_features, self.channels, self.projection_dim = n_features, tuple(channels), projection_dim
        self.temperature, self.epochs, self.patience, self.batch_size = temperature, epochs, patience, batch_size
        self.passes_per_epoch, self.max_galaxies_per_epoch = passes_per_epoch, max_galaxies_per_epoch
        self.learning_rate, self.weight_decay, self.ema_decay = learning_rate, weight_decay, ema_decay
        self.augment = dict(augment or {})
        self.seed, self.device, self.progress = seed, device, progress

    @property
    def augmenter(self) -> CubeAugmenter:
        return CubeAugmenter(**self.augment)

    def fit(self, maps, noise, galaxies: np.ndarray | None = None,
            validation: np.ndarray | None = None) -> ContrastiveEmbedding:
        """Train on the rows ``galaxies`` of ``maps`` and ``noise`` (indices or a boolean mask; all by default) and
        stop early on the loss of the rows ``validation`` (without them or with fewer than 2: the training loss)."""
        _check_maps(maps, "maps", noise)
        train = _rows(galaxies, len(maps))
        if len(train) < 2:
            raise ValueError(f"contrastive training needs at least 2 galaxies, got {len(train)}")
        val = None if validation is None else self._bounded(_rows(validation, len(maps)))
        val = val if val is not None and len(val) > 1 else None
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        _, c, s, _ = maps.shape
        network = CubeEncoder(c, s, self.channels, self.n_features, self.projection_dim)
        # the spread of the spaxel values is pinned down by a few hundred galaxies: a bounded sample sets the scales
        scale, spread = _input_scales(_batch(maps, self._bounded(train), "training maps"))
        network.channel_scale.copy_(torch.as_tensor(scale))
        network.luminosity_spread.fill_(spread)
        network.to(self.device)
        optimiser = torch.optim.AdamW(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        # The kept network is an exponential moving average of the trained weights (and batch-norm statistics), as
        # MoCo's and BYOL's momentum encoders: once the NT-Xent loss of a few hundred galaxies saturates, each step
        # moves the representation at random, and the average settles where the raw weights only wander.
        average = torch.optim.swa_utils.AveragedModel(
            network, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
        augmenter = self.augmenter

        # Each batch is read by index in this process (one pread per run of consecutive rows of a file) rather than
        # by a torch DataLoader: its worker processes would each hold another torch against the build's memory bound
        # and take cores from the training threads, the augmentations must draw from this one seeded generator, and
        # without workers a DataLoader is this same loop. A batch (~8 MB) reads in far less time than a step takes.
        self.history_, best_loss, best_state, since_best, monitored = [], math.inf, None, 0, None
        epochs = tqdm(range(self.epochs), desc="contrastive", disable=not self.progress, leave=False)
        for epoch in epochs:
            network.train()
            shown = train
            if len(train) > self.max_galaxies_per_epoch:
                shown = train[torch.randperm(len(train), generator=generator)[:self.max_galaxies_per_epoch].numpy()]
            # Batches within each pass, so a batch never holds the same galaxy twice (its views would be negatives)
            batches = [shown[order[start:start + self.batch_size].numpy()] for order in
                       (torch.randperm(len(shown), generator=generator) for _ in range(self.passes_per_epoch))
                       for start in range(0, len(shown), self.batch_size)]
            losses = []
            for index in batches:
                if len(index) < 2:  # NT-Xent needs a negative
                    continue
                batch = _batch(maps, index, "training maps"), _batch(noise, index, "training noise")
                views = [augmenter(*map(torch.from_numpy, batch), generator).to(self.device) for _ in range(2)]
                loss = nt_xent(network(views[0]), network(views[1]), self.temperature)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                average.update_parameters(network)
                losses.append(loss.item())
            record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
            if val is not None:
                record["val_loss"] = self._validation_loss(average.module, maps, noise, val, augmenter)
            self.history_.append(record)
            loss = record.get("val_loss", record["train_loss"])
            # Smoothed (exponential moving average, weight 1/2): a few dozen validation galaxies give a loss that
            # jitters from epoch to epoch while still falling, and raw patience would stop at the first jitter.
            monitored = loss if monitored is None else 0.5 * (monitored + loss)
            epochs.set_postfix(loss=f"{monitored:.3f}")
            if monitored < best_loss - 1e-4:
                best_loss, best_state, since_best, self.best_epoch_ = monitored, copy.deepcopy(average.module.state_dict()), 0, epoch
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        network.load_state_dict(best_state)
        self.network_ = network.eval()
        self.n_parameters_ = sum(p.numel() for p in network.parameters())
        return self

    def _bounded(self, rows: np.ndarray) -> np.ndarray:
        """``rows``, or a seeded random ``max_galaxies_per_epoch`` of them (in row order) when there are more."""
        if len(rows) <= self.max_galaxies_per_epoch:
            return rows
        return np.sort(np.random.default_rng(self.seed).choice(rows, self.max_galaxies_per_epoch, replace=False))

    def _validation_loss(self, network: CubeEncoder, maps, noise, rows: np.ndarray,
                         augmenter: CubeAugmenter) -> float:
        # The same augmentations every epoch, so the loss changes only because the network does; several pairs
        # per galaxy, because a validation split of a few dozen galaxies gives a noisy loss from one pair.
        generator = torch.Generator().manual_seed(self.seed + 1)
        network.eval()
        with torch.no_grad():
            losses = []
            for _ in range(VALIDATION_PAIRS):
                for start in range(0, len(rows), self.batch_size):
                    index = rows[start:start + self.batch_size]
                    if len(index) < 2:
                        continue
                    batch = _batch(maps, index, "validation maps"), _batch(noise, index, "validation noise")
                    views = [augmenter(*map(torch.from_numpy, batch), generator).to(self.device) for _ in range(2)]
                    losses.append(nt_xent(network(views[0]), network(views[1]), self.temperature).item())
        return float(np.mean(losses))

    def transform(self, maps, batch_size: int = READ_ROWS) -> np.ndarray:
        """The ``n_features``-d representation of every galaxy, float32 ``[N, n_features]``: the mean over the 8
        orientations of the map (rotations by 90°, flips), so it does not depend on how the galaxy lies on the sky."""
        _check_maps(maps, "maps")
        return np.concatenate([self._embed(torch.from_numpy(_batch(maps, slice(start, start + batch_size), "maps")))
                               for start in range(0, len(maps), batch_size)])

    def augmented_vectors(self, maps, noise, rows: np.ndarray, seed: int) -> np.ndarray:
        """The representation (as `transform`) of one random augmented view (seeded) of each galaxy ``rows``, e.g. to
        check augmented-view retrieval; float32 ``[len(rows), n_features]``."""
        _check_maps(maps, "maps", noise)
        augmenter, generator = self.augmenter, torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, len(rows), READ_ROWS):
            index = rows[start:start + READ_ROWS]
            views = augmenter(torch.from_numpy(_batch(maps, index, "maps")),
                              torch.from_numpy(_batch(noise, index, "noise")), generator)
            out.append(self._embed(views))
        return np.concatenate(out)

    def _embed(self, maps: torch.Tensor) -> np.ndarray:
        """The representation of a batch of maps: the mean over their 8 orientations."""
        self.network_.eval()
        with torch.no_grad():
            maps = maps.to(self.device)
            views = [rotate_flip(maps, k, flip) for k in range(4) for flip in (False, True)]
            return torch.stack([self.network_.embed(v) for v in views]).mean(dim=0).cpu().numpy().astype(np.float32)

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


def _input_scales(maps: np.ndarray) -> tuple[np.ndarray, float]:
    """(channel scales, luminosity spread) of ``CubeEncoder.scale_input``, from the spaxels with data. The PCA
    channels share one scale, the RMS of all their coefficients: they are in the same units (normalised flux), so
    the leading components, which carry most of the spectral differences, keep their weight and the trailing,
    noise-dominated ones stay small (scaling each to unit RMS would let noise weigh as much as the 4000 Å break).
    For the luminosity, a faint spaxel's value (10th percentile), so that asinh(L / it) behaves like log L over the
    galaxy, and the RMS of that."""
    occupied = (maps != 0).any(axis=1)  # [N, S, S]
    values = np.moveaxis(maps, 1, -1)[occupied].astype(np.float64)  # [n_spaxels, C]
    luminous = values[:, -1][values[:, -1] > 0]
    if luminous.size == 0:
        raise ValueError("cube maps are empty: no spaxel has data")
    faint = np.percentile(luminous, 10)
    pca_rms = np.sqrt(np.mean(values[:, :-1] ** 2))
    scale = np.append(np.full(values.shape[1] - 1, pca_rms), faint).clip(1e-6).astype(np.float32)
    return scale, float(np.sqrt(np.mean(np.arcsinh(luminous / faint) ** 2)))


def _rows(galaxies: np.ndarray | None, n: int) -> np.ndarray:
    """Row indices from indices or a boolean mask over ``n`` rows (None: all of them)."""
    rows = np.arange(n) if galaxies is None else np.asarray(galaxies)
    return np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)


def _batch(source, index, what: str) -> np.ndarray:
    """Rows ``index`` (indices or a slice) of an array or row source, float32; NaN or inf in them is an error."""
    batch = np.array(source[index], dtype=np.float32)  # a copy: tensors made from it may be written in place
    if not np.isfinite(batch).all():
        raise ValueError(f"{what} contain NaN or inf")
    return batch


def _check_maps(maps, what: str, noise=None) -> None:
    """Shapes only: arrays and row sources alike have them (the values are checked batch by batch)."""
    if len(maps.shape) != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"{what} must be [N, C, S, S], got shape {maps.shape}")
    if noise is not None and tuple(noise.shape) != (maps.shape[0], *maps.shape[2:]):
        raise ValueError(f"noise of the {what} must be [N, S, S] = {(maps.shape[0], *maps.shape[2:])}, "
                         f"got {noise.shape}")
