"""Correspondence contrastive loss (Kim et al. Eq. 13, after Choy et al. 2016).

    L = 1/(2N) sum_i  l_i d_i^2 + (1 - l_i) max(0, C - d_i^2),   d_i = ||F(I)_i - F(I')_i'||

Positive pairs (l = 1) are pulled together; negative pairs (l = 0) are pushed until their
*squared* distance exceeds the margin C, after which they cost nothing. With unit-norm descriptors
d^2 lies in [0, 4].
"""

from __future__ import annotations

import torch

# Kim et al. Sec. 4.1: "C is set to 0.2" (margin on the squared distance, Eq. 13).
MARGIN = 0.2


def contrastive_loss(src_desc: torch.Tensor, trg_desc: torch.Tensor, labels: torch.Tensor,
                     margin: float = MARGIN) -> torch.Tensor:
    """Kim et al. Eq. 13 for N descriptor pairs.

    src_desc, trg_desc: (N, L) descriptors of the paired points; labels: (N,) bool, True = positive.
    Returns a scalar; N = 0 gives 0 (still connected to the inputs, so backward works).
    """
    if src_desc.ndim != 2 or src_desc.shape != trg_desc.shape:
        raise ValueError(f"contrastive_loss: descriptors must both be (N, L), got {tuple(src_desc.shape)} and "
                         f"{tuple(trg_desc.shape)}")
    if labels.shape != src_desc.shape[:1]:
        raise ValueError(f"contrastive_loss: labels must be (N,) = ({src_desc.shape[0]},), got {tuple(labels.shape)}")
    if margin < 0:
        raise ValueError(f"contrastive_loss: margin must be >= 0, got {margin}")
    n = src_desc.shape[0]
    if n == 0:
        return (src_desc.sum() + trg_desc.sum()) * 0.0
    d2 = (src_desc - trg_desc).pow(2).sum(1)
    pos = labels.to(torch.bool)
    per_pair = torch.where(pos, d2, (margin - d2).clamp_min(0.0))
    return per_pair.sum() / (2 * n)
