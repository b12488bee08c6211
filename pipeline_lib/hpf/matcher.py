"""Hyperpixel Flow on cached features: hyperpixels of any layer set, RHM or NN matching, transfer.

No backbone runs here: every layer comes from the feature store of the extraction stage, loaded
once per (image, layer) and kept in memory, and the pair-independent Hough space is cached per
geometry, so a beam search scores hundreds of layer sets at the cost of matching alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..features import FeatureStore
from ..kernels.dense_match import HoughCache, MatchParams, match_transfer
from ..kernels.hyperpixels import build_hyperpixels, flatten_hyperpixels
from ..kernels.soft_argmax import Subcell

__all__ = ["HyperpixelMatcher", "MatchParams"]  # MatchParams lives in kernels.dense_match


class HyperpixelMatcher:
    """Matches image pairs of one feature store with hyperpixels of a chosen layer set."""

    def __init__(self, store: FeatureStore, device: torch.device, params: MatchParams = MatchParams()):
        self.store = store
        self.device = device
        self.params = params
        self._feats: dict[tuple[str, str], torch.Tensor] = {}
        self._spaces = HoughCache(params, device)
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

    def transfer(self, src: str, trg: str, kps: np.ndarray, layers: Sequence[int], matcher: str = "rhm",
                 subcell: Subcell | None = None) -> np.ndarray:
        """(K, 2) source keypoints (resized pixels) -> (K, 2) target keypoints (resized pixels) by
        :func:`match_transfer` on the hyperpixels of ``layers``; the transfer radius is ``params.transfer_radius_px``
        or half the base layer's receptive field (Min et al. Sec. 3.3)."""
        fs, src_grid = self.hyperpixels(src, layers)
        ft, trg_grid = self.hyperpixels(trg, layers)
        radius = self.params.transfer_radius_px
        if radius is None:
            radius = self._rf[self.layer_names(layers)[0]] / 2
        out = match_transfer(fs, ft, torch.from_numpy(kps), self.store.resized_hw(src), self.store.resized_hw(trg),
                             src_grid, trg_grid, self._spaces, radius, matcher, subcell)
        return out.cpu().numpy().astype(np.float64)
