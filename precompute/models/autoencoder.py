"""Convolutional autoencoders for DESOM: 1-D on spectra (DESOM-1), 2-D on fingerprint images (DESOM-2).

One class serves both: a stack of conv blocks (convolution, max-pool by 2, leaky ReLU) down to a dense latent
vector, and the mirrored decoder (dense, then transposed convolutions that double the length). Inputs are padded to
a multiple of 2^n_blocks and the output is cropped back, so any spectrum length or map size works.

Beside the convolutional paths runs a linear one (input -> latent -> output, one matrix each way) that DESOM
starts at the PCA of the training data, with the convolutional paths starting at zero: the autoencoder begins as
PCA at the same width and training adds only what the nonlinear paths improve. Without it a light network needs
many more epochs than a CPU build can afford just to catch up with PCA (emission-line strengths, linear in the
flux, dominate the squared error).

Inputs are centred on the training mean and divided by one global scale before encoding (and the decoder's output
is mapped back), so the network learns only the variations between spectra, as PCA does.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    """Autoencoder on 1-D (``[N, n_wave]``) or 2-D (``[N, rows, cols]``) inputs with a ``latent_dim`` code.

    ``channels`` are the feature maps of the encoder blocks (the decoder mirrors them); ``kernel_size`` is odd.
    ``encode(x) -> z [N, latent_dim]``, ``decode(z) -> x̂`` (input shape), ``forward(x) -> (x̂, z)``.
    """

    def __init__(self, input_shape: tuple[int, ...], latent_dim: int = 256, channels: tuple[int, ...] = (8, 16, 32, 32),
                 kernel_size: int = 5):
        super().__init__()
        if len(input_shape) not in (1, 2):
            raise ValueError(f"input_shape must be (n_wave,) or (rows, cols), got {input_shape}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-length convolutions), got {kernel_size}")
        self.config = {"input_shape": tuple(int(n) for n in input_shape), "latent_dim": int(latent_dim),
                       "channels": tuple(int(c) for c in channels), "kernel_size": int(kernel_size)}
        self.input_shape = self.config["input_shape"]
        dims = len(input_shape)
        conv, deconv, pool = (
            (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d)
        )
        factor = 2 ** len(channels)
        self.padded_shape = tuple(math.ceil(n / factor) * factor for n in input_shape)
        self.code_shape = (channels[-1], *(n // factor for n in self.padded_shape))

        blocks, c_in = [], 1
        for c_out in channels:
            # Leaky ReLU trains several times faster here than ReLU (no dead units in these thin layers);
            # pooling first gives the same result (both monotone) with half the elementwise work.
            blocks += [conv(c_in, c_out, kernel_size, padding=kernel_size // 2), pool(2), nn.LeakyReLU(0.1, inplace=True)]
            c_in = c_out
        self.encoder = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(math.prod(self.code_shape), latent_dim))
        n_inputs = math.prod(self.input_shape)
        self.encoder_linear = nn.Linear(n_inputs, latent_dim, bias=False)
        self.latent_norm = LatentScale()

        # Mirror: dense back to the last feature maps, then transposed convolutions (kernel 4, stride 2: exact x2).
        blocks = [nn.Linear(latent_dim, math.prod(self.code_shape)), nn.LeakyReLU(0.1), nn.Unflatten(1, self.code_shape)]
        widths = list(reversed(channels))[1:] + [1]
        c_in = channels[-1]
        for i, c_out in enumerate(widths):
            blocks.append(deconv(c_in, c_out, 4, stride=2, padding=1))
            if i < len(widths) - 1:  # linear output: normalised flux can be any real number
                blocks.append(nn.LeakyReLU(0.1))
            c_in = c_out
        self.decoder = nn.Sequential(*blocks)
        self.decoder_linear = nn.Linear(latent_dim, n_inputs, bias=False)
        self.register_buffer("offset", torch.zeros(self.input_shape))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def start_from_pca(self, components: torch.Tensor, score_std: torch.Tensor) -> "ConvAutoencoder":
        """Linear paths = PCA (components [m, n_inputs] of the normalised inputs, m <= latent_dim, and the
        standard deviation of their scores [m]); convolutional paths silent until training wakes them."""
        m = components.shape[0]
        # One scale for all components (codes of unit mean square), not one each: whitening would give the
        # weakest, noisiest components as much say in the SOM's distances as the leading ones.
        rms = score_std.pow(2).mean().sqrt().clamp_min(1e-12)
        self.encoder_linear.weight[:m] = components / rms
        self.decoder_linear.weight[:, :m] = components.T * rms
        self.encoder_linear.weight[m:] = 0.0
        self.decoder_linear.weight[:, m:] = 0.0
        for layer in (self.encoder[-1], self.decoder[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        return self

    @torch.no_grad()
    def set_normalisation(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> "ConvAutoencoder":
        """Centre on the (masked) mean input of x and scale by the RMS of the centred good pixels."""
        mask = torch.ones_like(x) if mask is None else mask
        weight = mask.sum(0)
        offset = (mask * x).sum(0) / weight.clamp_min(1.0)
        # Pixels never good in training keep the mean of their neighbours' level rather than 0.
        offset = torch.where(weight > 0, offset, offset[weight > 0].mean() if (weight > 0).any() else 0.0)
        rms = ((mask * (x - offset).pow(2)).sum() / mask.sum().clamp_min(1.0)).sqrt()
        self.offset.copy_(offset)
        self.scale.copy_(rms.clamp_min(1e-12))
        return self

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n, padded in zip(reversed(self.input_shape), reversed(self.padded_shape)):
            pads += [0, padded - n]
        return nn.functional.pad(x, pads, mode="replicate") if any(pads) else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"autoencoder expects inputs of shape [N, {self.input_shape}], got {tuple(x.shape)}")
        h = (x - self.offset) / self.scale
        return self.latent_norm(self.encoder(self._pad(h.unsqueeze(1))) + self.encoder_linear(h.flatten(1)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z).squeeze(1)
        out = out[:, : self.input_shape[0]] if len(self.input_shape) == 1 else out[:, : self.input_shape[0], : self.input_shape[1]]
        return self.offset + self.scale * (out + self.decoder_linear(z).view(-1, *self.input_shape))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z


class LatentScale(nn.Module):
    """Divide latent codes by their root mean square over the batch and all dimensions (a running value when
    evaluating), like batch norm with one shared scale and no centring.

    DESOM's SOM loss could otherwise be lowered by shrinking every code towards one point, which collapses the
    map; one shared scale pins the size of the latent cloud but keeps its shape (the relative variance of the
    directions), so distances on the map still follow the strongest variations between inputs.
    """

    def __init__(self, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_rms", torch.ones(()))

    def reset_parameters(self) -> None:
        self.running_rms.fill_(1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return z / self.running_rms
        rms = z.pow(2).mean().sqrt().clamp_min(1e-12)
        with torch.no_grad():
            self.running_rms.lerp_(rms, self.momentum)
        return z / rms


def spectrum_autoencoder(n_wave: int, latent_dim: int = 256, channels=(8, 16, 32, 32), kernel_size: int = 5) -> ConvAutoencoder:
    """DESOM-1 autoencoder (seed 001): 4 conv blocks with pooling down to the latent, mirrored decoder."""
    return ConvAutoencoder((n_wave,), latent_dim, tuple(channels), kernel_size)


def fingerprint_autoencoder(rows: int, cols: int, latent_dim: int = 32, channels=(16, 32), kernel_size: int = 3) -> ConvAutoencoder:
    """DESOM-2 autoencoder on the DESOM-1 fingerprint images (rows x cols of DESOM-1)."""
    return ConvAutoencoder((rows, cols), latent_dim, tuple(channels), kernel_size)
