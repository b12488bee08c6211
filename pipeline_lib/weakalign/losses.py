"""Weakly supervised soft-inlier count (Rocco et al. 2018 Sec. 3.2).

For a pair that should match, the loss is minus the soft-inlier count: the sum of the normalised
match scores s[(i, j), k, l] inside the inlier mask m of the estimated transform T (Eqs. 8-9).
As in the paper, m is the *identity* mask (Eq. 10: 1 where the source cell (i, j) and the
position (k, l) are closer than t) warped by T with a spatial transformer (bilinear sampling):
m[(i, j), q] = m_id[(i, j)](T(q)). Matches whose source cell lies where T sends target cell q are
inliers; target cells sent outside the source count nothing.

- ``t = L / 30`` cells, L the side of the feature grid (Rocco et al. Sec. 4.1); for L < 30 that
  keeps only the diagonal, the bilinear warp spreading it over the 4 cells around T(q);
- ``normalise=True`` divides the count by the mask's total, the default of the authors' release
  (``normalize_inlier_count``): the score is the mean match score over the inlier region, so a
  warp cannot gain by stretching the mask;
- training objective: minus the sum of the affine count and the composed affine+TPS count, both
  on the first-stage correlation, averaged over the batch (authors' ``train_weak.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.warps import affine_grid, composed_grid
from .model import WeakAlignOutput

INLIER_THRESHOLD_FRACTION = 1.0 / 30.0  # Rocco et al. 2018 Sec. 4.1: t = L / 30
NORMALISE_EPS = 1e-5  # authors' release: epsilon of the inlier-count normalisation


@dataclass(frozen=True)
class WeakAlignLossConfig:
    threshold_cells: float | None = None  # None = L / 30 (Rocco et al. Sec. 4.1)
    normalise: bool = True  # authors' release default (normalize_inlier_count)

    def __post_init__(self):
        if self.threshold_cells is not None and self.threshold_cells <= 0:
            raise ValueError(f"weakalign inlier threshold must be > 0 cells, got {self.threshold_cells}")


def default_threshold(hw: tuple[int, int]) -> float:
    """t = L / 30 cells for an (h, w) grid, L = max(h, w)."""
    return max(hw) * INLIER_THRESHOLD_FRACTION


def identity_mask(hw: tuple[int, int], threshold_cells: float, device=None, dtype=None) -> torch.Tensor:
    """Rocco et al. Eq. 10 on an (h, w) grid -> (h * w, h, w): m[(i, j), k, l] = 1 if |(i, j) - (k, l)| < t."""
    h, w = hw
    dtype = dtype or torch.get_default_dtype()
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                            indexing="ij")
    pos = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # (h*w, 2) row-major, as the correlation channels
    d = torch.cdist(pos, pos)
    return (d < threshold_cells).to(dtype).view(h * w, h, w)


def inlier_mask(grid: torch.Tensor, src_hw: tuple[int, int], threshold_cells: float) -> torch.Tensor:
    """Warped identity mask: grid (B, h_t, w_t, 2) = T(q) in normalised source coordinates for every
    target cell q -> (B, h_s * w_s, h_t, w_t)."""
    if grid.ndim != 4 or grid.shape[-1] != 2:
        raise ValueError(f"inlier_mask: grid must be (B, h_t, w_t, 2), got {tuple(grid.shape)}")
    b = grid.shape[0]
    m_id = identity_mask(src_hw, threshold_cells, grid.device, grid.dtype)
    return F.grid_sample(m_id[None].expand(b, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def soft_inlier_count(corr: torch.Tensor, grid: torch.Tensor, src_hw: tuple[int, int],
                      threshold_cells: float | None = None, normalise: bool = True) -> torch.Tensor:
    """Rocco et al. Eq. 9: sum of corr * warped identity mask -> (B,).

    corr: (B, h_s * w_s, h_t, w_t) normalised correlation (source index as channels);
    grid: (B, h_t, w_t, 2) the transform's backward map at the target cells (normalised source xy).
    """
    if corr.ndim != 4 or corr.shape[1] != src_hw[0] * src_hw[1] or corr.shape[-2:] != grid.shape[1:3]:
        raise ValueError(f"soft_inlier_count: corr {tuple(corr.shape)} does not fit grid {tuple(grid.shape)} and "
                         f"source grid {src_hw}")
    t = default_threshold(src_hw) if threshold_cells is None else threshold_cells
    mask = inlier_mask(grid, src_hw, t)
    score = (mask * corr).sum(dim=(1, 2, 3))
    if normalise:
        score = score / (mask.sum(dim=(1, 2, 3)) + NORMALISE_EPS)
    return score


def weakalign_loss(out: WeakAlignOutput, cfg: WeakAlignLossConfig = WeakAlignLossConfig()
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-(c_affine + c_affine+TPS), batch mean (authors' ``train_weak.py``); returns (scalar loss,
    {"inliers_aff", "inliers_composed": batch means, detached})."""
    b, _, h, w = out.corr_aff.shape
    c_aff = soft_inlier_count(out.corr_aff, affine_grid(out.theta_aff, (h, w)), (h, w), cfg.threshold_cells,
                              cfg.normalise)
    c_comp = soft_inlier_count(out.corr_aff, composed_grid(out.theta_aff, out.theta_tps, (h, w)), (h, w),
                               cfg.threshold_cells, cfg.normalise)
    return -(c_aff + c_comp).mean(), {"inliers_aff": c_aff.mean().detach(), "inliers_composed": c_comp.mean().detach()}

