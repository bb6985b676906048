"""Physics-preserving augmentations of cube maps for contrastive learning (seed 000).

A cube map is ``[C, H, W]``: the first ``C - 1`` channels are PCA coefficients of normalised spaxel spectra,
the last one is the spaxel luminosity (precompute.cube_maps); spaxels with no data are 0 in every channel.
Each augmentation mimics a way the same galaxy could have been observed differently, so an embedding trained to
ignore them keeps only the galaxy's physics:

- noise to a uniform S/N drawn in ``snr_range`` (a shallower exposure): every spaxel ends at that S/N whatever
  its own, so a galaxy's original depth cannot identify it,
- flips and 90° rotations (orientation on the sky carries no physics),
- translation within ``max_shift`` spaxels (pointing / centring),
- Gaussian blur of ``blur_sigma`` spaxels (seeing) or resizing through a ``k × k`` binning (coarser spaxels),
- foreground stars: small discs masked and filled with sky-level noise, as pipelines mask them,
- the luminosity scaled by up to ±``luminosity_dex`` (distance and flux-calibration uncertainty), so that the
  embedding is organised by what the spectra say rather than by brightness alone.

The noise of every spaxel (its 1σ per spectral pixel, i.e. 1 / S/N) travels with the maps as a variance
channel, so that blurring and binning, which average noise down, are accounted for before noise is added.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class CubeAugmenter:
    """Draw a random observing setup per galaxy and apply it: ``views = augmenter(maps, noise, generator)``.

    ``maps`` is a float tensor ``[B, C, H, W]`` in raw units (PCA coefficients of spectra normalised to mean 1,
    luminosity last), ``noise`` ``[B, H, W]`` each spaxel's 1σ per spectral pixel. Probabilities ``p_*`` say how
    often each augmentation is applied; flips/rotations and translations always are. ``sky_sigma`` is the noise
    in masked star discs, in the units of the PCA coefficients.
    """

    def __init__(self, snr_range: tuple[float, float] = (1.0, 10.0), p_noise: float = 0.8,
                 blur_sigma: float = 1.0, p_blur: float = 0.3, resize_kernels: tuple[int, int] = (2, 5),
                 p_resize: float = 0.3, max_shift: int = 3, p_stars: float = 0.3, max_stars: int = 3,
                 star_radius: tuple[float, float] = (1.0, 2.5), sky_sigma: float = 0.1,
                 luminosity_dex: float = 0.3):
        if not 0 < snr_range[0] <= snr_range[1]:
            raise ValueError(f"snr_range must be positive and increasing, got {snr_range}")
        if not 2 <= resize_kernels[0] <= resize_kernels[1]:
            raise ValueError(f"resize_kernels must be >= 2 and increasing, got {resize_kernels}")
        self.snr_range, self.p_noise = tuple(snr_range), p_noise
        self.blur_sigma, self.p_blur = blur_sigma, p_blur
        self.resize_kernels, self.p_resize = tuple(resize_kernels), p_resize
        self.max_shift = max_shift
        self.p_stars, self.max_stars, self.star_radius, self.sky_sigma = p_stars, max_stars, tuple(star_radius), sky_sigma
        self.luminosity_dex = luminosity_dex

    def __call__(self, maps: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copies of ``maps``; random draws come from ``generator`` (CPU), so runs are reproducible."""
        b = len(maps)
        x = torch.cat([maps, noise.unsqueeze(1) ** 2], dim=1)  # variance rides along as the last channel
        turns, flips = torch.randint(0, 4, (b,), generator=generator), torch.randint(0, 2, (b,), generator=generator)
        x = torch.stack([rotate_flip(m, int(k), bool(f)) for m, k, f in zip(x, turns, flips)])
        shifts = torch.randint(-self.max_shift, self.max_shift + 1, (b, 2), generator=generator)
        x = translate(x, shifts[:, 0], shifts[:, 1])
        blur = _coins(b, self.p_blur, generator)
        if blur.any():
            x[blur] = gaussian_blur(x[blur], self.blur_sigma)
        kernels = torch.randint(self.resize_kernels[0], self.resize_kernels[1] + 1, (b,), generator=generator)
        kernels[~_coins(b, self.p_resize, generator)] = 1
        for k in kernels.unique().tolist():
            if k > 1:
                x[kernels == k] = resize_through(x[kernels == k], k)
        n_stars = torch.randint(1, self.max_stars + 1, (b,), generator=generator)
        n_stars[~_coins(b, self.p_stars, generator)] = 0
        if n_stars.any():
            x = foreground_stars(x, n_stars, self.star_radius, self.sky_sigma, generator)
        snr = self.snr_range[0] + (self.snr_range[1] - self.snr_range[0]) * torch.rand(b, generator=generator)
        snr[~_coins(b, self.p_noise, generator)] = torch.inf
        x = uniform_snr_noise(x, snr, generator)[:, :-1]
        dex = self.luminosity_dex * (2 * torch.rand(b, generator=generator) - 1)
        x[:, -1] *= (10.0**dex).to(x.device).view(b, 1, 1)
        return x


def uniform_snr_noise(x: torch.Tensor, snr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bring every spaxel of galaxy ``i`` to signal-to-noise ``snr[i]`` per spectral pixel (where it is better).

    ``x`` is maps with the variance channel last. Spectra are normalised to mean 1, so the target is 1σ = 1/snr per
    pixel; white noise projected on unit-norm PCA components stays white with the same σ, so the coefficients get
    Gaussian noise of variance 1/snr² − (their variance). The luminosity, a mean over the normalisation window's
    many pixels, is left as is. Empty spaxels stay empty; ``snr = inf`` adds nothing.
    """
    target = (1.0 / snr.to(x.device) ** 2).view(-1, 1, 1, 1)
    variance = x[:, -1:]
    extra = (target - variance).clamp_min(0.0) * _footprint(x)
    out = x.clone()
    out[:, :-2] += torch.randn(x[:, :-2].shape, generator=generator).to(x.device) * extra.sqrt()
    out[:, -1:] = variance + extra
    return out


def rotate_flip(maps: torch.Tensor, quarter_turns: int, flip: bool) -> torch.Tensor:
    """One of the 8 symmetries of the square pixel grid (exact: no interpolation)."""
    maps = torch.rot90(maps, quarter_turns, dims=(-2, -1))
    return torch.flip(maps, dims=(-1,)) if flip else maps


def translate(maps: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Shift galaxy ``i`` by ``(dy[i], dx[i])`` whole spaxels; what leaves the grid is lost, what enters is empty."""
    b, _, h, w = maps.shape
    pad = int(max(dy.abs().max(), dx.abs().max()))
    padded = F.pad(maps, (pad, pad, pad, pad))
    rows = (pad - dy).view(b, 1) + torch.arange(h)  # output row r reads padded row r + pad - dy
    cols = (pad - dx).view(b, 1) + torch.arange(w)
    picked = padded[torch.arange(b).view(b, 1, 1), :, rows.view(b, h, 1), cols.view(b, 1, w)]  # [B, H, W, C]
    return picked.permute(0, 3, 1, 2).contiguous()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Convolve with a normalised Gaussian of ``sigma`` spaxels (worse seeing); ``x`` has the variance channel
    last, which goes through the squared kernel (the variance of a weighted sum of independent spaxels)."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    return torch.cat([_separable(x[:, :-1], kernel), _separable(x[:, -1:], kernel**2)], dim=1)


def _separable(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c, radius = maps.shape[1], len(kernel) // 2
    out = F.conv2d(maps, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), padding=(0, radius), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), padding=(radius, 0), groups=c)


def resize_through(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Average ``kernel × kernel`` blocks of spaxels and expand back: the same galaxy seen with coarser spaxels.

    Empty spaxels do not dilute the block mean of the ones with data (so the galaxy edge keeps its values); the
    variance channel (last) becomes that of the block mean, the mean variance over the number averaged.
    """
    h, w = x.shape[-2:]
    footprint = _footprint(x).to(x.dtype)
    total = F.avg_pool2d(x * footprint, kernel, ceil_mode=True)
    filled = F.avg_pool2d(footprint, kernel, ceil_mode=True)
    coarse = torch.where(filled > 0, total / filled.clamp_min(1e-12), torch.zeros_like(total))
    count = F.avg_pool2d(footprint, kernel, ceil_mode=True, divisor_override=1)  # spaxels with data per block
    coarse[:, -1:] = coarse[:, -1:] / count.clamp_min(1.0)
    return F.interpolate(coarse, scale_factor=kernel, mode="nearest")[..., :h, :w]


def foreground_stars(x: torch.Tensor, n_stars: torch.Tensor, radius: tuple[float, float], sky_sigma: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Mask ``n_stars[i]`` discs centred on spaxels with data in galaxy ``i`` and fill them with sky-level noise
    (mean 0, σ = ``sky_sigma``; the luminosity gets none); the variance channel (last) there becomes sky_sigma²."""
    b, c, h, w = x.shape
    occupied = _footprint(x)[:, 0].flatten(1).cpu()  # [B, H*W]
    most = int(n_stars.max())
    # Star centres: random spaxels with data (weights 0 elsewhere); radii uniform in the given range
    weights = occupied.float() + 1e-12 * (~occupied.any(dim=1, keepdim=True))
    centres = torch.multinomial(weights, most, replacement=True, generator=generator)  # [B, most]
    r = radius[0] + (radius[1] - radius[0]) * torch.rand(b, most, generator=generator)
    used = (torch.arange(most).view(1, -1) < n_stars.view(-1, 1)).view(b, most, 1, 1)  # galaxy i has n_stars[i]
    yy, xx = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
    cy, cx = (centres // w).view(b, most, 1, 1), (centres % w).view(b, most, 1, 1)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r.view(b, most, 1, 1) ** 2
    masked = (inside & used).any(dim=1, keepdim=True)
    sky = sky_sigma * torch.randn(x.shape, generator=generator)
    sky[:, -2] = 0.0
    sky[:, -1] = sky_sigma**2
    return torch.where(masked.to(x.device), sky.to(x.device), x)


def _footprint(maps: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` True where a spaxel has data (any channel non-zero)."""
    return (maps != 0).any(dim=1, keepdim=True)


def _coins(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """n independent draws that are True with probability p."""
    return torch.rand(n, generator=generator) < p
