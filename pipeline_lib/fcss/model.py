"""The FCSS descriptor network (Kim et al. Sec. 3.3, Fig. 3): CSS layers after several backbone
levels, each upsampled to a common grid, L2-normalised, concatenated and L2-normalised again.

Kim et al. Sec. 4.1 place K = 3 CSS layers after VGG-19 conv2-2, conv3-2 and conv3-4, i.e. at
strides (2, 4, 4): the deepest stride-2 layer and two stride-4 layers, evenly spaced and ending at the
deepest. On another backbone,
:func:`pipeline_lib.backbones.layers_by_stride` picks the analogous layers from the layer strides measured
on the model:
on ``vgg16`` (no conv3-4) that is conv2_2, conv3_2, conv3_3; on ``efficientnet_lite0`` block00,
block01, block02. The layer names are arguments, so any other choice is one config value away.

Descriptor (Kim et al. D = U_k D^k): (B, K * P, h0, w0) on the grid of the finest chosen level
(or ``out_hw``), unit L2 norm per cell. The final normalisation of the concatenation follows the
authors' release (``normalization_final`` in init_FCSS.m); each level is normalised first (Sec. 3.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import (Backbone, build_backbone, check_layers, deepest_layer, layers_by_stride, measure_strides,
                         per_layer)
from .css import INIT_SHIFT_STD_CELLS, LAMBDA_INIT, N_PATTERNS, POOL_SIZE, CSSLayer

log = logging.getLogger(__name__)

# Kim et al. Sec. 4.1: CSS layers after conv2-2, conv3-2, conv3-4 of VGG-19 (K = 3), whose strides are 2, 4, 4.
PAPER_LAYER_STRIDES = (2, 4, 4)
# Authors' release (init_FCSS.m): initial shift std 9, 7, 5 cells for conv2-2, conv3-2, conv3-4.
PAPER_INIT_SHIFT_STD_CELLS = (9.0, 7.0, 5.0)


@dataclass(frozen=True)
class FCSSConfig:
    """Model settings (one schema section ``fcss``); empty ``layers`` = chosen by stride."""

    layers: tuple[str, ...] = ()
    n_patterns: int = N_PATTERNS  # Kim et al. Sec. 4.1: 64 per level
    init_shift_std_cells: tuple[float, ...] = PAPER_INIT_SHIFT_STD_CELLS  # authors' release
    lambda_init: float = LAMBDA_INIT  # authors' release: 0.5
    pool_size: int = POOL_SIZE  # our choice (odd window), see css.py
    train_backbone: bool = True  # Kim et al. learn W_c too (FCSS); False = "VGG w/ M-CSS" (Table 1)
    seed: int = 0  # initial sampling patterns

    def __post_init__(self):
        if self.n_patterns < 1:
            raise ValueError(f"fcss.n_patterns must be >= 1, got {self.n_patterns}")
        if self.lambda_init <= 0:
            raise ValueError(f"fcss.lambda_init must be > 0, got {self.lambda_init}")
        if self.pool_size < 1 or self.pool_size % 2 == 0:
            raise ValueError(f"fcss.pool_size must be a positive odd number, got {self.pool_size}")
        if not self.init_shift_std_cells or min(self.init_shift_std_cells) < 0:
            raise ValueError(f"fcss.init_shift_std_cells must be non-empty and >= 0, got {self.init_shift_std_cells}")


class FCSS(nn.Module):
    """Backbone + one :class:`CSSLayer` per chosen layer; forward -> dense FCSS descriptors.

    forward(images (B, 3, H, W) in [0, 1], out_hw=None) -> (B, K * n_patterns, h0, w0), unit L2
    norm per cell, where (h0, w0) is ``out_hw`` or the map size of the finest chosen layer.
    ``layer_outputs`` gives the per-level descriptors before concatenation.
    Backbone normalisation layers stay in eval mode during training (frozen statistics: training
    batches are single image pairs); the backbone weights train when ``train_backbone``.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[str], n_patterns: int = N_PATTERNS,
                 init_shift_std_cells: float | Sequence[float] = INIT_SHIFT_STD_CELLS,
                 lambda_init: float = LAMBDA_INIT, pool_size: int = POOL_SIZE, train_backbone: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        layers = check_layers(backbone, layers, "FCSS")
        stds = per_layer([float(init_shift_std_cells)] if isinstance(init_shift_std_cells, (int, float))
                         else init_shift_std_cells, layers, "FCSS", "initial shift stds")
        self.backbone = backbone
        self.layers = layers
        self.last_layer = deepest_layer(backbone, layers)
        self.n_patterns = n_patterns
        self.train_backbone = train_backbone
        for p in backbone.parameters():
            p.requires_grad_(train_backbone)
        self.css = nn.ModuleList([CSSLayer(n_patterns, std, lambda_init, pool_size, normalise_input=True,
                                           generator=generator) for std in stds])

    @property
    def descriptor_dim(self) -> int:
        return len(self.layers) * self.n_patterns

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # BN statistics frozen (see class docstring)
        return self

    def layer_outputs(self, images: torch.Tensor, out_hw: tuple[int, int] | None = None) -> list[torch.Tensor]:
        """(B, 3, H, W) -> one (B, n_patterns, h0, w0) unit-norm descriptor map per chosen layer."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FCSS: images must be (B, 3, H, W), got {tuple(images.shape)}")
        feats = self.backbone(images, upto=self.last_layer)
        maps = [feats[n] for n in self.layers]
        if out_hw is None:
            out_hw = max((tuple(m.shape[-2:]) for m in maps), key=lambda hw: hw[0] * hw[1])
        return [css(m, out_hw) for css, m in zip(self.css, maps)]

    def forward(self, images: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
        return F.normalize(torch.cat(self.layer_outputs(images, out_hw), dim=1), dim=1)


def build_fcss(cfg: FCSSConfig, backbone: Backbone | str, pretrained: bool = True,
               weights_path: str | None = None) -> FCSS:
    """An FCSS model from config; ``backbone`` is a built Backbone or a registered name.
    Empty ``cfg.layers`` picks layers by the paper's strides (``backbones.layers_by_stride``)."""
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
    layers = cfg.layers or layers_by_stride(measure_strides(backbone), PAPER_LAYER_STRIDES)
    stds = cfg.init_shift_std_cells
    if len(stds) not in (1, len(layers)):
        # the paper's per-level stds only fit a 3-level model: fall back to their middle value
        log.warning("fcss: %d init_shift_std_cells for %d layers; using %.1f for every level",
                    len(stds), len(layers), INIT_SHIFT_STD_CELLS)
        stds = (INIT_SHIFT_STD_CELLS,)
    log.info("FCSS on %s layers %s, %d patterns each", backbone.name, layers, cfg.n_patterns)
    return FCSS(backbone, layers, cfg.n_patterns, stds, cfg.lambda_init, cfg.pool_size, cfg.train_backbone,
                generator=torch.Generator().manual_seed(cfg.seed))
