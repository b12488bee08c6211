"""Hyperpixels (Min et al. 2019, Hyperpixel Flow, Sec. 3.1, Eq. 1-2), used by HPF, Gaur et al.'s manifold
and the Siamese network's correlation.

A hyperimage stacks the feature maps of a few CNN layers along channels after resizing each
of them to the resolution of the first ("base") map. Every layer is L2-normalised along
channels at every cell, so each layer contributes equally to the cosine similarity of two
hyperpixels whatever its channel count or activation scale. (The reference code concatenates
raw features; the per-layer normalisation is our project-wide choice, see
shared/notes/methods.md section 2.)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def build_hyperpixels(layer_feats: Sequence[Tensor]) -> Tensor:
    """Concatenate per-layer feature maps into one hyperimage at the base resolution.

    Args:
        layer_feats: K >= 1 maps, either all unbatched ``(C_l, h_l, w_l)`` or all batched
            ``(B, C_l, h_l, w_l)`` with the same B. The first map is the base.

    Returns:
        ``(sum C_l, h_0, w_0)`` (or ``(B, sum C_l, h_0, w_0)``). Each layer's block of channels
        has unit L2 norm at every cell (zero where the layer's features are all zero), so a
        hyperpixel has norm sqrt(K). Non-base maps are resized bilinearly (half-pixel aligned,
        ``align_corners=False``, consistent with :func:`.grids.cell_centres`). dtype and device follow
        the inputs.
    """
    if len(layer_feats) == 0:
        raise ValueError("build_hyperpixels: layer_feats is empty; pass at least the base map")
    ndim = layer_feats[0].dim()
    if ndim not in (3, 4):
        raise ValueError(
            f"build_hyperpixels: maps must be (C, h, w) or (B, C, h, w); "
            f"got base map of shape {tuple(layer_feats[0].shape)}"
        )
    base = layer_feats[0]
    for idx, feat in enumerate(layer_feats):
        if feat.dim() != ndim:
            raise ValueError(
                f"build_hyperpixels: map {idx} has shape {tuple(feat.shape)} but the base map has "
                f"{ndim} dims {tuple(base.shape)}; all maps must be batched or all unbatched"
            )
        if ndim == 4 and feat.shape[0] != base.shape[0]:
            raise ValueError(
                f"build_hyperpixels: map {idx} has batch size {feat.shape[0]}, base map has {base.shape[0]}"
            )

    batched = layer_feats if ndim == 4 else [f.unsqueeze(0) for f in layer_feats]
    size = tuple(base.shape[-2:])
    blocks = [_resize_to(feat, size) for feat in batched]
    blocks = [F.normalize(block, p=2, dim=1) for block in blocks]
    hyper = torch.cat(blocks, dim=1)
    return hyper if ndim == 4 else hyper.squeeze(0)


def _resize_to(feat: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize ``(B, C, h, w)`` to ``(B, C, *size)``; empty maps keep their shape contract."""
    if tuple(feat.shape[-2:]) == size:
        return feat
    if feat.numel() == 0 or 0 in size or 0 in feat.shape[-2:]:
        return feat.new_zeros((feat.shape[0], feat.shape[1], *size))
    return F.interpolate(feat, size=size, mode="bilinear", align_corners=False)


def flatten_hyperpixels(hyper: Tensor) -> Tensor:
    """``(C, h, w) -> (h*w, C)`` (or ``(B, C, h, w) -> (B, h*w, C)``), row-major like :func:`.grids.cell_centres`."""
    if hyper.dim() not in (3, 4):
        raise ValueError(f"flatten_hyperpixels: expected (C, h, w) or (B, C, h, w), got {tuple(hyper.shape)}")
    return hyper.flatten(-2).transpose(-1, -2)

