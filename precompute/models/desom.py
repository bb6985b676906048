"""DESOM: a convolutional autoencoder and a SOM on its latent space, trained jointly (Forest et al. 2019, ESANN).

Seed 001 (Teimoorinia et al. 2022) maps binned MaNGA spectra with it (DESOM-1, 15×15) and then the galaxies'
fingerprints (DESOM-2, 10×10). The loss is the masked reconstruction MSE plus γ times the SOM loss
Σ_k h(bmu, k; σ) |z − w_k|² (normalised per latent dimension and neighbourhood weight, see `_som_loss`) with σ
annealed over the iterations; the same loop trains both autoencoders.

Training: the autoencoder's linear paths start at the PCA of the training inputs (`pca_start`), optional
pre-training of the autoencoder alone, SOM prototypes laid on the principal plane of the latent codes, then joint
training with early stopping on a validation split (the best epoch is kept). Inputs larger than memory are given as
`StreamedRows` (rows of a file read a mini-batch at a time): the normalisation, the PCA start and the SOM's
initial prototypes then come from a sample of `FIT_SAMPLE` training inputs, and nothing else is held.
"""
from __future__ import annotations

import copy
import functools
import io
import pickle
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from precompute.device import resolve_device
from precompute.models.autoencoder import ConvAutoencoder
from precompute.models.som import SOMLayer, neighbourhood, sigma_at

FIT_SAMPLE = 20_000  # streamed inputs: training inputs held at once for the statistics that start the fit


class StreamedRows:
    """Inputs that stay on disk: rows `index` of `values` (e.g. `precompute.rows.NpyRows` of a survey's flux) with
    the good-pixel mask `weights[rows] > 0` (e.g. the ivar), read one mini-batch at a time by `DESOM.fit`."""

    def __init__(self, values, weights=None, index=None):
        self.values, self.weights = values, weights
        self.index = np.arange(len(values)) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def read(self, positions) -> tuple[np.ndarray, np.ndarray | None]:
        rows = self.index[np.asarray(positions)]
        return self.values[rows], None if self.weights is None else self.weights[rows] > 0


def _with_threads(method):
    """Run a DESOM method with the model's `threads` intra-op CPU threads, restoring torch's setting after."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(previous)
    return wrapper


def masked_mse(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared residual over good pixels only (mask 1 = good, 0 = bad); 0 when a batch has none."""
    return (mask * (x - x_hat).pow(2)).sum() / mask.sum().clamp_min(1.0)


class DESOM:
    """Deep embedded self-organizing map, scikit-learn style.

    `autoencoder` is a ConvAutoencoder (spectra ``[N, n_wave]`` or fingerprints ``[N, rows, cols]``); `fit` trains a
    copy of it from fresh weights drawn with `seed`, so a fit depends only on (data, parameters).

    `threads`: intra-op CPU threads while fitting and encoding (None = torch's setting). The thin layers gain
    little from more than one, and on a shared machine a busy core stalls every operation of a multi-threaded
    step (measured: 2 threads 12x slower than 1 on a loaded 2-core machine).

    Fitted attributes: autoencoder_, som_ (SOMLayer), prototypes_ (latent [K, latent_dim]), history_ (one dict per
    epoch: phase, sigma, train/val loss and MSE), best_epoch_, n_epochs_ (joint epochs run), seconds_.
    """

    def __init__(self, autoencoder: ConvAutoencoder, rows: int = 15, cols: int = 15, topology: str = "rectangular",
                 gamma: float = 5e-4, sigma_start: float | None = None, sigma_end: float = 0.5,
                 sigma_schedule: str = "exponential", pretrain_epochs: int = 3, n_epochs: int = 10,
                 batch_size: int = 256, learning_rate: float = 1e-3, patience: int = 3,
                 validation_fraction: float = 0.1, som_init: str = "pca", pca_start: bool = True, seed: int = 0,
                 device: str = "auto", threads: int | None = 1,
                 checkpoint: str | Path | None = None, verbose: bool = True):
        self.autoencoder = autoencoder
        self.rows = rows
        self.cols = cols
        self.topology = topology
        self.gamma = gamma
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.sigma_schedule = sigma_schedule
        self.pretrain_epochs = pretrain_epochs
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.som_init = som_init
        self.pca_start = pca_start
        self.seed = seed
        self.device = device
        self.threads = threads
        self.checkpoint = checkpoint
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------------- training
    @_with_threads
    def fit(self, X, mask=None) -> "DESOM":
        """Train on X (spectra [N, n_wave] or images [N, rows, cols], or `StreamedRows` of them); mask (same
        shape, 1 = good) drops pixels from the reconstruction loss, e.g. ``ivar > 0`` for spectra."""
        streamed = isinstance(X, StreamedRows)
        if not streamed:
            X, mask = self._inputs(X, mask)
            if mask is None:
                mask = torch.ones(X.shape, dtype=torch.bool)
        n = len(X)
        if n < 2:
            raise ValueError(f"DESOM needs at least 2 samples to train, got {n}")
        if not (isinstance(self.n_epochs, int) and self.n_epochs >= 1):
            raise ValueError(f"n_epochs must be an integer >= 1, got {self.n_epochs!r}")
        start = time.perf_counter()
        device = resolve_device(self.device)
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        # Early stopping watches a random validation split of the training samples.
        order = torch.randperm(n, generator=generator)
        n_val = int(round(self.validation_fraction * n)) if self.validation_fraction else 0
        n_val = min(max(n_val, 1 if self.validation_fraction else 0), n - 1)
        val, train = order[:n_val], order[n_val:]

        self.autoencoder_ = copy.deepcopy(self.autoencoder)
        for module in self.autoencoder_.modules():  # fresh weights from `seed`, whatever the template saw
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if streamed:  # the starting statistics from a sample: memory independent of the number of inputs
            if len(train) > FIT_SAMPLE:
                sample = train[torch.randperm(len(train), generator=generator)[:FIT_SAMPLE]]
            else:
                sample = train
            X_fit, mask_fit = self._read(X, sample)
            val = val[:FIT_SAMPLE]  # early stopping watches a fixed part of the held-back inputs
        else:
            X_fit, mask_fit = X[train], mask[train]
        self.autoencoder_.set_normalisation(X_fit, mask_fit.float())
        X_fit = self._impute(X_fit, mask_fit)
        if streamed:
            def rows(batch):
                x, m = self._read(X, batch)
                return self._impute(x, m), m
        else:
            X = self._impute(X, mask)

            def rows(batch):
                return X[batch], mask[batch]
        if self.pca_start:
            self.autoencoder_.start_from_pca(*self._principal_components(X_fit, generator))
        self.autoencoder_.to(device)
        latent_dim = self.autoencoder_.config["latent_dim"]
        self.som_ = SOMLayer(self.rows, self.cols, latent_dim, self.topology).to(device)

        self.history_ = []
        optimizer = torch.optim.Adam(self.autoencoder_.parameters(), lr=self.learning_rate)
        for epoch in self._progress(range(self.pretrain_epochs), "pre-training autoencoder"):
            self._epoch(rows, train, optimizer, generator, device, joint=False)
            self._record("pretrain", epoch, None, rows, train, val, device)

        self.som_.initialize(self._encode(X_fit, device), init=self.som_init, seed=self.seed)
        del X_fit, mask_fit
        optimizer = torch.optim.Adam([*self.autoencoder_.parameters(), *self.som_.parameters()], lr=self.learning_rate)
        n_steps = self.n_epochs * max(1, -(-len(train) // self.batch_size))
        sigma_start = self.sigma_start if self.sigma_start is not None else max(self.rows, self.cols) / 2
        schedule = functools.partial(sigma_at, n_steps=n_steps, sigma_start=sigma_start, sigma_end=self.sigma_end,
                                     schedule=self.sigma_schedule)

        best, best_loss, waited, step = None, float("inf"), 0, 0
        bar = self._progress(range(self.n_epochs), "training DESOM")
        for epoch in bar:
            step = self._epoch(rows, train, optimizer, generator, device, joint=True, schedule=schedule, step=step)
            record = self._record("joint", epoch, schedule(step - 1), rows, train, val, device)
            loss = record["val_loss"] if len(val) else record["train_loss"]
            bar.set_postfix(loss=f"{loss:.3g}", sigma=f"{record['sigma']:.2f}")
            if loss < best_loss:
                best_loss, waited, self.best_epoch_ = loss, 0, epoch
                best = self._state()
                if self.checkpoint:
                    self._save_state(best, self.checkpoint)
            else:
                waited += 1
                if waited >= self.patience:
                    break
        self.n_epochs_ = epoch + 1
        if best is None:
            raise RuntimeError(f"DESOM training diverged (loss {loss}); lower learning_rate (now {self.learning_rate})")
        self._load_state(best)
        self.seconds_ = time.perf_counter() - start
        return self

    def _principal_components(self, X: torch.Tensor, generator, max_samples: int = 20_000):
        """Leading principal axes [m, n_inputs] of the normalised inputs and the std of their scores [m]."""
        if X.shape[0] > max_samples:  # the axes need a fair sample, not every spectrum
            X = X[torch.randperm(X.shape[0], generator=generator)[:max_samples]]
        h = ((X - self.autoencoder_.offset) / self.autoencoder_.scale).flatten(1).double()
        h = h - h.mean(0)
        eigval, eigvec = torch.linalg.eigh(h.T @ h / max(h.shape[0] - 1, 1))
        m = min(self.autoencoder_.config["latent_dim"], h.shape[1], max(h.shape[0] - 1, 1))
        order = eigval.argsort(descending=True)[:m]
        return eigvec[:, order].T.float(), eigval[order].clamp_min(0).sqrt().float()

    def _epoch(self, rows, train, optimizer, generator, device, joint, schedule=None, step=0) -> int:
        """One pass over the training inputs in random mini-batches; `rows(batch)` gives (inputs, mask)."""
        self.autoencoder_.train()
        for batch in self._batches(train[torch.randperm(len(train), generator=generator)]):
            x, m = rows(batch)
            x, m = x.to(device, non_blocking=True), m.to(device, non_blocking=True).float()
            x_hat, z = self.autoencoder_(x)
            loss = masked_mse(x, x_hat, m)
            if joint:
                loss = loss + self.gamma * self._som_loss(z, schedule(step))
                step += 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    def _som_loss(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        """Forest et al.'s SOM loss per latent dimension and per unit of neighbourhood weight.

        Our codes have unit mean square, so the raw loss grows with the latent width and with σ (the neighbourhood
        sums over ~2πσ² nodes); normalised, γ weighs the map against the reconstruction the same way for any
        width and all along the σ schedule, and the early wide neighbourhoods do not swamp the reconstruction.
        """
        mass = neighbourhood(self.som_.grid_sq, sigma).sum(1).mean()
        return self.som_.som_loss(z, sigma) / (mass * z.shape[1])

    @torch.no_grad()
    def _losses(self, rows, index, device, sigma) -> tuple[float, float]:
        """(masked MSE, MSE + γ·SOM loss at σ) over the samples `index`, averaged per sample batch."""
        self.autoencoder_.eval()
        mse = total = 0.0
        for batch in self._batches(index, 4 * self.batch_size):
            x, m = rows(batch)
            x, m = x.to(device), m.to(device).float()
            x_hat, z = self.autoencoder_(x)
            batch_mse = float(masked_mse(x, x_hat, m))
            mse += batch_mse * len(batch)
            total += (batch_mse + (self.gamma * float(self._som_loss(z, sigma)) if sigma else 0.0)) * len(batch)
        n = max(len(index), 1)
        return mse / n, total / n

    def _record(self, phase, epoch, sigma, rows, train, val, device) -> dict:
        """Losses after an epoch. The SOM term is taken at the final σ whatever σ the epoch trained with: early
        stopping then compares every epoch's map as the finished map it would be, not a moving target (the raw
        loss falls with σ alone and would hide a stalled map, or stop while σ is still wide)."""
        sigma_final = self.sigma_end if sigma is not None else None
        # The training loss is measured on a fixed subsample: a full pass would double the epoch time.
        probe = train[: max(len(val), min(len(train), 2048))]
        train_mse, train_loss = self._losses(rows, probe, device, sigma_final)
        val_mse, val_loss = self._losses(rows, val, device, sigma_final) if len(val) else (float("nan"),) * 2
        record = {"phase": phase, "epoch": epoch, "sigma": sigma, "train_mse": train_mse, "train_loss": train_loss,
                  "val_mse": val_mse, "val_loss": val_loss}
        self.history_.append(record)
        return record

    def _batches(self, index: torch.Tensor, size: int | None = None):
        size = size or self.batch_size
        for start in range(0, len(index), size):
            yield index[start:start + size]

    def _progress(self, iterable, desc):
        return tqdm(iterable, desc=desc, disable=not self.verbose, leave=False)

    # --------------------------------------------------------------------------------------------- inference
    def _inputs(self, X, mask=None):
        """(X float32 tensor, mask bool tensor or None); copies X only when it is read-only or of another type."""
        X = torch.from_numpy(np.require(X, np.float32, ["C", "W"]))
        shape = self.autoencoder.config["input_shape"]
        if tuple(X.shape[1:]) != tuple(shape):
            raise ValueError(f"DESOM expects inputs of shape [N, {', '.join(map(str, shape))}], got {tuple(X.shape)}")
        if mask is not None:
            mask = torch.from_numpy(np.asarray(mask) != 0)
            if mask.shape != X.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} differs from the inputs' {tuple(X.shape)}")
        bad = ~torch.isfinite(X)
        if bad.any():
            if mask is None or (mask & bad).any():
                raise ValueError("inputs contain NaN/inf at pixels the mask does not mark as bad")
            X = torch.where(bad, torch.zeros_like(X), X)
        return X, mask

    def _read(self, X: StreamedRows, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs `positions` of streamed inputs, checked like in-memory ones, with their mask (all good if none)."""
        x, mask = self._inputs(*X.read(positions.numpy()))
        return x, torch.ones(x.shape, dtype=torch.bool) if mask is None else mask

    @torch.no_grad()
    def _encode(self, X: torch.Tensor, device, batch_size: int = 2048) -> torch.Tensor:
        self.autoencoder_.eval()
        parts = [self.autoencoder_.encode(X[i:i + batch_size].to(device)) for i in range(0, X.shape[0], batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.autoencoder_.config["latent_dim"], device=device)

    def _fitted(self):
        if not hasattr(self, "autoencoder_"):
            raise RuntimeError("this DESOM is not fitted yet: call fit(X) first (or DESOM.load(path))")
        return next(self.autoencoder_.parameters()).device

    def _impute(self, X: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Bad pixels take the training mean: whatever a reader left there (0, garbage) cannot move the code."""
        return X if mask is None else torch.where(mask, X, self.autoencoder_.offset.cpu())

    @_with_threads
    def encode(self, X, mask=None) -> np.ndarray:
        """Latent codes float32 [N, latent_dim]; mask (1 = good) as in `fit`."""
        device = self._fitted()
        X, mask = self._inputs(X, mask)
        return self._encode(self._impute(X, mask), device).cpu().numpy()

    @_with_threads
    @torch.no_grad()
    def decode(self, Z) -> np.ndarray:
        """Inputs (spectra or images) decoded from latent codes [N, latent_dim]."""
        device = self._fitted()
        self.autoencoder_.eval()
        Z = torch.as_tensor(np.asarray(Z, dtype=np.float32), device=device)
        parts = [self.autoencoder_.decode(Z[i:i + 2048]) for i in range(0, Z.shape[0], 2048)]
        return torch.cat(parts).cpu().numpy() if parts else np.zeros((0, *self.autoencoder_.input_shape), np.float32)

    def reconstruct(self, X, mask=None) -> np.ndarray:
        return self.decode(self.encode(X, mask))

    # Map measures take inputs (with their mask) or, with latent=True, latent codes from `encode`.
    def bmu(self, X, mask=None, latent: bool = False):
        """(BMU node int64 [N], latent distance to its prototype float32 [N])."""
        z = self._latent(X, mask, latent)
        idx, d2 = self.som_._best(z)
        return idx[:, 0].cpu().numpy(), d2[:, 0].sqrt().cpu().numpy()

    def transform(self, X, mask=None, latent: bool = False) -> np.ndarray:
        """BMU node of every input, int64 [N] (node k = row * cols + col)."""
        return self.bmu(X, mask, latent)[0]

    def fit_transform(self, X, mask=None) -> np.ndarray:
        return self.fit(X, mask).transform(X, mask)

    def quantization_error(self, X, mask=None, latent: bool = False) -> float:
        z = self._latent(X, mask, latent)
        return self.som_.quantization_error(z)

    def topographic_error(self, X, mask=None, latent: bool = False) -> float:
        z = self._latent(X, mask, latent)
        return self.som_.topographic_error(z)

    def hits(self, X, mask=None, latent: bool = False) -> np.ndarray:
        z = self._latent(X, mask, latent)
        return self.som_.hits(z)

    def umatrix(self) -> np.ndarray:
        self._fitted()
        return self.som_.umatrix()

    def _latent(self, X, mask, latent) -> torch.Tensor:
        self._fitted()
        return torch.as_tensor(np.asarray(X, np.float32) if latent else self.encode(X, mask))

    @property
    def prototypes_(self) -> np.ndarray:
        self._fitted()
        return self.som_.prototypes.detach().cpu().numpy()

    def decoded_prototypes(self) -> np.ndarray:
        """The prototypes decoded back to the input space: a template spectrum (or fingerprint) per node."""
        return self.decode(self.prototypes_)

    # ------------------------------------------------------------------------------------------- persistence
    def _state(self) -> dict:
        return {
            "autoencoder": {k: v.detach().cpu().clone() for k, v in self.autoencoder_.state_dict().items()},
            "som": {k: v.detach().cpu().clone() for k, v in self.som_.state_dict().items()},
        }

    def _load_state(self, state: dict) -> None:
        self.autoencoder_.load_state_dict(state["autoencoder"])
        self.som_.load_state_dict(state["som"])

    def _params(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()
                if k != "autoencoder" and not k.endswith("_")}

    def _save_state(self, state: dict, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"autoencoder_config": self.autoencoder.config, "params": self._params(), **state}, path)

    def to_bytes(self) -> bytes:
        """The fitted model as torch-saved bytes (what `DESOM.load` reads), for a bundle's model.pt."""
        self._fitted()
        buffer = io.BytesIO()
        torch.save({"autoencoder_config": self.autoencoder.config, "params": self._params(), **self._state(),
                    "history": self.history_, "best_epoch": self.best_epoch_, "n_epochs": self.n_epochs_}, buffer)
        return buffer.getvalue()

    def save(self, path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path, device: str = "cpu") -> "DESOM":
        """A fitted DESOM from `save` / `to_bytes` output (or a training checkpoint), on `device`."""
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
            raise ValueError(f"{path}: not a DESOM model file ({err})") from None
        if not (isinstance(saved, dict) and {"autoencoder_config", "params", "autoencoder", "som"} <= saved.keys()):
            raise ValueError(f"{path}: not a DESOM model file (missing autoencoder/SOM state)")
        config = saved["autoencoder_config"]
        autoencoder = ConvAutoencoder(tuple(config["input_shape"]), config["latent_dim"], tuple(config["channels"]),
                                      config["kernel_size"])
        params = dict(saved["params"], device=device)
        model = cls(autoencoder, **params)
        model.autoencoder_ = copy.deepcopy(autoencoder).to(resolve_device(device))
        model.som_ = SOMLayer(params["rows"], params["cols"], config["latent_dim"], params["topology"])
        model.som_.to(resolve_device(device))
        model._load_state(saved)
        model.history_ = saved.get("history", [])
        model.best_epoch_ = saved.get("best_epoch")
        model.n_epochs_ = saved.get("n_epochs")
        return model
