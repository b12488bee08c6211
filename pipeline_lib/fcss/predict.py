"""FCSS inference: dense descriptors of both images, then nearest-neighbour keypoint transfer with
the shared :func:`pipeline_lib.methods.nn.nn_transfer` (Kim et al. Eq. 12 is a Euclidean NN; on
unit-norm descriptors it picks the same target cell as the cosine NN used there).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Mapping

import numpy as np
import torch

from ..datasets.base import ImageRecord, load_rgb
from ..features import resize_image
from ..kernels.soft_argmax import Subcell
from ..methods.nn import nn_transfer
from .model import FCSS

log = logging.getLogger(__name__)
DESCRIPTOR_CACHE_IMAGES = 16  # descriptor maps kept while predicting a pair list (pairs share images)


def describe(model: FCSS, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (L, h, w) FCSS descriptors (no gradient; device of the model)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"describe: image must be (3, H, W), got {tuple(image.shape)}")
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(image[None].to(device))[0]


def predict_keypoints(model: FCSS, src_img: torch.Tensor, trg_img: torch.Tensor, src_kps: torch.Tensor) -> torch.Tensor:
    """Transfer (K, 2) xy source keypoints (pixels of ``src_img``) to (K, 2) xy target pixels.

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
    keypoint transfer between them: the keypoint function and the frame of
    :func:`pipeline_lib.pair_prediction.predict_pairs`. Puts the model in eval mode."""

    def __init__(self, model: FCSS, images: Mapping[str, ImageRecord], longer_side: int, subcell: Subcell | None = None):
        self.model = model.eval()
        self.images = images
        self.longer_side = longer_side
        self.subcell = subcell  # the target at the best cell's centre (None) or sub-cell (config section transfer)
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
            return nn_transfer(fs, ft, torch.from_numpy(kps).to(fs), s_hw, t_hw,
                               self.subcell).cpu().numpy().astype(np.float64)
