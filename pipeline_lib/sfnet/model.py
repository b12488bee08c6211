"""SFNet (Lee et al. 2019): adapted two-level features, L2-normalised correlation, kernel soft argmax.

Architecture (Lee et al. Sec. 3.1 and 4.1):

1. a frozen ImageNet backbone cut at two depths (paper: ResNet-101 conv4-23 and conv5-3, strides
   16 and 32). On another backbone :func:`pipeline_lib.backbones.layers_by_stride` takes the *last*
   layer of each of those strides from the measured layer table; on ``efficientnet_lite0`` that is ``block10`` (112 ch,
   stride 16) and ``block15`` (320 ch, stride 32). The names are arguments (``SFNetConfig.layers``);
2. one residual adaptation block per level, ``x + ReLU(BN(Conv_k(x)))`` with k = 5 on the
   stride-16 level and k = 3 on the stride-32 level; the coarse level is then upsampled bilinearly
   to the fine grid (Lee et al. footnote 2) and every feature is L2-normalised;
3. per level, the correlation ``c(p, q) = f_s(p) . f_t(q)`` (Eq. 1), clamped at 0, and the levels
   multiplied element-wise (Sec. 4.1). The clamp is our choice: without it two negative scores
   would multiply into a high one;
4. for every source cell p, the map ``c_p(.)`` over target cells is L2-normalised (``n_p``) and the
   kernel soft argmax (Eqs. 2-3) gives its sub-cell match ``phi(p)``; the same on the transposed
   correlation gives the target->source matches. The kernels (correlation, soft argmax, beta and
   sigma) are in :mod:`pipeline_lib.kernels`, shared with the Siamese network.

Coordinates. Matches and flows are (B, h, w, 2) xy tensors in *normalised* image coordinates of
``F.grid_sample(..., align_corners=False)``: -1 and +1 are the outer edges of the image, so a cell
j of a w-wide grid sits at ``(2j + 1) / w - 1`` and the same number means the same image point at
any resolution (see :mod:`pipeline_lib.kernels.grids`). ``grid_s2t`` holds phi(p) in target coordinates,
``flow_s2t = grid_s2t - p`` (Lee et al. Eq. 5). The losses work in these units: the paper does not
state the units its loss weights were tuned for; we understand the authors' release to use
grid_sample coordinates too, but could not check it here. For the default layers the output grid
of an (H, W) input is (ceil(H / 16), ceil(W / 16)). ``kernel_sigma_cells`` is in grid cells (the
paper's 5 is for a 20 x 20 grid).

Backbone: frozen by default, as in Lee et al. Sec. 4.1 ("we do not finetune the whole network ...
and train adaptation layers only"); its BatchNorm statistics are frozen in any case.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import (Backbone, build_backbone, check_layers, deepest_layer, layers_by_stride, measure_strides,
                         per_layer, probe_shapes)
from ..kernels.correlation import correlation, l2_normalise
from ..kernels.grids import normalised_cell_grid
from ..kernels.soft_argmax import BETA, KERNEL_SIGMA_CELLS, match_positions

log = logging.getLogger(__name__)

NAME = "sfnet"
CITATION = ("J. Lee, D. Kim, J. Ponce, B. Ham. SFNet: Learning Object-aware Semantic Correspondence. "
            "CVPR 2019.")
PAPER_LAYER_STRIDES = (16, 32)  # Lee et al. Sec. 4.1: ResNet-101 conv4-23 (stride 16) and conv5-3 (stride 32)
ADAPTATION_KERNEL_SIZES = (5, 3)  # Lee et al. Sec. 4.1: 5x5 on conv4-23, 3x3 on conv5-3
PAPER_IMAGE_SIZE = 320  # Lee et al. Sec. 4.1: 320 x 320 inputs (20 x 20 stride-16 grid)


@dataclass(frozen=True)
class SFNetConfig:
    """Model settings (one schema section ``sfnet``); empty ``layers`` = chosen by stride."""

    layers: tuple[str, ...] = ()
    adaptation_kernel_sizes: tuple[int, ...] = ADAPTATION_KERNEL_SIZES
    n_adaptation_blocks: int = 1  # Lee et al. Sec. 4.1 describe one conv+BN+ReLU residual per level
    beta: float = BETA
    kernel_sigma_cells: float = KERNEL_SIGMA_CELLS
    image_size: int = PAPER_IMAGE_SIZE  # square input side for training and prediction
    train_backbone: bool = False  # Lee et al. Sec. 4.1 train the adaptation layers only

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"sfnet.beta must be > 0, got {self.beta}")
        if self.kernel_sigma_cells <= 0:
            raise ValueError(f"sfnet.kernel_sigma_cells must be > 0, got {self.kernel_sigma_cells}")
        if self.n_adaptation_blocks < 0:
            raise ValueError(f"sfnet.n_adaptation_blocks must be >= 0, got {self.n_adaptation_blocks}")
        if any(k < 1 or k % 2 == 0 for k in self.adaptation_kernel_sizes):
            raise ValueError(f"sfnet.adaptation_kernel_sizes must be positive odd numbers, "
                             f"got {self.adaptation_kernel_sizes}")
        if self.image_size < 16:
            raise ValueError(f"sfnet.image_size must be >= 16, got {self.image_size}")


@dataclass
class SFNetOutput:
    """Result of :meth:`SFNet.forward` (shapes for source grid (h_s, w_s), target grid (h_t, w_t)).

    grid_s2t: (B, h_s, w_s, 2) phi(p), normalised target xy of every source cell's match;
    grid_t2s: (B, h_t, w_t, 2) the same from target to source;
    flow_s2t: (B, h_s, w_s, 2) ``grid_s2t - p`` (Lee et al. Eq. 5), normalised units;
    flow_t2s: (B, h_t, w_t, 2);
    corr: (B, h_s, w_s, h_t, w_t) the combined (clamped, multiplied) correlation before normalisation.
    """

    grid_s2t: torch.Tensor
    grid_t2s: torch.Tensor
    flow_s2t: torch.Tensor
    flow_t2s: torch.Tensor
    corr: torch.Tensor


# --------------------------------------------------------------------------- modules


class AdaptationBlock(nn.Module):
    """Residual adaptation ``x + ReLU(BN(Conv_k(x)))`` (Lee et al. Sec. 4.1); (B, C, h, w) -> same."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


class SFNet(nn.Module):
    """Backbone + per-level adaptation + correlation + kernel soft argmax.

    forward(src (B, 3, H_s, W_s), trg (B, 3, H_t, W_t), both in [0, 1]) -> :class:`SFNetOutput`.
    Images are used at the size given (resize to ``SFNetConfig.image_size`` before, as
    :mod:`pipeline_lib.sfnet.predict` and :mod:`pipeline_lib.sfnet.train` do).
    """

    def __init__(self, backbone: Backbone, layers: Sequence[str],
                 kernel_sizes: Sequence[int] = ADAPTATION_KERNEL_SIZES, n_blocks: int = 1,
                 beta: float = BETA, kernel_sigma_cells: float | None = KERNEL_SIGMA_CELLS,
                 train_backbone: bool = False):
        super().__init__()
        layers = check_layers(backbone, layers, "SFNet")
        kernel_sizes = per_layer(kernel_sizes, layers, "SFNet", "adaptation kernel sizes")
        self.backbone = backbone
        self.layers = layers
        self.last_layer = deepest_layer(backbone, layers)
        self.beta = float(beta)
        self.kernel_sigma_cells = kernel_sigma_cells
        self.train_backbone = train_backbone
        for p in backbone.parameters():
            p.requires_grad_(train_backbone)
        shapes = probe_shapes(backbone, self.last_layer)
        self.adaptation = nn.ModuleList([
            nn.Sequential(*[AdaptationBlock(shapes[name][1], k) for _ in range(n_blocks)])
            for name, k in zip(layers, kernel_sizes)])

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics of the backbone stay frozen
        return self

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> one adapted, L2-normalised (B, C_l, h, w) map per level, all on the grid
        of the finest chosen level (coarser levels upsampled bilinearly, Lee et al. footnote 2)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"SFNet: images must be (B, 3, H, W), got {tuple(images.shape)}")
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            feats = self.backbone(images, upto=self.last_layer)
        maps = [adapt(feats[n]) for adapt, n in zip(self.adaptation, self.layers)]
        hw = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
        maps = [m if tuple(m.shape[-2:]) == hw else F.interpolate(m, size=hw, mode="bilinear", align_corners=False)
                for m in maps]
        return [l2_normalise(m, dim=1) for m in maps]

    def correlation(self, src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
        """(B, 3, H_s, W_s), (B, 3, H_t, W_t) -> combined correlation (B, h_s, w_s, h_t, w_t)."""
        if src.shape == trg.shape:  # one backbone pass for both images
            both = self.features(torch.cat([src, trg]))
            fs, ft = [m[:len(src)] for m in both], [m[len(src):] for m in both]
        else:
            fs, ft = self.features(src), self.features(trg)
        corr = None
        for a, b in zip(fs, ft):
            c = correlation(a, b).clamp_min(0.0)
            corr = c if corr is None else corr * c
        return corr

    def forward(self, src: torch.Tensor, trg: torch.Tensor) -> SFNetOutput:
        if src.shape[0] != trg.shape[0]:
            raise ValueError(f"SFNet: source and target batches differ: {src.shape[0]} vs {trg.shape[0]}")
        corr = self.correlation(src, trg)
        grid_s2t, grid_t2s = match_positions(corr, self.beta, self.kernel_sigma_cells)
        hs, ws, ht, wt = corr.shape[1:]
        cells_s = normalised_cell_grid(hs, ws, device=corr.device, dtype=corr.dtype)
        cells_t = normalised_cell_grid(ht, wt, device=corr.device, dtype=corr.dtype)
        return SFNetOutput(grid_s2t, grid_t2s, grid_s2t - cells_s, grid_t2s - cells_t, corr)


def build_sfnet(cfg: SFNetConfig, backbone: Backbone | str = "efficientnet_lite0", pretrained: bool = True,
                weights_path: str | None = None) -> SFNet:
    """An SFNet from config; ``backbone`` is a built Backbone or a registered name.
    Empty ``cfg.layers`` picks the last stride-16 and stride-32 layers (``backbones.layers_by_stride``)."""
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
    layers = cfg.layers or layers_by_stride(measure_strides(backbone), PAPER_LAYER_STRIDES)
    kernel_sizes = cfg.adaptation_kernel_sizes
    if len(kernel_sizes) not in (1, len(layers)):
        raise ValueError(f"sfnet.adaptation_kernel_sizes has {len(kernel_sizes)} entries for {len(layers)} layers")
    log.info("SFNet on %s layers %s, adaptation kernels %s", backbone.name, layers, kernel_sizes)
    return SFNet(backbone, layers, kernel_sizes, cfg.n_adaptation_blocks, cfg.beta, cfg.kernel_sigma_cells,
                 cfg.train_backbone)
