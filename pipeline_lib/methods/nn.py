"""Nearest-neighbour baseline: one layer, cosine similarity, each keypoint to its best target cell."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels.grids import cell_centres
from ..kernels.sampling import sample_at_pixels
from ..kernels.soft_argmax import Subcell, subcell_targets


def nn_transfer(src_feat: torch.Tensor, trg_feat: torch.Tensor, src_kps: torch.Tensor,
                src_hw: tuple[int, int], trg_hw: tuple[int, int], subcell: Subcell | None = None) -> torch.Tensor:
    """Transfer (K, 2) source keypoints to the centres of their cosine nearest target cells -> (K, 2), or with
    ``subcell`` to the local soft argmax of their cosine similarities (:func:`kernels.soft_argmax.subcell_targets`).

    The source descriptor is the (C, h, w) source map read bilinearly at the keypoint."""
    if src_kps.numel() == 0:
        return src_kps.new_zeros((0, 2))
    desc = F.normalize(sample_at_pixels(src_feat, src_kps, src_hw), dim=1)
    c, h, w = trg_feat.shape
    trg = F.normalize(trg_feat.reshape(c, h * w), dim=0)
    sims = desc @ trg
    if subcell is not None:
        return subcell_targets(sims, (h, w), trg_hw, subcell.beta, subcell.radius_cells)
    return cell_centres(h, w, trg_hw, device=trg_feat.device, dtype=trg_feat.dtype)[sims.argmax(dim=1)]
