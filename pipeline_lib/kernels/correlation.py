"""L2 normalisation and dense correlation of feature maps."""

from __future__ import annotations

from typing import Sequence

import torch

EPS = 1e-8  # added to the squared norm: all-zero vectors stay zero and the gradient stays finite there


def l2_normalise(x: torch.Tensor, dim: int | Sequence[int], eps: float = EPS) -> torch.Tensor:
    """x / sqrt(||x||^2 + eps) over ``dim`` (all-zero vectors stay zero).

    The guard sits inside the root (SFNet's and WeakAlign's normalisation); ``F.normalize`` clamps the
    norm instead, where an exact unit norm matters more than the gradient at zero.
    """
    return x / (x.pow(2).sum(dim=dim, keepdim=True) + eps).sqrt()


def correlation(src: torch.Tensor, trg: torch.Tensor) -> torch.Tensor:
    """Dot products of every source and every target feature (Lee et al. 2019 Eq. 1).

    src: (B, C, h_s, w_s), trg: (B, C, h_t, w_t) -> (B, h_s, w_s, h_t, w_t).
    """
    if src.ndim != 4 or trg.ndim != 4 or src.shape[:2] != trg.shape[:2]:
        raise ValueError(f"correlation: need (B, C, h, w) maps with equal B and C, got {tuple(src.shape)} "
                         f"and {tuple(trg.shape)}")
    b, c, hs, ws = src.shape
    ht, wt = trg.shape[-2:]
    corr = torch.bmm(src.reshape(b, c, hs * ws).transpose(1, 2), trg.reshape(b, c, ht * wt))
    return corr.view(b, hs, ws, ht, wt)
