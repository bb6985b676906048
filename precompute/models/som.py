"""Self-organizing maps in torch: the batch SOM estimator and the DESOM SOM layer.

A map is a grid of K = rows × cols nodes (node k = row * cols + col), each with a prototype vector w_k. A sample's
best-matching unit (BMU) is the node whose prototype is nearest; the Gaussian neighbourhood
h(b, k; σ) = exp(-|g_b − g_k|² / 2σ²) on the grid positions g couples nodes so that the map stays ordered; σ is
annealed from `sigma_start` to `sigma_end` during training (Kohonen 2013, "Essentials of the self-organizing map").

- `SOM`: Kohonen's batch SOM over mini-batches (after each batch every prototype becomes the neighbourhood-weighted
  mean of the batch's samples), estimator API, same code on CPU and GPU; `backend="minisom"` trains the same map
  with MiniSom instead, for the classic (non-deep) SOMs.
- `SOMLayer`: the SOM layer of DESOM (Forest et al. 2019, ESANN): prototypes as an nn.Parameter and the SOM loss
  Σ_k h(bmu(z), k; σ) |z − w_k|² that is added to the autoencoder's reconstruction loss.

Both share the map-quality measures: quantization error (QE, mean distance of a sample to its BMU), topographic
error (TE, fraction of samples whose best and second-best nodes are not grid neighbours), hit maps and U-matrix.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from minisom import MiniSom
from tqdm.auto import tqdm

TOPOLOGIES = ("rectangular", "hexagonal")
# One chunk of the [N, K] distance matrix holds at most this many entries (64 MiB in float32).
_CHUNK_ENTRIES = 1 << 24


# ---------------------------------------------------------------------------------------------------- the grid
def grid_coordinates(rows: int, cols: int, topology: str = "rectangular") -> torch.Tensor:
    """Position of every node in the plane, [K, 2] as (row axis, column axis), neighbours at distance 1.

    Hexagonal maps offset every odd row by half a node and pack rows √3/2 apart, so each node has six
    neighbours at unit distance (two in its row, two above, two below).
    """
    _check_grid(rows, cols, topology)
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                              indexing="ij")
    if topology == "hexagonal":
        col = col + 0.5 * (row % 2)
        row = row * math.sqrt(3.0) / 2.0
    return torch.stack([row.reshape(-1), col.reshape(-1)], dim=1).float()


def adjacency(rows: int, cols: int, topology: str = "rectangular") -> torch.Tensor:
    """bool [K, K]: True for grid neighbours (4 per interior node on rectangular maps, 6 on hexagonal ones)."""
    grid = grid_coordinates(rows, cols, topology).double()
    return (torch.cdist(grid, grid) - 1.0).abs() < 1e-6


def grid_squared_distances(rows: int, cols: int, topology: str = "rectangular") -> torch.Tensor:
    """[K, K] squared distances between nodes on the grid: the argument of the neighbourhood function."""
    grid = grid_coordinates(rows, cols, topology)
    return torch.cdist(grid, grid).pow(2)


def neighbourhood(grid_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian neighbourhood h = exp(-d² / 2σ²) for grid squared distances d² (any shape)."""
    if not sigma > 0:
        raise ValueError(f"neighbourhood width sigma must be > 0, got {sigma}")
    return torch.exp(-grid_sq / (2.0 * sigma * sigma))


def sigma_at(step: int, n_steps: int, sigma_start: float, sigma_end: float,
             schedule: str = "exponential") -> float:
    """Neighbourhood width at `step` of `n_steps`: sigma_start at step 0, sigma_end at the last step.

    "exponential" (σ_start (σ_end/σ_start)^(t/T), as in DESOM) shrinks the neighbourhood fast while the map
    unfolds and slowly once it is ordered; "linear" is the classic alternative.
    """
    if not (sigma_start > 0 and sigma_end > 0):
        raise ValueError(f"sigma_start and sigma_end must be > 0, got {sigma_start} and {sigma_end}")
    fraction = min(max(step, 0), max(n_steps - 1, 1)) / max(n_steps - 1, 1)
    if schedule == "exponential":
        return float(sigma_start * (sigma_end / sigma_start) ** fraction)
    if schedule == "linear":
        return float(sigma_start + (sigma_end - sigma_start) * fraction)
    raise ValueError(f"unknown sigma schedule {schedule!r}: use 'exponential' or 'linear'")


def _check_grid(rows, cols, topology):
    if not (isinstance(rows, (int, np.integer)) and isinstance(cols, (int, np.integer)) and rows >= 1 and cols >= 1):
        raise ValueError(f"SOM grid must have integer rows, cols >= 1, got rows={rows!r}, cols={cols!r}")
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown SOM topology {topology!r}: use one of {TOPOLOGIES}")


# ------------------------------------------------------------------------------------- BMU search and initialisation
def squared_distances(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """[N, K] squared Euclidean distances |x − w|² = |x|² − 2 x·w + |w|², one matrix product (differentiable)."""
    Xc, Wc = _centred(X, W)
    return (_ranking_distances(Xc, Wc) + Xc.pow(2).sum(1, keepdim=True)).clamp_min(0.0)


def _centred(X: torch.Tensor, W: torch.Tensor):
    """X and W minus the prototypes' mean: |x|² − 2 x·w + |w|² subtracts large nearly equal terms, and centring
    keeps them small, so float32 stays accurate for data far from the origin (e.g. unnormalised fluxes)."""
    centre = W.mean(dim=0)
    return X - centre, W - centre


def _ranking_distances(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """|w|² − 2 x·w as one fused matrix product: the squared distance less |x|², which ranks nodes the same."""
    return torch.addmm(W.pow(2).sum(1), X, W.T, alpha=-2.0)


@torch.no_grad()
def best_matching_units(X: torch.Tensor, W: torch.Tensor, n_best: int = 1, chunk_size: int | None = None):
    """The n_best nearest prototypes of every sample: (indices LongTensor [N, n_best], squared distances [N, n_best]).

    Works through X in chunks so that the [chunk, K] distance matrix stays small; chunks move to W's device.
    """
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ENTRIES // W.shape[0])
    indices, distances = [], []
    for start in range(0, X.shape[0], chunk_size):
        Xc, Wc = _centred(X[start:start + chunk_size].to(W.device, W.dtype), W)
        partial = _ranking_distances(Xc, Wc)
        if n_best == 1:  # min is much faster than topk
            best, idx = partial.min(dim=1, keepdim=True)
        else:
            best, idx = partial.topk(n_best, dim=1, largest=False)
        indices.append(idx)
        distances.append((best + Xc.pow(2).sum(1, keepdim=True)).clamp_min(0.0))
    if not indices:
        return torch.empty(0, n_best, dtype=torch.long, device=W.device), torch.empty(0, n_best, device=W.device)
    return torch.cat(indices), torch.cat(distances)


def initial_prototypes(X: torch.Tensor, rows: int, cols: int, topology: str = "rectangular", init: str = "pca",
                       seed: int = 0) -> torch.Tensor:
    """Starting prototypes [K, dim] from the data X [N, dim].

    "pca": the grid laid flat on the plane of the two leading principal components (longer grid axis along the
    first), spanning ±√3 standard deviations — the spread of a uniform distribution with the data's variance —
    so the map starts ordered and batch training converges in few epochs. "random": K samples drawn at random.
    """
    generator = torch.Generator().manual_seed(int(seed))
    X = X.detach().to("cpu", torch.float64)
    n_nodes = rows * cols
    if init == "random":
        if X.shape[0] >= n_nodes:
            pick = torch.randperm(X.shape[0], generator=generator)[:n_nodes]
        else:
            pick = torch.randint(X.shape[0], (n_nodes,), generator=generator)
        return X[pick].float()
    if init != "pca":
        raise ValueError(f"unknown SOM init {init!r}: use 'pca' or 'random'")
    # The principal plane needs only a fair sample of the data, not all of it.
    if X.shape[0] > 20_000:
        X = X[torch.randperm(X.shape[0], generator=generator)[:20_000]]
    mean = X.mean(0)
    Xc = X - mean
    eigval, eigvec = torch.linalg.eigh(Xc.T @ Xc / max(X.shape[0] - 1, 1))
    order = eigval.argsort(descending=True)[:2]
    axes = eigvec[:, order] * eigval[order].clamp_min(0).sqrt()
    # eigh's sign is arbitrary; fix it so the map's orientation is the same on every machine.
    axes = axes * torch.sign(axes[axes.abs().argmax(0), torch.arange(axes.shape[1])])
    grid = grid_coordinates(rows, cols, topology).double()
    span = grid.max(0).values - grid.min(0).values
    unit = torch.where(span > 0, (grid - grid.min(0).values) / span.clamp_min(1e-12) * 2 - 1, torch.zeros_like(grid))
    if span[1] > span[0]:  # the first principal component runs along the longer grid axis
        unit = unit.flip(1)
    unit = unit[:, : axes.shape[1]] * math.sqrt(3.0)
    return (mean + unit @ axes.T).float()


def _as_samples(X, name: str = "X", n_features: int | None = None) -> torch.Tensor:
    """X as a 2-D float tensor (kept on its device if it is one), with a clear error for anything else."""
    if isinstance(X, torch.Tensor):
        X = X.detach()
        X = X if X.is_floating_point() else X.float()
    else:
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_samples, n_features], got shape {tuple(X.shape)}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the map's prototypes have {n_features}")
    if not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or infinite values; mask or impute them before mapping")
    return X


# ------------------------------------------------------------------------------------------- map-quality measures
class _MapQuality:
    """QE, TE, hits and U-matrix for a map with `rows`, `cols`, `topology` and prototypes from `_codebook()`."""

    def _best(self, X, n_best: int = 1):
        W = self._codebook()
        return best_matching_units(_as_samples(X, n_features=W.shape[1]), W, n_best)

    def quantization_error(self, X) -> float:
        """Mean Euclidean distance from each sample to its BMU's prototype (in the units of X)."""
        _, d2 = self._best(X)
        return float(d2.sqrt().mean())

    def topographic_error(self, X) -> float:
        """Fraction of samples whose best and second-best nodes are not grid neighbours (0 = perfectly ordered).

        Neighbours are the 4 (rectangular) or 6 (hexagonal) adjacent nodes; MiniSom's rectangular TE also accepts
        diagonal nodes, so its figures on rectangular maps are lower or equal for the same prototypes.
        """
        if self.rows * self.cols < 2:
            raise ValueError("the topographic error needs a map of at least 2 nodes")
        idx, _ = self._best(X, n_best=2)
        adjacent = adjacency(self.rows, self.cols, self.topology).to(idx.device)
        return float(1.0 - adjacent[idx[:, 0], idx[:, 1]].double().mean())

    def hits(self, X) -> np.ndarray:
        """int64 [K]: how many samples have each node as BMU (reshape to [rows, cols] for a hit map)."""
        idx, _ = self._best(X)
        return torch.bincount(idx[:, 0], minlength=self.rows * self.cols).cpu().numpy()

    @torch.no_grad()
    def umatrix(self) -> np.ndarray:
        """float [rows, cols]: mean distance from each prototype to its grid neighbours' (high = cluster border)."""
        W = self._codebook()
        adjacent = adjacency(self.rows, self.cols, self.topology).to(W.device)
        dist = torch.cdist(W, W) * adjacent
        return (dist.sum(1) / adjacent.sum(1).clamp_min(1)).reshape(self.rows, self.cols).cpu().numpy()


# ---------------------------------------------------------------------------------------------- batch SOM estimator
class SOM(_MapQuality):
    """Batch self-organizing map (Kohonen's batch algorithm over mini-batches), scikit-learn style.

    Each mini-batch of `batch_size` samples (reshuffled every epoch) finds its BMUs by a matrix product, then every
    prototype becomes the neighbourhood-weighted mean of the batch, w_k = Σ_i h(b_i, k; σ) x_i / Σ_i h(b_i, k; σ),
    with σ annealed exponentially from `sigma_start` to `sigma_end` over all the updates. With batch_size ≥ N this
    is Kohonen's batch SOM (one update per epoch); smaller batches update the map more often for the same work,
    so it orders and fits in fewer epochs (benchmarks/bench_som.py). No learning rate to tune.

    backend="minisom" trains the same grid with MiniSom (`minisom_training="online"`: its sample-at-a-time
    `train`, random order, learning rate 0.5 decaying asymptotically; "batch": its `train_batch_offline`), using
    the same σ schedule per epoch; the fitted attributes and measures are then those of the MiniSom map.

    Fitted attributes: weights_ [K, dim], grid_ [K, 2], n_iter_ (epochs run), history_ (per epoch, the mean
    distance of the samples to their BMU, each measured just before its mini-batch's update: the training curve;
    the minisom backend, trained in one call, records the final QE only).
    """

    def __init__(self, rows: int = 15, cols: int = 15, topology: str = "rectangular", sigma_start: float | None = None,
                 sigma_end: float = 0.5, n_epochs: int = 20, batch_size: int = 4096, seed: int = 0,
                 device: str = "cpu", init: str = "pca", backend: str = "torch", minisom_training: str = "online",
                 verbose: bool = False):
        self.rows = rows
        self.cols = cols
        self.topology = topology
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.init = init
        self.backend = backend
        self.minisom_training = minisom_training
        self.verbose = verbose

    @property
    def sigma_start_(self) -> float:
        """The starting neighbourhood width actually used: half the longer grid side unless given."""
        return float(self.sigma_start if self.sigma_start is not None else max(self.rows, self.cols) / 2)

    def fit(self, X) -> "SOM":
        _check_grid(self.rows, self.cols, self.topology)
        if not (isinstance(self.n_epochs, (int, np.integer)) and self.n_epochs >= 1):
            raise ValueError(f"n_epochs must be an integer >= 1, got {self.n_epochs!r}")
        if not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        sigma_at(0, self.n_epochs, self.sigma_start_, self.sigma_end)  # validates the widths
        X = _as_samples(X)
        if X.shape[0] == 0:
            raise ValueError("X has no samples: a SOM needs at least one to train")
        self.grid_ = grid_coordinates(self.rows, self.cols, self.topology).numpy()
        if self.backend == "torch":
            self._fit_torch(X)
        elif self.backend == "minisom":
            self._fit_minisom(X.cpu().numpy())
        else:
            raise ValueError(f"unknown SOM backend {self.backend!r}: use 'torch' or 'minisom'")
        self.n_iter_ = self.n_epochs
        return self

    def _fit_torch(self, X: torch.Tensor) -> None:
        device = torch.device(self.device)
        W = initial_prototypes(X, self.rows, self.cols, self.topology, self.init, self.seed).to(device)
        grid_sq = grid_squared_distances(self.rows, self.cols, self.topology).to(device)
        generator = torch.Generator().manual_seed(int(self.seed))
        n_samples, n_nodes = X.shape[0], W.shape[0]
        n_batches = -(-n_samples // self.batch_size)
        history = []
        for epoch in tqdm(range(self.n_epochs), desc="SOM epochs", disable=not self.verbose):
            # A fresh order every epoch: inputs often come sorted (by galaxy, by class) and each mini-batch must be
            # a fair sample of the whole.
            order = torch.randperm(n_samples, generator=generator).to(X.device)
            qe_sum = torch.zeros((), device=device)
            for batch in range(n_batches):
                members = order[batch * self.batch_size:(batch + 1) * self.batch_size]
                chunk = X.index_select(0, members).to(device, W.dtype)  # index_select: 10× faster than X[members]
                idx, d2 = best_matching_units(chunk, W)
                qe_sum += d2.sqrt().sum()
                # Per-node sums and counts of the samples each node wins are all the batch update needs.
                sums = torch.zeros_like(W).index_add_(0, idx[:, 0], chunk)
                counts = torch.bincount(idx[:, 0], minlength=n_nodes).to(W.dtype)
                sigma = sigma_at(epoch * n_batches + batch, self.n_epochs * n_batches, self.sigma_start_,
                                 self.sigma_end)
                h = neighbourhood(grid_sq, sigma)
                weight = h @ counts
                # Nodes beyond the (underflowed) reach of every sample of the batch keep their prototype.
                W = torch.where(weight[:, None] > 0, (h @ sums) / weight.clamp_min(1e-30)[:, None], W)
            history.append(float(qe_sum) / n_samples)
        self.weights_ = W.cpu().numpy()
        self.history_ = history

    def _fit_minisom(self, X: np.ndarray) -> None:
        if self.minisom_training not in ("online", "batch"):
            raise ValueError(f"unknown minisom_training {self.minisom_training!r}: use 'online' or 'batch'")
        online = self.minisom_training == "online"
        # MiniSom's first index is our column and its second our row counted from the bottom: with that layout its
        # hexagonal lattice (alternate second-index lines shifted) is ours up to a mirror and a shift.
        som = MiniSom(self.cols, self.rows, X.shape[1], sigma=self.sigma_start_, learning_rate=0.5 if online else 1.0,
                      decay_function="asymptotic_decay" if online else _constant,
                      neighborhood_function="gaussian", topology=self.topology, random_seed=self.seed)
        # MiniSom's σ decays end at 1 or σ/3 and it takes no callable for σ; ours ends at sigma_end, so set it.
        som._sigma_decay_function = functools.partial(_minisom_sigma, sigma_end=self.sigma_end)
        if self.init == "pca":
            som.pca_weights_init(X)
        elif self.init == "random":
            som.random_weights_init(X)
        else:
            raise ValueError(f"unknown SOM init {self.init!r}: use 'pca' or 'random'")
        if online:
            som.train(X, self.n_epochs, random_order=True, use_epochs=True, verbose=self.verbose)
        else:
            som.train_batch_offline(X, self.n_epochs, verbose=self.verbose)
        self.weights_ = _from_minisom(som.get_weights())
        self.history_ = [self.quantization_error(X)]
        self.minisom_ = som

    def _codebook(self) -> torch.Tensor:
        if not hasattr(self, "weights_"):
            raise RuntimeError("this SOM is not fitted yet: call fit(X) first")
        return torch.as_tensor(self.weights_, device=torch.device(self.device))

    def bmu(self, X):
        """(BMU index int64 [N], Euclidean distance to its prototype float32 [N]) for every sample."""
        idx, d2 = self._best(X)
        return idx[:, 0].cpu().numpy(), d2[:, 0].sqrt().cpu().numpy()

    def transform(self, X) -> np.ndarray:
        """BMU index of every sample, int64 [N] (node k = row * cols + col)."""
        return self.bmu(X)[0]

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)


def _constant(value, t, max_iter):
    """MiniSom learning-rate 'decay' that keeps it fixed (1 = the pure batch update)."""
    return value


def _minisom_sigma(sigma, t, max_iter, sigma_end):
    """MiniSom σ-decay callback following our schedule (MiniSom passes the epoch as t when trained by epochs)."""
    return sigma_at(t, max_iter, sigma, sigma_end)


def _from_minisom(weights: np.ndarray) -> np.ndarray:
    """MiniSom weights [cols, rows counted from the bottom, dim] -> ours [K, dim] with k = row * cols + col."""
    return np.ascontiguousarray(weights.transpose(1, 0, 2)[::-1].reshape(-1, weights.shape[2]), dtype=np.float32)


# ------------------------------------------------------------------------------------------------ DESOM SOM layer
class SOMLayer(_MapQuality, torch.nn.Module):
    """The SOM layer of DESOM (Forest et al. 2019): prototypes [K, latent_dim] trained by gradient descent.

    Total DESOM loss = reconstruction MSE + γ · som_loss(z, σ), σ annealed with `sigma_at` over the iterations.
    Prototypes start as small random values (torch's global seed); `initialize(z)` lays them on the latent codes'
    principal plane instead, which orders the map from the first step.
    """

    def __init__(self, rows: int, cols: int, latent_dim: int, topology: str = "rectangular"):
        super().__init__()
        _check_grid(rows, cols, topology)
        self.rows, self.cols, self.topology = rows, cols, topology
        self.prototypes = torch.nn.Parameter(0.1 * torch.randn(rows * cols, latent_dim))
        # Derived from (rows, cols, topology): moved with .to(device) but not saved in the state dict.
        self.register_buffer("grid_sq", grid_squared_distances(rows, cols, topology), persistent=False)

    @torch.no_grad()
    def initialize(self, z, init: str = "pca", seed: int = 0) -> "SOMLayer":
        """Set the prototypes from latent codes z [N, latent_dim] ("pca" plane or "random" samples)."""
        z = _as_samples(z, "z", self.prototypes.shape[1])
        self.prototypes.copy_(initial_prototypes(z, self.rows, self.cols, self.topology, init, seed))
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances [N, K] from every latent code to every prototype (differentiable in both)."""
        return squared_distances(z, self.prototypes)

    @torch.no_grad()
    def bmu(self, z) -> torch.Tensor:
        """BMU index of every latent code, LongTensor [N]."""
        return self._best(z)[0][:, 0]

    def som_loss(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        """Mean over samples of Σ_k h(bmu(z), k; σ) |z − w_k|²; the BMU is a fixed choice, not differentiated."""
        d2 = self(z)
        bmu = d2.detach().argmin(dim=1)
        return (neighbourhood(self.grid_sq[bmu], sigma) * d2).sum(dim=1).mean()

    def _codebook(self) -> torch.Tensor:
        return self.prototypes.detach()
