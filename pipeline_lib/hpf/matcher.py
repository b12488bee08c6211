"""Hyperpixel Flow on cached features: hyperpixels of any layer set, RHM or NN matching, transfer.

No backbone runs here: every layer comes from the feature store of the extraction stage, loaded
once per (image, layer) and kept in memory, and the pair-independent Hough space is cached per
geometry, so a beam search scores hundreds of layer sets at the cost of matching alone.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..features import FeatureStore
from ..kernels.grids import cell_centres
from ..kernels.hyperpixels import build_hyperpixels, flatten_hyperpixels
from ..kernels.soft_argmax import Subcell, subcell_targets
from .rhm import (COS_EXPONENT, HOUGH_KERNEL_SIZE, N_BINS_PER_SIDE, assign, build_hough_space, cosine_similarity,
                  rhm_scores)
from .transfer import transfer_keypoints

HOUGH_CACHE_SIZE = 16  # geometries kept; PF-WILLOW at 300 px has a handful of distinct image sizes


@dataclass(frozen=True)
class MatchParams:
    """RHM and transfer settings (defaults: Min et al. and the reference code, see rhm.py)."""

    n_bins_per_side: int = N_BINS_PER_SIDE
    kernel_size: int = HOUGH_KERNEL_SIZE
    exponent: float = COS_EXPONENT
    # Min et al. Sec. 3.3: hyperpixels whose base-layer receptive field covers the keypoint;
    # None = half the measured receptive field of the base layer.
    transfer_radius_px: float | None = None


class HyperpixelMatcher:
    """Matches image pairs of one feature store with hyperpixels of a chosen layer set."""

    def __init__(self, store: FeatureStore, device: torch.device, params: MatchParams = MatchParams()):
        self.store = store
        self.device = device
        self.params = params
        self._feats: dict[tuple[str, str], torch.Tensor] = {}
        self._spaces: OrderedDict = OrderedDict()
        self._rf = {x["name"]: float(x["receptive_field"]) for x in store.layers}

    def layer_names(self, layers: Sequence[int]) -> list[str]:
        return [self.store.layer_names[i] for i in layers]

    def _layer(self, image_id: str, name: str) -> torch.Tensor:
        key = (image_id, name)
        if key not in self._feats:
            self._feats[key] = torch.from_numpy(self.store.get(image_id, [name])[name]).to(self.device)
        return self._feats[key]

    def hyperpixels(self, image_id: str, layers: Sequence[int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """(h*w, C) hyperpixels of an image and the base grid (h, w)."""
        hyper = build_hyperpixels([self._layer(image_id, n) for n in self.layer_names(layers)])
        return flatten_hyperpixels(hyper), tuple(hyper.shape[-2:])

    def _space(self, src_hw, trg_hw, src_grid, trg_grid):
        key = (src_hw, trg_hw, src_grid, trg_grid)
        if key not in self._spaces:
            src_pos = cell_centres(*src_grid, src_hw, device=self.device)
            trg_pos = cell_centres(*trg_grid, trg_hw, device=self.device)
            space = build_hough_space(src_pos, trg_pos, src_hw, trg_image_size=trg_hw,
                                      n_bins_per_side=self.params.n_bins_per_side,
                                      kernel_size=self.params.kernel_size)
            self._spaces[key] = (src_pos, trg_pos, space)
            if len(self._spaces) > HOUGH_CACHE_SIZE:
                self._spaces.popitem(last=False)
        return self._spaces[key]

    def transfer(self, src: str, trg: str, kps: np.ndarray, layers: Sequence[int], matcher: str = "rhm",
                 subcell: Subcell | None = None) -> np.ndarray:
        """(K, 2) source keypoints (resized pixels) -> (K, 2) target keypoints (resized pixels). Each source
        hyperpixel's match sits at its best target cell's centre, or (``subcell``) at the local soft argmax of
        its scores over the target grid (:func:`kernels.soft_argmax.subcell_targets`)."""
        fs, src_grid = self.hyperpixels(src, layers)
        ft, trg_grid = self.hyperpixels(trg, layers)
        src_hw, trg_hw = self.store.resized_hw(src), self.store.resized_hw(trg)
        src_pos, trg_pos, space = self._space(src_hw, trg_hw, src_grid, trg_grid)
        if matcher == "rhm":
            scores = rhm_scores(fs, ft, space, exponent=self.params.exponent)
        elif matcher == "nn":
            scores = cosine_similarity(fs, ft)
        else:
            raise ValueError(f"unknown matcher '{matcher}'; use 'rhm' or 'nn'.")
        if subcell is None:
            matched = trg_pos[assign(scores)]
        else:
            matched = subcell_targets(scores, trg_grid, trg_hw, subcell.beta, subcell.radius_cells)
        radius = self.params.transfer_radius_px
        if radius is None:
            radius = self._rf[self.layer_names(layers)[0]] / 2
        out = transfer_keypoints(torch.from_numpy(kps).to(src_pos), src_pos, matched, radius)
        return out.cpu().numpy().astype(np.float64)
