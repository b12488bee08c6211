"""Dense matching of two descriptor maps and keypoint transfer: RHM, cosine NN or optimal transport (with or
without RHM's geometric prior) on flattened maps, each keypoint moved with the matches of the source cells
around it (Min et al. 2019, Sec. 3.2-3.3; Liu et al. 2020). Pure tensor functions plus a cache of the
pair-independent Hough spaces; used by Hyperpixel Flow on hyperpixels and by FCSS on its descriptors."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .grids import cell_centres
from .keypoint_transfer import transfer_keypoints, transfer_rows
from .optimal_transport import OT_EPSILON, OT_EXPONENT, OT_ITERATIONS, transport_similarity
from .rhm import (COS_EXPONENT, HOUGH_KERNEL_SIZE, N_BINS_PER_SIDE, assign, build_hough_space, cosine_similarity,
                  hough_regularize, rhm_scores)
from .soft_argmax import Subcell, subcell_targets

HOUGH_CACHE_SIZE = 16  # geometries kept; PF-WILLOW at 300 px has a handful of distinct image sizes
# rhm: Min et al. Eq. 3-4; nn: cosine; ot: SCOT's transport plan alone; ot_rhm: the plan with RHM's Hough
# prior (SCOT's full matcher, "OTGeo" in its code)
MATCHERS = ("rhm", "nn", "ot", "ot_rhm")


@dataclass(frozen=True)
class MatchParams:
    """RHM and transfer settings (defaults: Min et al. and the reference code, see rhm.py)."""

    n_bins_per_side: int = N_BINS_PER_SIDE
    kernel_size: int = HOUGH_KERNEL_SIZE
    exponent: float = COS_EXPONENT
    # Min et al. Sec. 3.3: hyperpixels whose base-layer receptive field covers the keypoint;
    # None = half the measured receptive field of the base layer.
    transfer_radius_px: float | None = None
    # the optimal-transport matchers (Liu et al. 2020; see kernels/optimal_transport.py)
    ot_epsilon: float = OT_EPSILON
    ot_iterations: int = OT_ITERATIONS
    ot_exponent: float = OT_EXPONENT


class HoughCache:
    """Pair-independent Hough spaces (:func:`build_hough_space`) and cell centres, kept per geometry
    (image sizes and grids; the last ``size`` of them)."""

    def __init__(self, params: MatchParams, device: torch.device, size: int = HOUGH_CACHE_SIZE):
        self.params, self.device, self.size = params, device, size
        self._spaces: OrderedDict = OrderedDict()

    def __call__(self, src_hw, trg_hw, src_grid, trg_grid):
        """-> (src_pos (N, 2), trg_pos (M, 2), HoughSpace) for (H, W) image sizes and (h, w) grids."""
        key = (tuple(src_hw), tuple(trg_hw), tuple(src_grid), tuple(trg_grid))
        if key in self._spaces:
            self._spaces.move_to_end(key)
            return self._spaces[key]
        src_pos = cell_centres(*src_grid, src_hw, device=self.device)
        trg_pos = cell_centres(*trg_grid, trg_hw, device=self.device)
        space = build_hough_space(src_pos, trg_pos, src_hw, trg_image_size=trg_hw,
                                  n_bins_per_side=self.params.n_bins_per_side, kernel_size=self.params.kernel_size)
        entry = self._spaces[key] = (src_pos, trg_pos, space)
        while len(self._spaces) > self.size:
            self._spaces.popitem(last=False)
        return entry


def match_transfer(fs: torch.Tensor, ft: torch.Tensor, kps: torch.Tensor, src_hw, trg_hw, src_grid, trg_grid,
                   spaces: HoughCache, radius_px: float, matcher: str = "rhm",
                   subcell: Subcell | None = None) -> torch.Tensor:
    """Dense matching of two flattened descriptor maps and keypoint transfer (Min et al. Sec. 3.2-3.3).

    fs: (h*w, C) source descriptors on the (h, w) ``src_grid`` of an ``src_hw`` image, ft likewise; kps: (K, 2)
    source pixels -> (K, 2) target pixels. ``matcher`` (:data:`MATCHERS`): ``rhm`` (Eq. 3-4, exponent from
    ``spaces.params``), ``nn`` (cosine), ``ot`` (the transport plan) or ``ot_rhm`` (the plan times its Hough
    votes); each source cell's match at its best target cell's centre, or (``subcell``) the local soft
    argmax of its scores; keypoints move with the matches of the source cells within ``radius_px``."""
    src_pos, trg_pos, space = spaces(src_hw, trg_hw, src_grid, trg_grid)
    kps = kps.to(src_pos)
    rows = transfer_rows(kps, src_pos, radius_px)  # only these source cells move a keypoint
    if matcher == "rhm":
        scores = rhm_scores(fs, ft, space, exponent=spaces.params.exponent, rows=rows)
    elif matcher == "nn":
        scores = cosine_similarity(fs[rows], ft)
    elif matcher in ("ot", "ot_rhm"):  # the plan couples every row: all of them, then the transfer's rows
        p = spaces.params
        plan = transport_similarity(fs, ft, epsilon=p.ot_epsilon, iterations=p.ot_iterations, exponent=p.ot_exponent)
        scores = plan[rows] if matcher == "ot" else hough_regularize(plan, space, rows=rows)
    else:
        raise ValueError(f"unknown matcher '{matcher}'; use one of {', '.join(MATCHERS)}.")
    if subcell is None:
        matched = trg_pos[assign(scores)]
    else:
        matched = subcell_targets(scores, trg_grid, trg_hw, subcell.beta, subcell.radius_cells)
    return transfer_keypoints(kps, src_pos[rows], matched, radius_px)
