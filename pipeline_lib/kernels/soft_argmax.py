"""Kernel soft argmax (Lee et al. 2019, SFNet, Eqs. 2-3) and the matches of a correlation.

Used by SFNet and by the Siamese network's correlation fusion; the defaults are SFNet's.
"""

from __future__ import annotations

import torch

from .correlation import l2_normalise
from .grids import cell_to_normalised

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
