"""Kernel soft argmax (Lee et al. 2019, SFNet, Eqs. 2-3) and the matches of a correlation.

Used by SFNet and by the Siamese network's correlation fusion (the defaults are SFNet's); the training-free
matchers' sub-cell target is a local soft argmax (:func:`subcell_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .correlation import l2_normalise
from .grids import cell_to_normalised, normalised_to_pixels

BETA = 50.0  # Lee et al. Sec. 4.1: softmax temperature beta = 50
KERNEL_SIGMA_CELLS = 5.0  # Lee et al. Sec. 4.1: std of the Gaussian kernel k_p = 5 (cells of the 20x20 grid)


def kernel_soft_argmax(scores: torch.Tensor, beta: float = BETA,
                       sigma_cells: float | None = KERNEL_SIGMA_CELLS) -> torch.Tensor:
    """Kernel soft argmax (Lee et al. Eqs. 2-3) of score maps over a target grid.

    scores: (B, N, h, w), for each of N queries a map n_p over the (h, w) target grid (Lee et al.
    apply it to the L2-normalised correlation; see :func:`match_positions`).
    The Gaussian ``k_p`` (std ``sigma_cells``) is centred on the discrete argmax, which carries no
    gradient (Lee et al. footnote 1); ``m_p = softmax(beta * k_p * n_p)`` over the grid, and the
    result is ``sum_q m_p(q) q``. ``sigma_cells=None`` gives the plain soft argmax.
    Returns (B, N, 2) xy positions in target cell units (x = column, y = row, cell centres at
    integers), differentiable w.r.t. ``scores``.
    """
    if scores.ndim != 4:
        raise ValueError(f"kernel_soft_argmax: scores must be (B, N, h, w), got {tuple(scores.shape)}")
    b, n, h, w = scores.shape
    flat = scores.reshape(b, n, h * w)
    ys = torch.arange(h, device=scores.device, dtype=scores.dtype)
    xs = torch.arange(w, device=scores.device, dtype=scores.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    gx, gy = gx.reshape(-1), gy.reshape(-1)
    if sigma_cells is not None:
        with torch.no_grad():
            idx = flat.argmax(dim=2)  # (B, N)
            ix, iy = gx[idx], gy[idx]
            d2 = (gx.view(1, 1, -1) - ix[..., None]) ** 2 + (gy.view(1, 1, -1) - iy[..., None]) ** 2
            kernel = torch.exp(-d2 / (2.0 * sigma_cells ** 2))
        flat = flat * kernel
    prob = torch.softmax(beta * flat, dim=2)  # softmax subtracts the max itself (stable)
    return torch.stack([(prob * gx).sum(2), (prob * gy).sum(2)], dim=2)


def match_positions(corr: torch.Tensor, beta: float = BETA,
                    sigma_cells: float | None = KERNEL_SIGMA_CELLS) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions' matches from a correlation.

    corr: (B, h_s, w_s, h_t, w_t) -> (grid_s2t (B, h_s, w_s, 2) normalised target xy,
    grid_t2s (B, h_t, w_t, 2) normalised source xy). Each query's score map is L2-normalised over
    the other image's grid before the kernel soft argmax (Lee et al. Sec. 3.1, n_p).
    """
    if corr.ndim != 5:
        raise ValueError(f"match_positions: corr must be (B, h_s, w_s, h_t, w_t), got {tuple(corr.shape)}")
    b, hs, ws, ht, wt = corr.shape
    s2t = l2_normalise(corr.reshape(b, hs * ws, ht, wt), dim=(2, 3))
    t2s = l2_normalise(corr.permute(0, 3, 4, 1, 2).reshape(b, ht * wt, hs, ws), dim=(2, 3))
    cells_s2t = kernel_soft_argmax(s2t, beta, sigma_cells).view(b, hs, ws, 2)
    cells_t2s = kernel_soft_argmax(t2s, beta, sigma_cells).view(b, ht, wt, 2)
    return cell_to_normalised(cells_s2t, (ht, wt)), cell_to_normalised(cells_t2s, (hs, ws))


# Ours, chosen on the PF-WILLOW folds' validation pairs (nn PCK@0.1 46.3 vs 42.3 with cell centres; beta 5-100 and
# radius 1-4 tried): a cell at 0.9 of the best score weighs exp(-1); the 5 x 5 cells around the best one are read.
SUBCELL_BETA = 10.0
SUBCELL_RADIUS_CELLS = 2


@dataclass(frozen=True)
class Subcell:
    """Settings of :func:`subcell_targets`."""

    beta: float = SUBCELL_BETA
    radius_cells: int = SUBCELL_RADIUS_CELLS


def subcell_targets(scores: torch.Tensor, grid_hw: tuple[int, int], image_hw: tuple[int, int],
                    beta: float = SUBCELL_BETA, radius_cells: int = SUBCELL_RADIUS_CELLS) -> torch.Tensor:
    """Sub-cell target positions of matches: (N, h*w) scores of N queries over an (h, w) target grid ->
    (N, 2) xy target pixels of an image of size ``image_hw``.

    A local soft argmax: each query's scores are divided by their maximum and weighted by
    softmax(beta * relative score) over the (2 r + 1)^2 cells around the best one (r = ``radius_cells``; a box,
    so a symmetric peak between two cells lands halfway, unlike Lee et al.'s Gaussian kernel centred on the
    argmax); the mean cell position is mapped to pixels as :func:`pipeline_lib.kernels.grids.cell_centres` maps
    cell indices (the best cell's centre when the scores are one-hot).
    """
    h, w = grid_hw
    if scores.ndim != 2 or scores.shape[1] != h * w:
        raise ValueError(f"subcell_targets: scores must be (N, {h * w}) for a {h} x {w} grid, got {tuple(scores.shape)}")
    if radius_cells < 0:
        raise ValueError(f"subcell_targets: radius_cells must be >= 0, got {radius_cells}")
    if scores.shape[0] == 0:
        return scores.new_zeros((0, 2))
    peak, idx = scores.max(dim=1, keepdim=True)
    rel = scores / torch.where(peak > 0, peak, torch.ones_like(peak))
    gy = torch.arange(h, device=scores.device).repeat_interleave(w)
    gx = torch.arange(w, device=scores.device).repeat(h)
    near = ((gx[None] - gx[idx]).abs() <= radius_cells) & ((gy[None] - gy[idx]).abs() <= radius_cells)
    prob = torch.softmax((beta * rel).masked_fill(~near, float("-inf")), dim=1)
    cells = torch.stack([prob @ gx.to(prob.dtype), prob @ gy.to(prob.dtype)], dim=1)
    return normalised_to_pixels(cell_to_normalised(cells, grid_hw), image_hw)
