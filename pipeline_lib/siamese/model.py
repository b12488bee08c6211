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

``fusion="correlation"`` (our deviation, off by default): besides the stacked bottleneck, the
source and target hyperpixels of ``match_layers`` (each L2-normalised per location) are correlated
(FlowNetC, Gaur et al. ref. [8]) and matched by the kernel soft argmax of SFNet (Lee et al. Eqs.
2-3); that coarse flow, divided by FLOW_SCALE_PX, and the match confidence join every decoder skip,
and the head predicts a residual on top of it (zero at initialisation: the untrained network is a
soft nearest-neighbour matcher). ``match_adapter`` (ours) adds one residual adapter per match layer
(``backbones.ResidualAdapter``, the identity at initialisation), so that a matching loss on the correlation
(``siamese.loss.matching_loss``) has features to adapt while the encoder stays frozen.

Measured on the demo (README), the paper's stacking learns when the decoder skips carry both
streams' maps (``skip_target``; with the source's only it stays at zero flow for 150 steps) and the
loss is not truncated at the literal T = sqrt(side) (``siamese.loss``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone, LayerInfo, ResidualAdapter, deepest_layer, describe_layers
from ..kernels.correlation import correlation
from ..kernels.grids import cell_centres
from ..kernels.hyperpixels import build_hyperpixels
from ..kernels.soft_argmax import BETA, KERNEL_SIGMA_CELLS, kernel_soft_argmax

log = logging.getLogger(__name__)

# FlowNet (Dosovitskiy et al. 2015, Gaur et al. ref. [8]) regresses flow divided by 20; we let the
# head predict flow / FLOW_SCALE_PX so outputs of a freshly initialised head are O(1) in that unit.
FLOW_SCALE_PX = 20.0
DECODER_FIRST_CHANNELS = 256  # width of the deepest decoder stage; halved per stage (our choice)
DECODER_MIN_CHANNELS = 32  # floor of the halving
LEAKY_SLOPE = 0.1  # FlowNet's leaky ReLU slope
STRIDE_PROBE_PX = 64  # probe side for measuring layer strides: a multiple of every stride (<= 32 here), and cheap
FUSIONS = ("stack", "correlation")  # stack: Gaur et al. Sec. 5; correlation: + soft-argmax matching (ours)
MATCH_EXTRA_CHANNELS = 3  # coarse flow (2) and match confidence (1) appended to every skip with fusion=correlation


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
    skip_target : also concatenate the target encoder's maps at every skip (config ``siamese.skip_target``;
        measured on the demo, the stack fusion learns only with it).
    match_adapter : fusion=correlation only: a :class:`ResidualAdapter` on each match layer before the
        correlation (config ``siamese.match_adapter``; ours).
    layer_infos : the backbone's measured layer table (``describe_layers``; e.g. rebuilt from a
        feature store's ``layers`` attribute) to skip measuring it again; None measures it.

    ``forward(src, trg)``: (B, 3, H, W) images in [0, 1] (same size) -> (B, H, W, 2) flow in
    input pixels (source pixel p corresponds to target point p + F(p)). Any H, W: inputs are
    padded at the bottom/right to a multiple of the coarsest stride and the output is cropped.
    """

    def __init__(self, backbone: Backbone, skip_layers: tuple[str, ...] | None = None,
                 decoder_channels: tuple[int, ...] | None = None, freeze_backbone: bool = False,
                 skip_target: bool = False, layer_infos: Sequence[LayerInfo] | None = None, fusion: str = "stack",
                 match_layers: Sequence[str] | None = None, beta: float = BETA,
                 kernel_sigma_cells: float | None = KERNEL_SIGMA_CELLS, match_adapter: bool = False):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got '{fusion}'")
        if match_adapter and fusion != "correlation":
            raise ValueError(f"match_adapter adapts the features of the correlation; it needs fusion 'correlation', "
                             f"got '{fusion}' (set siamese.fusion: correlation or siamese.match_adapter: false)")
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        self.skip_target = skip_target
        self.fusion = fusion
        self.beta = float(beta)
        self.kernel_sigma_cells = kernel_sigma_cells
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
        self.match_layers: tuple[str, ...] = ()
        if fusion == "correlation":
            if match_layers is None:  # the two skip layers just above the bottleneck (strides 8 and 16 here)
                match_layers = layers[-3:-1] if len(layers) >= 3 else layers[-1:]
            match_layers = tuple(match_layers)
            if not match_layers or any(n not in infos for n in match_layers):
                raise ValueError(f"match_layers {match_layers}: unknown layer(s) of backbone {backbone.name}")
            self.match_layers = match_layers
        self.match_adapters = nn.ModuleDict(
            {n: ResidualAdapter(infos[n].channels) for n in self.match_layers} if match_adapter else {})
        mult = 2 if skip_target else 1
        extra = MATCH_EXTRA_CHANNELS if fusion == "correlation" else 0
        stages = []
        in_ch = 2 * infos[layers[-1]].channels  # source and target bottleneck maps stacked
        for k in range(n_stages):
            coarse, fine = layers[-1 - k], layers[-2 - k]
            factor = _up_factor(infos[coarse].stride, infos[fine].stride)
            stages.append(_UpStage(in_ch, mult * infos[fine].channels + extra, decoder_channels[k], factor))
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
        self._encode_upto = deepest_layer(backbone, layers + self.match_layers)
        log.debug("SiameseFlowNet on %s: layers %s, strides %s, decoder %s, fusion %s %s", backbone.name, layers,
                  self.strides, self.decoder_channels, fusion, self.match_layers)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen BN statistics too
        return self

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {layer: (B, C, h, w)} for the chosen layers."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            feats = self.backbone(images, upto=self._encode_upto)
        return {n: feats[n] for n in self.layers + self.match_layers}

    def correlate(self, s_feats: dict[str, torch.Tensor], t_feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cosine correlation (B, h, w, ht, wt) of the (adapted) hyperpixels of ``match_layers``, each layer
        L2-normalised (``kernels.hyperpixels.build_hyperpixels``), on the first match layer's grid."""
        norm = len(self.match_layers) ** 0.5  # a hyperpixel has norm sqrt(K): unit norm after this

        def adapted(feats):
            return [self.match_adapters[n](feats[n]) if n in self.match_adapters else feats[n]
                    for n in self.match_layers]

        src = build_hyperpixels(adapted(s_feats)) / norm
        trg = build_hyperpixels(adapted(t_feats)) / norm
        return correlation(src, trg)

    def match(self, corr: torch.Tensor, input_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse flow (B, 2, h, w) in input pixels and confidence (B, 1, h, w) from a ``correlate`` result.

        Kernel soft argmax (Lee et al. Eqs. 2-3, beta and sigma in cells); confidence = the best cosine
        similarity of each source cell.
        """
        b, h, w, ht, wt = corr.shape
        corr = corr.reshape(b, h * w, ht, wt)
        cells = kernel_soft_argmax(corr, self.beta, self.kernel_sigma_cells)  # (B, h*w, 2) target cell xy
        # cell xy -> input pixels: (c + 0.5) * stride - 0.5, the convention of kernels.grids.cell_centres
        scale = cells.new_tensor([input_hw[1] / wt, input_hw[0] / ht])
        trg_px = (cells + 0.5) * scale - 0.5
        src_px = cell_centres(h, w, input_hw, device=cells.device, dtype=cells.dtype)
        flow = (trg_px - src_px).transpose(1, 2).reshape(b, 2, h, w)
        conf = corr.flatten(2).amax(2).reshape(b, 1, h, w)
        return flow, conf

    def padded_hw(self, h: int, w: int) -> tuple[int, int]:
        """The size an (h, w) input is padded to (bottom/right) before encoding: a multiple of the coarsest
        stride; the correlation's grids cover it."""
        m = self.pad_multiple
        return -(-h // m) * m, -(-w // m) * m

    def forward(self, src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
        return self.forward_with_correlation(src, trg)[0]

    def forward_with_correlation(self, src: torch.Tensor, trg: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``forward``'s flow and, with fusion=correlation, the correlation it matched (``correlate``; None
        for stack), for a loss on the matching itself (``siamese.loss.matching_loss``)."""
        if src.ndim != 4 or src.shape[1] != 3 or src.shape != trg.shape:
            raise ValueError(f"SiameseFlowNet: expected src and trg (B, 3, H, W) of one size, got {tuple(src.shape)} "
                             f"and {tuple(trg.shape)}")
        b, _, h, w = src.shape
        big_h, big_w = self.padded_hw(h, w)
        ph, pw = big_h - h, big_w - w
        x = torch.cat([src, trg], dim=0)  # one pass: the same weights for both streams
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        feats = self.encode(x)
        s_feats = {n: f[:b] for n, f in feats.items()}
        t_feats = {n: f[b:] for n, f in feats.items()}
        coarse = corr = None
        if self.fusion == "correlation":
            corr = self.correlate(s_feats, t_feats)
            coarse, conf = self.match(corr, tuple(x.shape[-2:]))
            coarse_in = torch.cat([coarse / FLOW_SCALE_PX, conf], dim=1)
        y = torch.cat([s_feats[self.layers[-1]], t_feats[self.layers[-1]]], dim=1)
        for k, stage in enumerate(self.decoder):
            name = self.layers[-2 - k]
            skips = [s_feats[name], t_feats[name]] if self.skip_target else [s_feats[name]]
            if coarse is not None:
                skips.append(F.interpolate(coarse_in, size=skips[0].shape[-2:], mode="bilinear", align_corners=False))
            y = stage(y, skips)
        flow = self.head(y) * FLOW_SCALE_PX
        if flow.shape[-2:] != x.shape[-2:]:
            flow = F.interpolate(flow, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if coarse is not None:  # residual on the matched flow (displacements need no rescaling)
            flow = flow + F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return flow[:, :, :h, :w].permute(0, 2, 3, 1), corr


__all__ = ["SiameseFlowNet", "auto_layers", "FLOW_SCALE_PX", "FUSIONS"]
