"""Nearest-neighbour baseline: one layer, cosine similarity, each keypoint to its best target cell."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import cell_centres, points_to_grid


def sample_descriptors(feat: torch.Tensor, kps: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample (C, h, w) features at (K, 2) image points -> (K, C)."""
    if feat.ndim != 3 or kps.ndim != 2 or kps.shape[1] != 2:
        raise ValueError(f"expected feat (C, h, w) and kps (K, 2), got {tuple(feat.shape)} and {tuple(kps.shape)}")
    grid = points_to_grid(kps.to(feat), image_hw).view(1, 1, -1, 2)
    return F.grid_sample(feat[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T


def nn_transfer(src_feat: torch.Tensor, trg_feat: torch.Tensor, src_kps: torch.Tensor,
                src_hw: tuple[int, int], trg_hw: tuple[int, int]) -> torch.Tensor:
    """Transfer (K, 2) source keypoints to the centres of their cosine nearest target cells -> (K, 2)."""
    if src_kps.numel() == 0:
        return src_kps.new_zeros((0, 2))
    desc = F.normalize(sample_descriptors(src_feat, src_kps, src_hw), dim=1)
    c, h, w = trg_feat.shape
    trg = F.normalize(trg_feat.reshape(c, h * w), dim=0)
    idx = (desc @ trg).argmax(dim=1)
    return cell_centres(h, w, trg_hw, device=trg_feat.device, dtype=trg_feat.dtype)[idx]
