"""The minibatch loop the cube and image autoencoders share: shuffle, step on each batch's loss, record the epoch."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm


def train_epochs(network: torch.nn.Module, optimiser: torch.optim.Optimizer, n: int, batch_size: int, epochs: int,
                 batch_loss: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator,
                 desc: str, progress: bool = True, per_epoch: int | None = None) -> list[float]:
    """Train for ``epochs`` passes over ``n`` examples in a new random order each pass (drawn from ``generator``, so
    runs repeat); ``batch_loss(index)`` is the loss of the examples ``index``. Returns the mean loss of each epoch.
    With ``per_epoch`` an epoch takes only the first ``per_epoch`` examples of its order, a new random subset each
    time: the cost of an epoch stays bounded however many examples there are (with ``n <= per_epoch`` the same
    passes as without it)."""
    history = []
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        network.train()
        order, losses = torch.randperm(n, generator=generator)[:per_epoch], []
        for start in range(0, len(order), batch_size):
            loss = batch_loss(order[start:start + batch_size])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
    return history
