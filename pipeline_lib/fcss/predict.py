"""FCSS inference: dense descriptors of both images, then keypoint transfer by one of two matchers:

- ``nn``: nearest-neighbour transfer with the shared :func:`pipeline_lib.methods.nn.nn_transfer` (Kim et al.
  Eq. 12 is a Euclidean NN; on unit-norm descriptors it picks the same target cell as the cosine NN);
- ``rhm``: regularized Hough matching of the two descriptor maps (Min et al. Eq. 3-4, the shared
  :func:`pipeline_lib.kernels.dense_match.match_transfer`). Kim et al. never match FCSS by plain NN: every result
  of theirs is FCSS inside a regularizing optimizer (SIFT Flow, DSP, Proposal Flow; Tables 3-4), and RHM is
  Min et al.'s form of Proposal Flow's Hough matching.

FCSS descriptors are non-negative (exp gating, Kim et al. Eq. 11) and share a large common component, so
their cosines crowd near 1 (a PF-WILLOW pair: 1% / 50% / 99% quantiles 0.69 / 0.85 / 0.93, against -0.22 / 0.09 / 0.47
for the backbone features they are computed from) and RHM's confidence ReLU(cos)^3 (Min et al. Eq. 4), made for
features whose unrelated cells have cosines near 0, barely tells a match from the rest. Before RHM the two maps
are centred on their joint mean descriptor and renormalised, so the cosine becomes a Pearson correlation
(:func:`centre_pair`; parameter-free, and d stays Min et al.'s 3). Measured, PCK@0.1: PF-WILLOW split test
(140 pairs) untrained / trained FCSS, centred 49.3 / 48.3, raw cosines d = 3 39.6 / 40.1, d = 30 47.6 / 45.4; demo
centred 71.9 / 70.0, d = 30 66.9 / 66.7, d = 100 77.2 / 76.1: the best exponent of raw cosines moves with the
data, the centring needs none.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.base import ImageRecord, load_rgb
from ..features import resize_image
from ..kernels.dense_match import HoughCache, MatchParams, match_transfer
from ..kernels.soft_argmax import Subcell
from ..methods.nn import nn_transfer
from .model import FCSS

log = logging.getLogger(__name__)
DESCRIPTOR_CACHE_IMAGES = 16  # descriptor maps kept while predicting a pair list (pairs share images)
# Hough spaces kept: at stride 4 one space of two 300 px images holds 75 x 56 squared int64 bin ids (141 MB), and
# PF-WILLOW's images differ in size, so a larger cache costs memory and rarely hits.
HOUGH_SPACES_KEPT = 2
MATCHERS = ("nn", "rhm")


def centre_pair(src_desc: torch.Tensor, trg_desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, h, w), (L, h', w') -> both maps minus their joint mean descriptor (over every cell of the two), each
    cell L2-normalised again: cosines of the results are Pearson correlations of the descriptors."""
    mean = torch.cat([src_desc.flatten(1), trg_desc.flatten(1)], 1).mean(1)[:, None, None]
    return F.normalize(src_desc - mean, dim=0), F.normalize(trg_desc - mean, dim=0)


def descriptor_transfer(src_desc: torch.Tensor, trg_desc: torch.Tensor, kps: torch.Tensor, src_hw: tuple[int, int],
                        trg_hw: tuple[int, int], matcher: str = "nn", subcell: Subcell | None = None,
                        spaces: HoughCache | None = None) -> torch.Tensor:
    """(L, h, w) and (L, h', w') descriptor maps of two images of sizes ``src_hw``, ``trg_hw``; (K, 2) source
    pixels -> (K, 2) target pixels. ``rhm`` (on the maps of :func:`centre_pair`) needs ``spaces`` (its exponent in
    ``spaces.params``); each keypoint moves with the RHM matches of the source cells within one cell of it (ours:
    the descriptor map has no receptive field to take half of, as Min et al. do)."""
    if matcher == "nn":
        return nn_transfer(src_desc, trg_desc, kps, src_hw, trg_hw, subcell)
    if matcher != "rhm":
        raise ValueError(f"fcss: unknown matcher '{matcher}'; use one of {MATCHERS}")
    if spaces is None:
        raise ValueError("descriptor_transfer: the rhm matcher needs a HoughCache (spaces)")
    src_desc, trg_desc = centre_pair(src_desc, trg_desc)
    (c, h, w), (_, h2, w2) = src_desc.shape, trg_desc.shape
    cell_px = max(src_hw[0] / h, src_hw[1] / w)
    return match_transfer(src_desc.reshape(c, -1).T, trg_desc.reshape(c, -1).T, kps, src_hw, trg_hw, (h, w),
                          (h2, w2), spaces, cell_px, "rhm", subcell)


def describe(model: FCSS, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (L, h, w) FCSS descriptors (no gradient; device of the model)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"describe: image must be (3, H, W), got {tuple(image.shape)}")
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(image[None].to(device))[0]


def predict_keypoints(model: FCSS, src_img: torch.Tensor, trg_img: torch.Tensor, src_kps: torch.Tensor) -> torch.Tensor:
    """Transfer (K, 2) xy source keypoints (pixels of ``src_img``) to (K, 2) xy target pixels by NN.

    src_img, trg_img: (3, H, W) and (3, H', W') float in [0, 1]; the result is on the model's device
    and lies on the centres of the target descriptor cells.
    """
    if src_kps.ndim != 2 or src_kps.shape[1] != 2:
        raise ValueError(f"predict_keypoints: src_kps must be (K, 2), got {tuple(src_kps.shape)}")
    was_training = model.training
    model.eval()
    try:
        src_desc, trg_desc = describe(model, src_img), describe(model, trg_img)
    finally:
        model.train(was_training)
    return nn_transfer(src_desc, trg_desc, src_kps.to(src_desc), tuple(src_img.shape[1:]), tuple(trg_img.shape[1:]))


class DescriptorFrame:
    """FCSS descriptors of a dataset's images resized to ``longer_side`` (the last few kept), and the
    keypoint transfer between them (:func:`descriptor_transfer` with ``matcher``):
    the keypoint function and the frame of :func:`pipeline_lib.pair_prediction.predict_pairs`. Puts the model in
    eval mode."""

    def __init__(self, model: FCSS, images: Mapping[str, ImageRecord], longer_side: int, subcell: Subcell | None = None,
                 matcher: str = "nn"):
        if matcher not in MATCHERS:
            raise ValueError(f"fcss.matcher must be one of {MATCHERS}, got '{matcher}'")
        self.model = model.eval()
        self.images = images
        self.longer_side = longer_side
        self.subcell = subcell  # the target at the best cell's centre (None) or sub-cell (config section transfer)
        self.matcher = matcher
        self._spaces = HoughCache(MatchParams(), next(model.parameters()).device,
                                  HOUGH_SPACES_KEPT)
        self._cache: OrderedDict[str, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()

    def descriptors(self, image_id: str) -> tuple[torch.Tensor, tuple[int, int]]:
        """(L, h, w) descriptors of the resized image and its resized (H, W)."""
        if image_id in self._cache:
            self._cache.move_to_end(image_id)
            return self._cache[image_id]
        img = resize_image(load_rgb(self.images[image_id].path), self.longer_side)
        self._cache[image_id] = (describe(self.model, img), tuple(img.shape[1:]))
        if len(self._cache) > DESCRIPTOR_CACHE_IMAGES:
            self._cache.popitem(last=False)
        return self._cache[image_id]

    def original_hw(self, image_id: str) -> tuple[int, int]:
        rec = self.images[image_id]
        return rec.height, rec.width

    def resized_hw(self, image_id: str) -> tuple[int, int]:
        return self.descriptors(image_id)[1]

    def __call__(self, src: str, trg: str, kps: np.ndarray) -> np.ndarray:
        """(K, 2) resized source pixels -> (K, 2) resized target pixels."""
        (fs, s_hw), (ft, t_hw) = self.descriptors(src), self.descriptors(trg)
        with torch.inference_mode():
            return descriptor_transfer(fs, ft, torch.from_numpy(kps).to(fs), s_hw, t_hw, self.matcher, self.subcell,
                                       self._spaces).cpu().numpy().astype(np.float64)
