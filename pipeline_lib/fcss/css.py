"""The convolutional self-similarity (CSS) layer of Kim et al. (CVPR 2017), Sec. 3.2-3.3.

For activations ``A`` (B, C, h, w) of one backbone level, each of ``P`` learned sampling patterns
``(s_p, t_p)`` (two 2D offsets, in cells of that level's map) gives one self-similarity channel

    S_p(x) = || A(x + s_p) - A(x + t_p) ||^2                 (Kim et al. Eq. 5)
    D_p(x) = max_{y in N(x)} exp(-S_p(y) / lambda)           (Kim et al. Eq. 11)

followed by L2 normalisation over the ``P`` channels of each cell. The shifts are network
parameters applied with a bilinear "shifting transformer", so the loss reaches them through the
spatial derivative of ``A`` (Kim et al. Eq. 6-8; here autograd through ``grid_sample`` gives the
bilinear version of that derivative). Before the CSS layer the activations are L2-normalised per
cell ("Before each CSS layer, convolutional activations are normalized with a L2 norm", Sec. 4.1).

Invariances that follow from the formula (and are tested):

- without the input normalisation, ``S`` only sees differences of ``A``, so adding a constant
  (per channel, the same at every cell) to ``A`` leaves the output unchanged; with border padding
  this holds at the image border too;
- with the input normalisation, scaling ``A`` by any positive factor per cell leaves it unchanged;
- neither holds for a brightness change of the *image*: a backbone with ReLU/BN/swish is not
  affine in its input, so only the feature-level claims are made.

Sampling outside the map reads the nearest border cell (``padding_mode="border"``), so a constant
offset of ``A`` stays a constant offset of every sample.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# Kim et al. Sec. 4.1: "the number of sampling patterns is set to 64" per CSS layer (L = 3 x 64 = 192).
N_PATTERNS = 64
# Not in the paper; authors' release (seungryong/FCSS, init_model/init_FCSS.m) sets the gating
# bandwidth lambda = 0.5 at every level (and does not update it: learningRate 0).
LAMBDA_INIT = 0.5
# Not in the paper ("initializing the shifting transform with randomly selected sampling patterns",
# Sec. 3.4); the authors' release draws every shift coordinate from N(0, sigma^2) with sigma = 9, 7
# and 5 cells for conv2-2, conv3-2 and conv3-4 (init_FCSS.m). One level's default is the middle value.
INIT_SHIFT_STD_CELLS = 7.0
# Not in the paper (the window N_i of Eq. 11 has no size); the release uses a 2x2 max pool with stride
# 1. We use the smallest odd window, 3x3, so the pooled map stays centred on the same cells.
POOL_SIZE = 3


def shift_grid(h: int, w: int, offsets: torch.Tensor) -> torch.Tensor:
    """Sampling grid for ``grid_sample(align_corners=False)``: every cell moved by every offset.

    offsets: (P, 2) xy in cells -> grid (P*h, w, 2) in [-1, 1] units (pattern-major rows), i.e. the
    sample of pattern p at cell (i, j) is read at xy = (j + dx_p, i + dy_p) cell coordinates.
    """
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(f"shift_grid: offsets must be (P, 2), got {tuple(offsets.shape)}")
    ys = torch.arange(h, device=offsets.device, dtype=offsets.dtype)
    xs = torch.arange(w, device=offsets.device, dtype=offsets.dtype)
    gx = (xs[None, None, :] + offsets[:, 0, None, None] + 0.5) * (2.0 / w) - 1.0  # (P, 1, w)
    gy = (ys[None, :, None] + offsets[:, 1, None, None] + 0.5) * (2.0 / h) - 1.0  # (P, h, 1)
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (P, h, w, 2)
    return grid.reshape(-1, w, 2)


def shifted(feat: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Shifting transformer (Kim et al. Eq. 4): (B, C, h, w), (P, 2) -> (B, C, P, h, w) with
    out[b, :, p, i, j] = feat[b, :, i + dy_p, j + dx_p], bilinear, border-clamped."""
    b, c, h, w = feat.shape
    grid = shift_grid(h, w, offsets.to(feat.dtype)).expand(b, -1, -1, -1)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(b, c, offsets.shape[0], h, w)


def self_similarity(feat: torch.Tensor, src_offsets: torch.Tensor, trg_offsets: torch.Tensor) -> torch.Tensor:
    """Convolutional self-similarity (Kim et al. Eq. 5): (B, C, h, w) -> (B, P, h, w) squared distances
    ``||A(x + s_p) - A(x + t_p)||^2`` for the P offset pairs (src_offsets, trg_offsets: (P, 2) xy cells)."""
    if feat.ndim != 4:
        raise ValueError(f"self_similarity: feat must be (B, C, h, w), got {tuple(feat.shape)}")
    if src_offsets.shape != trg_offsets.shape:
        raise ValueError(f"self_similarity: offset shapes differ: {tuple(src_offsets.shape)} vs "
                         f"{tuple(trg_offsets.shape)}")
    p = src_offsets.shape[0]
    both = shifted(feat, torch.cat([src_offsets, trg_offsets], 0))  # one sampler call for both streams
    return (both[:, :, :p] - both[:, :, p:]).pow(2).sum(1)


class CSSLayer(nn.Module):
    """One CSS level: [input L2 norm] -> learned shift pairs -> exp gating -> max pool -> L2 norm.

    Parameters
    ----------
    n_patterns : number P of sampling patterns (output channels); Kim et al.: 64.
    init_shift_std_cells : std of the random initial shifts, in cells of this level's map.
    lambda_init : initial gating bandwidth (learned, kept positive through a log parameter).
    pool_size : odd side of the max-pooling window N_i (stride 1).
    normalise_input : L2-normalise the activations per cell first (Kim et al. Sec. 4.1).
    generator : torch.Generator for the initial shifts (reproducible initialisation).

    forward(feat (B, C, h, w), out_hw=None) -> (B, P, h', w'): computed at (h, w), then bilinearly
    upsampled to ``out_hw`` when given (Kim et al. Sec. 3.3), then L2-normalised per cell. The order
    gate -> pool -> upsample -> normalise is the authors' release (init_FCSS.m); the paper's text
    upsamples right after the CSS layer, which costs the gating and pooling at the finer grid.
    """

    def __init__(self, n_patterns: int = N_PATTERNS, init_shift_std_cells: float = INIT_SHIFT_STD_CELLS,
                 lambda_init: float = LAMBDA_INIT, pool_size: int = POOL_SIZE, normalise_input: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        if n_patterns < 1:
            raise ValueError(f"CSSLayer: n_patterns must be >= 1, got {n_patterns}")
        if pool_size < 1 or pool_size % 2 == 0:
            raise ValueError(f"CSSLayer: pool_size must be a positive odd number (centred window), got {pool_size}")
        if not lambda_init > 0:
            raise ValueError(f"CSSLayer: lambda_init must be > 0, got {lambda_init}")
        self.n_patterns = n_patterns
        self.pool_size = pool_size
        self.normalise_input = normalise_input
        init = torch.randn(2, n_patterns, 2, generator=generator) * init_shift_std_cells
        self.src_offsets = nn.Parameter(init[0])  # W_s, (P, 2) xy cells
        self.trg_offsets = nn.Parameter(init[1])  # W_t, (P, 2) xy cells
        self.log_lambda = nn.Parameter(torch.tensor(math.log(lambda_init)))  # W_lambda = exp(log_lambda) > 0

    @property
    def bandwidth(self) -> torch.Tensor:
        return self.log_lambda.exp()

    def forward(self, feat: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
        if feat.ndim != 4:
            raise ValueError(f"CSSLayer: feat must be (B, C, h, w), got {tuple(feat.shape)}")
        if self.normalise_input:
            feat = F.normalize(feat, dim=1)
        dist = self_similarity(feat, self.src_offsets, self.trg_offsets)
        gated = torch.exp(-dist / self.bandwidth)  # Kim et al. Eq. 11, non-linear gating
        pooled = F.max_pool2d(gated, self.pool_size, stride=1, padding=self.pool_size // 2)
        if out_hw is not None and tuple(out_hw) != tuple(pooled.shape[-2:]):
            pooled = F.interpolate(pooled, size=tuple(out_hw), mode="bilinear", align_corners=False)
        return F.normalize(pooled, dim=1)

    def extra_repr(self) -> str:
        return f"n_patterns={self.n_patterns}, pool_size={self.pool_size}, normalise_input={self.normalise_input}"
