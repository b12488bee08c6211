"""WeakAlign prediction: keypoint transfer by the estimated affine + TPS transforms.

The network estimates, for an input pair (A, B), the backward map T: B -> A (a point of B to the
point of A it shows). Two ways to move *source* keypoints into the *target*:

- ``"swap"`` (default): run the network on (A = target, B = source), whose backward map sends
  source points to target points directly (analytic, no inversion). This is the authors'
  evaluation (``util/eval_util.py`` moves the points of the image passed as "target" into the one
  passed as "source" with ``tpsPointTnf`` then ``affPointTnf``), applied to our direction;
- ``"invert"``: run it on (A = source, B = target) and invert T at the keypoints (affine exactly,
  TPS by Newton's method, :func:`pipeline_lib.kernels.warps.inverse_composed_points`).

Keypoints and results are xy pixels of the images as passed in (any sizes; the model resizes them
internally and its transforms live in normalised coordinates).
"""

from __future__ import annotations

import numpy as np
import torch

from ..kernels.grids import normalised_to_pixels, pixels_to_normalised
from ..kernels.warps import composed_points, inverse_composed_points
from ..pair_prediction import Image, ImageKeypointFn, forward_pair
from .model import WeakAlign

TRANSFER_MODES = ("swap", "invert")


def estimate(model: WeakAlign, src_img: Image, trg_img: Image) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta_aff (1, 6), theta_tps (1, 2 g^2)) of the backward map target -> source of the pair.

    Images: (H, W, 3) uint8 arrays or (3, H, W) float tensors in [0, 1].
    """
    out, _, _ = forward_pair(model, src_img, trg_img)
    return out.theta_aff, out.theta_tps


def _hw(image: Image) -> tuple[int, int]:
    return (int(image.shape[0]), int(image.shape[1])) if isinstance(image, np.ndarray) else \
        (int(image.shape[1]), int(image.shape[2]))


def predict_keypoints(model: WeakAlign, src_img: Image, trg_img: Image, src_kps: np.ndarray,
                      mode: str = "swap") -> np.ndarray:
    """Transfer (K, 2) xy source keypoints (pixels of ``src_img``) -> (K, 2) xy pixels of ``trg_img``."""
    if mode not in TRANSFER_MODES:
        raise ValueError(f"weakalign transfer mode must be one of {TRANSFER_MODES}, got '{mode}'")
    src_kps = np.asarray(src_kps, dtype=np.float64).reshape(-1, 2)
    if len(src_kps) == 0:
        return np.zeros((0, 2))
    src_hw, trg_hw = _hw(src_img), _hw(trg_img)
    pts = pixels_to_normalised(torch.from_numpy(src_kps), src_hw)[None]
    if mode == "swap":
        theta_aff, theta_tps = estimate(model, trg_img, src_img)  # backward map: source -> target
        out = composed_points(theta_aff.double().cpu(), theta_tps.double().cpu(), pts)
    else:
        theta_aff, theta_tps = estimate(model, src_img, trg_img)  # backward map: target -> source
        out, _ = inverse_composed_points(theta_aff.double().cpu(), theta_tps.double().cpu(), pts)
    return normalised_to_pixels(out[0], trg_hw).numpy()


def weakalign_keypoint_fn(model: WeakAlign, mode: str = "swap") -> ImageKeypointFn:
    """The model's keypoint transfer on a pair of images (for ``pair_prediction.on_images``)."""
    return lambda src, trg, kps: predict_keypoints(model, src, trg, kps, mode)
