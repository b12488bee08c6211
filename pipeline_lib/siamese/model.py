"""Siamese flow network (Gaur et al. Sec. 5, Fig. 5).

"We reuse the DCNN from section 3 and duplicate it so as to parallel process two image streams.
These two copies of the network share weights ... The two networks are combined at this layer and
the feature maps from the previous layer are simply stacked. Finally, to upsample the
correspondences in the decoder, we use the convolution-transpose layers and concatenate it with
corresponding feature maps of the encoder part."

Here: ONE :class:`~pipeline_lib.backbones.Backbone` module encodes both images (weight sharing by
construction); the deepest chosen layer of both is concatenated on channels; each decoder stage is
a ConvTranspose2d up to the next skip resolution, concatenation of the SOURCE encoder's map there
(optionally the target's too), and a 3x3 conv; a 3x3 conv predicts the flow at the finest skip
resolution, bilinearly upsampled to the input when that resolution is coarser than the input
(stem stride > 1). The decoder widths are ours (the paper gives none): FlowNet-like halving.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, LayerInfo, describe_layers

log = logging.getLogger(__name__)

# FlowNet (Dosovitskiy et al. 2015, Gaur et al. ref. [8]) regresses flow divided by 20; we let the
# head predict flow / FLOW_SCALE_PX so outputs of a freshly initialised head are O(1) in that unit.
FLOW_SCALE_PX = 20.0
DECODER_FIRST_CHANNELS = 256  # width of the deepest decoder stage; halved per stage (our choice)
DECODER_MIN_CHANNELS = 32  # floor of the halving
LEAKY_SLOPE = 0.1  # FlowNet's leaky ReLU slope
STRIDE_PROBE_PX = 64  # probe side for measuring layer strides: a multiple of every stride (<= 32 here), and cheap


def auto_layers(backbone: Backbone, probe_size: int = STRIDE_PROBE_PX) -> tuple[str, ...]:
    """Last layer of each stride, shallow to deep, measured with ``describe_layers``.

    The last entry is the deepest (bottleneck) layer; the others are the skip layers.
    """
    return _last_per_stride(describe_layers(backbone, probe_size=probe_size))


def _last_per_stride(infos) -> tuple[str, ...]:
    last: OrderedDict[float, str] = OrderedDict()
    for info in infos:
        last.pop(round(info.stride, 6), None)
        last[round(info.stride, 6)] = info.name
    ordered = sorted(last.items())
    return tuple(name for _, name in ordered)


def _up_factor(coarse: float, fine: float) -> int:
    ratio = coarse / fine
    f = int(round(ratio))
    if abs(ratio - f) > 1e-6 or f < 1 or (f > 1 and f % 2):
        raise ValueError(f"skip strides must differ by an even integer factor, got {coarse} -> {fine}")
    return f


class _UpStage(nn.Module):
    """ConvTranspose2d by ``factor`` (or a 1x1 conv when the stride is the same), concat skips, 3x3 conv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, factor: int):
        super().__init__()
        if factor == 1:
            self.up = nn.Conv2d(in_ch, out_ch, 1)
        else:  # kernel 2f, stride f, padding f/2: output = f * input exactly
            self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2 * factor, stride=factor, padding=factor // 2)
        self.fuse = nn.Conv2d(out_ch + skip_ch, out_ch, 3, padding=1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.act(self.up(x))
        if x.shape[-2:] != skips[0].shape[-2:]:  # odd encoder sizes (e.g. VGG pooling floors)
            x = F.interpolate(x, size=skips[0].shape[-2:], mode="bilinear", align_corners=False)
        return self.act(self.fuse(torch.cat([x, *skips], dim=1)))


class SiameseFlowNet(nn.Module):
    """Dense flow between two images from a weight-shared encoder and a skip-connected decoder.

    Parameters
    ----------
    backbone : the shared encoder (its ``forward`` returns {layer: (B, C, h, w)}).
    skip_layers : encoder layers, shallow to deep; the LAST is the bottleneck whose source and
        target maps are stacked, the others are skip connections. None: the last layer of each
        stride (``auto_layers``).
    decoder_channels : width of each decoder stage, deep to shallow (len = len(skip_layers) - 1);
        None: 256 halved per stage, at least 32.
    freeze_backbone : keep the encoder fixed (eval mode, no gradients); default False fine-tunes
        it, as Gaur et al. do.
    skip_target : also concatenate the target encoder's maps at every skip.
    layer_infos : the backbone's measured layer table (``describe_layers``; e.g. rebuilt from a
        feature store's ``layers`` attribute) to skip measuring it again; None measures it.

    ``forward(src, trg)``: (B, 3, H, W) images in [0, 1] (same size) -> (B, H, W, 2) flow in
    input pixels (source pixel p corresponds to target point p + F(p)). Any H, W: inputs are
    padded at the bottom/right to a multiple of the coarsest stride and the output is cropped.
    """

    def __init__(self, backbone: Backbone, skip_layers: tuple[str, ...] | None = None,
                 decoder_channels: tuple[int, ...] | None = None, freeze_backbone: bool = False,
                 skip_target: bool = False, layer_infos: Sequence[LayerInfo] | None = None):
        super().__init__()
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.skip_target = skip_target
        if skip_layers is not None:
            layers = tuple(skip_layers)
            unknown = [n for n in layers if n not in backbone.layer_names]
            if unknown or not layers:
                raise ValueError(f"skip_layers {layers}: unknown layer(s) {unknown} of backbone {backbone.name}; "
                                 f"available: {list(backbone.layer_names)}")
            order = [backbone.layer_names.index(n) for n in layers]
            if order != sorted(order) or len(set(order)) != len(order):
                raise ValueError(f"skip_layers must be distinct and ordered shallow to deep, got {layers}")
            if decoder_channels is not None and len(decoder_channels) != len(layers) - 1:
                raise ValueError(f"decoder_channels needs {len(layers) - 1} entries (one per skip layer), got "
                                 f"{decoder_channels}")
        if layer_infos is None:
            # describe_layers measures with gradients: allow them even under no_grad/inference_mode.
            with torch.inference_mode(False), torch.enable_grad():
                described = describe_layers(backbone, probe_size=STRIDE_PROBE_PX)
        else:
            described = list(layer_infos)
            if [i.name for i in described] != list(backbone.layer_names):
                raise ValueError(f"layer_infos do not describe backbone {backbone.name}'s layers "
                                 f"{backbone.layer_names}")
        infos = {i.name: i for i in described}
        if skip_layers is None:
            layers = _last_per_stride(described)
        self.layers = layers
        self.strides = tuple(int(round(infos[n].stride)) for n in layers)
        n_stages = len(layers) - 1
        if decoder_channels is None:
            decoder_channels = tuple(max(DECODER_MIN_CHANNELS, DECODER_FIRST_CHANNELS >> i) for i in range(n_stages))
        if len(decoder_channels) != n_stages:
            raise ValueError(f"decoder_channels needs {n_stages} entries (one per skip layer), got {decoder_channels}")
        self.decoder_channels = tuple(decoder_channels)
        mult = 2 if skip_target else 1
        stages = []
        in_ch = 2 * infos[layers[-1]].channels  # source and target bottleneck maps stacked
        for k in range(n_stages):
            coarse, fine = layers[-1 - k], layers[-2 - k]
            factor = _up_factor(infos[coarse].stride, infos[fine].stride)
            stages.append(_UpStage(in_ch, mult * infos[fine].channels, decoder_channels[k], factor))
            in_ch = decoder_channels[k]
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(in_ch, 2, 3, padding=1)
        # Zero flow (identity correspondence) at initialisation, so early training moves a clean
        # constant field instead of fighting random spatial noise; the head still gets gradients.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.pad_multiple = max(self.strides)
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        log.debug("SiameseFlowNet on %s: layers %s, strides %s, decoder %s", backbone.name, layers, self.strides,
                  self.decoder_channels)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen BN statistics too
        return self

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {layer: (B, C, h, w)} for the chosen layers."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            feats = self.backbone(images, upto=self.layers[-1])
        return {n: feats[n] for n in self.layers}

    def forward(self, src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
        if src.ndim != 4 or src.shape[1] != 3 or src.shape != trg.shape:
            raise ValueError(f"SiameseFlowNet: expected src and trg (B, 3, H, W) of one size, got {tuple(src.shape)} "
                             f"and {tuple(trg.shape)}")
        b, _, h, w = src.shape
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        x = torch.cat([src, trg], dim=0)  # one pass: the same weights for both streams
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        feats = self.encode(x)
        s_feats = {n: f[:b] for n, f in feats.items()}
        t_feats = {n: f[b:] for n, f in feats.items()}
        y = torch.cat([s_feats[self.layers[-1]], t_feats[self.layers[-1]]], dim=1)
        for k, stage in enumerate(self.decoder):
            name = self.layers[-2 - k]
            skips = [s_feats[name], t_feats[name]] if self.skip_target else [s_feats[name]]
            y = stage(y, skips)
        flow = self.head(y) * FLOW_SCALE_PX
        if flow.shape[-2:] != x.shape[-2:]:
            flow = F.interpolate(flow, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return flow[:, :, :h, :w].permute(0, 2, 3, 1)


__all__ = ["SiameseFlowNet", "auto_layers", "FLOW_SCALE_PX"]
