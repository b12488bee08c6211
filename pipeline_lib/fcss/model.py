"""The FCSS descriptor network (Kim et al. Sec. 3.3, Fig. 3): CSS layers after several backbone
levels, each upsampled to a common grid, L2-normalised, concatenated and L2-normalised again.

Kim et al. Sec. 4.1 place K = 3 CSS layers after VGG-19 conv2-2, conv3-2 and conv3-4, i.e. at
strides (2, 4, 4): the deepest stride-2 layer and two stride-4 layers, evenly spaced and ending at the
deepest. On another backbone,
:func:`layers_by_stride` picks the analogous layers from the layer strides measured on the model:
on ``vgg16`` (no conv3-4) that is conv2_2, conv3_2, conv3_3; on ``efficientnet_lite0`` block00,
block01, block02. The layer names are arguments, so any other choice is one config value away.

Descriptor (Kim et al. D = U_k D^k): (B, K * P, h0, w0) on the grid of the finest chosen level
(or ``out_hw``), unit L2 norm per cell. The final normalisation of the concatenation follows the
authors' release (``normalization_final`` in init_FCSS.m); each level is normalised first (Sec. 3.3).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..backbones import Backbone, LayerInfo, build_backbone
from .css import INIT_SHIFT_STD_CELLS, LAMBDA_INIT, N_PATTERNS, POOL_SIZE, CSSLayer, l2_normalise

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


STRIDE_PROBE_PX = 224  # probe image side for measuring layer strides (as ``describe_layers``)


def measure_strides(backbone: Backbone, probe_size: int = STRIDE_PROBE_PX) -> dict[str, float]:
    """{layer name: stride} in network order, measured by one forward pass of a probe image (the
    stride part of ``describe_layers`` without its receptive-field gradients)."""
    device = next(iter(backbone.buffers())).device
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, probe_size, probe_size, device=device))
    return {name: probe_size / feats[name].shape[-1] for name in backbone.layer_names}


def layers_by_stride(strides_of: Mapping[str, float] | Sequence[LayerInfo],
                     strides: Sequence[float] = PAPER_LAYER_STRIDES) -> tuple[str, ...]:
    """Backbone layers analogous to the paper's, chosen from the measured layer strides
    (``measure_strides`` or the ``describe_layers`` table, in network order).

    For each distinct stride ``s`` requested ``n`` times, take ``n`` of the backbone's layers of
    that stride, evenly spaced and ending at the deepest (positions ceil(m * k / n) - 1, k = 1..n,
    of the ``m`` layers of stride ``s`` in network order). On VGG-19 (strides 2, 4, 4) this gives
    exactly the paper's conv2-2, conv3-2, conv3-4. Raises ValueError when a stride has too few layers.
    """
    table = (dict(strides_of) if isinstance(strides_of, Mapping)
             else {x.name: x.stride for x in strides_of})
    out: list[str] = []
    for s in sorted(set(strides), key=list(strides).index):
        need = sum(1 for t in strides if t == s)
        names = [n for n, st in table.items() if abs(st - s) < 1e-6]
        if len(names) < need:
            raise ValueError(f"layers_by_stride: need {need} layer(s) of stride {s}, the backbone has {names}; "
                             f"strides available: {sorted(set(table.values()))}. Set fcss.layers explicitly.")
        out += [names[math.ceil(len(names) * k / need) - 1] for k in range(1, need + 1)]
    return tuple(out)


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
        layers = tuple(layers)
        if not layers:
            raise ValueError("FCSS: at least one backbone layer is needed")
        unknown = [n for n in layers if n not in backbone.layer_names]
        if unknown:
            raise ValueError(f"FCSS: unknown layer(s) {unknown} for backbone {backbone.name}; "
                             f"available: {list(backbone.layer_names)}")
        stds = ([float(init_shift_std_cells)] * len(layers) if isinstance(init_shift_std_cells, (int, float))
                else list(init_shift_std_cells))
        if len(stds) == 1:
            stds = stds * len(layers)
        if len(stds) != len(layers):
            raise ValueError(f"FCSS: {len(stds)} initial shift stds for {len(layers)} layers; "
                             f"give one, or one per layer")
        order = {n: i for i, n in enumerate(backbone.layer_names)}
        self.backbone = backbone
        self.layers = layers
        self.last_layer = max(layers, key=order.__getitem__)
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
        return l2_normalise(torch.cat(self.layer_outputs(images, out_hw), dim=1), dim=1)


def build_fcss(cfg: FCSSConfig, backbone: Backbone | str, pretrained: bool = True,
               weights_path: str | None = None) -> FCSS:
    """An FCSS model from config; ``backbone`` is a built Backbone or a registered name.
    Empty ``cfg.layers`` picks layers by the paper's strides (:func:`layers_by_stride`)."""
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
    layers = cfg.layers or layers_by_stride(measure_strides(backbone))
    stds = cfg.init_shift_std_cells
    if len(stds) not in (1, len(layers)):
        # the paper's per-level stds only fit a 3-level model: fall back to their middle value
        log.warning("fcss: %d init_shift_std_cells for %d layers; using %.1f for every level",
                    len(stds), len(layers), INIT_SHIFT_STD_CELLS)
        stds = (INIT_SHIFT_STD_CELLS,)
    log.info("FCSS on %s layers %s, %d patterns each", backbone.name, layers, cfg.n_patterns)
    return FCSS(backbone, layers, cfg.n_patterns, stds, cfg.lambda_init, cfg.pool_size, cfg.train_backbone,
                generator=torch.Generator().manual_seed(cfg.seed))
