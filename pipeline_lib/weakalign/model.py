"""WeakAlign (Rocco et al. 2018): two-stage geometric regression from normalised correlations.

Architecture (Rocco et al. 2018 Sec. 3.1 and 4.1, on the CNNGeometric model of Rocco et al. 2017):

1. features of one backbone layer (paper: ResNet-101 cropped after conv4-23, the last stride-16
   block; here by default the last stride-16 layer of the backbone, ``block10`` on
   ``efficientnet_lite0``), L2-normalised per location;
2. normalised correlation (Rocco et al. 2018 Eq. 2): all source-target dot products, ReLU, then
   L2 normalisation over the source positions of each target position, laid out as
   (B, h_s * w_s, h_t, w_t) with the source index (row-major) as channels;
3. a regression CNN (conv-BN-ReLU with kernels 7 and 5, 128 and 64 channels, then a linear layer;
   CNNGeometric's FeatureRegression) gives the 6 affine parameters;
4. the source is warped by that affine, its features correlated again with the target's, and a
   second regression CNN gives the 18 TPS parameters (3 x 3 control points) of the remaining
   deformation. The full backward map target -> source is A(TPS(q)) + t
   (:func:`pipeline_lib.kernels.warps.composed_points`).

The regression layers need a fixed feature grid, so every input is resized to a square
``image_size`` (Rocco et al. Sec. 4.1: 240 x 240) inside :meth:`WeakAlign.forward`; transform
parameters live in normalised coordinates and therefore apply to the images at any size. When the
grid is smaller than a regression kernel (small ``image_size``), that convolution is zero-padded
just enough to fit; at 240 px (15 x 15 grid) there is no padding, as in CNNGeometric. The last
linear layers start at zero and their outputs are offsets from the identity transforms, so an
untrained model is the identity. Rocco et al. 2018 start WeakAlign from CNNGeometric weights trained
on synthetic warps: here the ``train_cnngeometric`` stage (:mod:`.synthetic`) trains this same
network that way first, and WeakAlign's fine-tuning loads its checkpoint.

Backbone: frozen by default (our choice for ImageNet-only features and small data, as CNNGeometric
trains it); Rocco et al. 2018 Sec. 4.1 fine-tune the whole model end to end
(``train_backbone=True``). BatchNorm statistics of the backbone stay frozen either way, as in the paper.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, build_backbone, check_layers, layers_by_stride, measure_strides, probe_shapes
from ..kernels.correlation import correlation, l2_normalise
from ..kernels.warps import affine_grid, identity_affine, identity_tps

log = logging.getLogger(__name__)

NAME = "weakalign"
CITATION = ("I. Rocco, R. Arandjelovic, J. Sivic. End-to-end weakly-supervised semantic alignment. CVPR 2018.")
PAPER_IMAGE_SIZE = 240  # Rocco et al. 2018 Sec. 4.1: inputs resized to 240 x 240
PAPER_LAYER_STRIDE = 16  # ResNet-101 conv4-23 (Rocco et al. 2018 Sec. 4.1)
REGRESSION_KERNEL_SIZES = (7, 5)  # CNNGeometric FeatureRegression (Rocco et al. 2017; authors' release)
REGRESSION_CHANNELS = (128, 64)  # idem
TPS_GRID_SIZE = 3  # Rocco et al. 2018 Sec. 4.1: TPS with 18 degrees of freedom (3 x 3 control points)


@dataclass(frozen=True)
class WeakAlignConfig:
    """Model settings (one schema section ``weakalign``); empty ``layer`` = last stride-16 layer."""

    layer: str = ""
    image_size: int = PAPER_IMAGE_SIZE
    regression_kernel_sizes: tuple[int, ...] = REGRESSION_KERNEL_SIZES
    regression_channels: tuple[int, ...] = REGRESSION_CHANNELS
    tps_grid_size: int = TPS_GRID_SIZE
    train_backbone: bool = False

    def __post_init__(self):
        if self.image_size < 32:
            raise ValueError(f"weakalign.image_size must be >= 32, got {self.image_size}")
        if len(self.regression_kernel_sizes) != len(self.regression_channels) or not self.regression_channels:
            raise ValueError(f"weakalign.regression_kernel_sizes {self.regression_kernel_sizes} and "
                             f"regression_channels {self.regression_channels} need the same non-zero length")
        if min(self.regression_kernel_sizes) < 1 or min(self.regression_channels) < 1:
            raise ValueError("weakalign regression kernel sizes and channels must be >= 1")
        if self.tps_grid_size < 2:
            raise ValueError(f"weakalign.tps_grid_size must be >= 2, got {self.tps_grid_size}")


@dataclass
class WeakAlignOutput:
    """Result of :meth:`WeakAlign.forward` for a feature grid (h, w):

    theta_aff: (B, 6) affine, target -> source (normalised coordinates, see ``kernels.warps``);
    theta_tps: (B, 2 g^2) TPS, target -> affine-warped source; g = 3 gives (B, 18);
    corr_aff: (B, h * w, h, w) normalised correlation source x target (first stage);
    corr_tps: (B, h * w, h, w) normalised correlation affine-warped source x target (second stage).
    """

    theta_aff: torch.Tensor
    theta_tps: torch.Tensor
    corr_aff: torch.Tensor
    corr_tps: torch.Tensor


def normalised_correlation(src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
    """Rocco et al. 2018 Eq. 2 with the ReLU of CNNGeometric's FeatureCorrelation.

    src: (B, C, h_s, w_s), trg: (B, C, h_t, w_t) -> (B, h_s * w_s, h_t, w_t) with
    s[(i, j), k, l] = relu(<f_s(i, j), f_t(k, l)>) / ||relu(<f_s(., .), f_t(k, l)>)||_2.
    """
    corr = correlation(src, trg)
    b, hs, ws, ht, wt = corr.shape
    return l2_normalise(F.relu(corr.view(b, hs * ws, ht * wt)), dim=1).view(b, hs * ws, ht, wt)


class GeometricRegression(nn.Module):
    """CNNGeometric regression: (B, h*w, h, w) correlation -> (B, out_dim) offsets from the identity.

    conv(k_i, no padding unless the map is smaller than k_i) + BN + ReLU per layer, then a linear
    layer initialised to zero.
    """

    def __init__(self, grid_hw: tuple[int, int], out_dim: int,
                 kernel_sizes: Sequence[int] = REGRESSION_KERNEL_SIZES,
                 channels: Sequence[int] = REGRESSION_CHANNELS):
        super().__init__()
        h, w = grid_hw
        c_in = h * w
        layers = []
        for k, c_out in zip(kernel_sizes, channels):
            ph, pw = max(0, math.ceil((k - h) / 2)), max(0, math.ceil((k - w) / 2))
            layers += [nn.Conv2d(c_in, c_out, k, padding=(ph, pw)), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            h, w, c_in = h + 2 * ph - k + 1, w + 2 * pw - k + 1, c_out
        self.conv = nn.Sequential(*layers)
        self.linear = nn.Linear(c_in * h * w, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.in_channels = grid_hw[0] * grid_hw[1]

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        if corr.ndim != 4 or corr.shape[1] != self.in_channels:
            raise ValueError(f"GeometricRegression: expected (B, {self.in_channels}, h, w), got {tuple(corr.shape)}")
        return self.linear(self.conv(corr).flatten(1))


class WeakAlign(nn.Module):
    """Two-stage (affine, then TPS) alignment network.

    forward(src (B, 3, H_s, W_s), trg (B, 3, H_t, W_t) in [0, 1], any sizes) -> :class:`WeakAlignOutput`.
    Both images are resized to (image_size, image_size) first; the feature grid is (h, w) =
    ``self.grid_hw`` (image_size / 16 for the default layer).
    """

    def __init__(self, backbone: Backbone, layer: str, image_size: int = PAPER_IMAGE_SIZE,
                 kernel_sizes: Sequence[int] = REGRESSION_KERNEL_SIZES,
                 channels: Sequence[int] = REGRESSION_CHANNELS, tps_grid_size: int = TPS_GRID_SIZE,
                 train_backbone: bool = False):
        super().__init__()
        check_layers(backbone, (layer,), "WeakAlign")
        self.backbone = backbone
        self.layer = layer
        self.image_size = int(image_size)
        self.tps_grid_size = int(tps_grid_size)
        self.train_backbone = train_backbone
        for p in backbone.parameters():
            p.requires_grad_(train_backbone)
        shape = probe_shapes(backbone, layer, self.image_size)[layer]
        self.grid_hw = (int(shape[2]), int(shape[3]))
        self.regress_affine = GeometricRegression(self.grid_hw, 6, kernel_sizes, channels)
        self.regress_tps = GeometricRegression(self.grid_hw, 2 * tps_grid_size ** 2, kernel_sizes, channels)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # BatchNorm statistics of the backbone stay frozen (Rocco et al. Sec. 4.1)
        return self

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, image_size, image_size)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"WeakAlign: images must be (B, 3, H, W), got {tuple(images.shape)}")
        s = self.image_size
        if images.shape[-2:] == (s, s):
            return images
        return F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) resized images -> (B, C, h, w) L2-normalised features."""
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            f = self.backbone(images, upto=self.layer)[self.layer]
        return l2_normalise(f, dim=1)

    def forward(self, src: torch.Tensor, trg: torch.Tensor) -> WeakAlignOutput:
        if src.shape[0] != trg.shape[0]:
            raise ValueError(f"WeakAlign: source and target batches differ: {src.shape[0]} vs {trg.shape[0]}")
        b = src.shape[0]
        src, trg = self.resize(src), self.resize(trg)
        feats = self.features(torch.cat([src, trg]))
        f_src, f_trg = feats[:b], feats[b:]
        corr_aff = normalised_correlation(f_src, f_trg)
        theta_aff = identity_affine(b, src.device, src.dtype) + self.regress_affine(corr_aff)
        warped = F.grid_sample(src, affine_grid(theta_aff, tuple(src.shape[-2:])), mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        corr_tps = normalised_correlation(self.features(warped), f_trg)
        theta_tps = identity_tps(b, self.tps_grid_size, src.device, src.dtype) + self.regress_tps(corr_tps)
        return WeakAlignOutput(theta_aff, theta_tps, corr_aff, corr_tps)


def build_weakalign(cfg: WeakAlignConfig, backbone: Backbone | str = "efficientnet_lite0", pretrained: bool = True,
                    weights_path: str | None = None) -> WeakAlign:
    """A WeakAlign model from config; ``backbone`` is a built Backbone or a registered name.
    Empty ``cfg.layer`` picks the last stride-16 layer (the paper's conv4-23 analogue)."""
    if isinstance(backbone, str):
        backbone = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
    layer = cfg.layer or layers_by_stride(measure_strides(backbone), (PAPER_LAYER_STRIDE,))[0]
    model = WeakAlign(backbone, layer, cfg.image_size, cfg.regression_kernel_sizes, cfg.regression_channels,
                      cfg.tps_grid_size, cfg.train_backbone)
    log.info("WeakAlign on %s layer %s, %d px inputs, %s feature grid", backbone.name, layer, cfg.image_size,
             model.grid_hw)
    return model
