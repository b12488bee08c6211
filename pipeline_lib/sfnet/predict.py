"""SFNet prediction: keypoint transfer through the dense source->target flow (Lee et al. Sec. 4.1/4.3).

"At test time, we upsample a flow field of size 20x20 using bilinear interpolation" and "warp
keypoints using an estimated dense flow": the source->target flow of the kernel soft argmax is
sampled bilinearly at each source keypoint and added to it. Images are resized to a square
``image_size`` first when given (Lee et al.: 320 x 320); keypoints and results stay in the pixels of
the images as passed in (normalised coordinates do not change under resizing). The loop over a
dataset's pairs is :func:`pipeline_lib.pair_prediction.predict_pairs`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..kernels.grids import normalised_to_pixels, pixel_grid, pixels_to_normalised
from ..kernels.sampling import sample_points
from ..pair_prediction import Image, ImageKeypointFn, forward_pair
from .model import SFNet


def source_flow(model: SFNet, src_img: Image, trg_img: Image,
                image_size: int | None = None) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """(1, h_s, w_s, 2) normalised source->target flow of the model, with the original (H, W) of both images."""
    out, src_hw, trg_hw = forward_pair(model, src_img, trg_img, image_size)
    return out.flow_s2t, src_hw, trg_hw


def transfer_points(flow_s2t: torch.Tensor, src_kps: torch.Tensor, src_hw: tuple[int, int],
                    trg_hw: tuple[int, int]) -> torch.Tensor:
    """Move (K, 2) source pixels along a (1, h, w, 2) normalised flow -> (K, 2) target pixels.

    The flow is sampled bilinearly (border values beyond the outer cell centres), i.e. the
    bilinearly upsampled flow read at the keypoint.
    """
    if src_kps.numel() == 0:
        return src_kps.new_zeros((0, 2))
    p = pixels_to_normalised(src_kps.to(flow_s2t), src_hw)
    return normalised_to_pixels(p + sample_points(flow_s2t[0].permute(2, 0, 1), p, padding_mode="border"), trg_hw)


def predict_keypoints(model: SFNet, src_img: Image, trg_img: Image, src_kps: np.ndarray,
                      image_size: int | None = None) -> np.ndarray:
    """Transfer (K, 2) xy source keypoints (pixels of ``src_img``) -> (K, 2) xy pixels of ``trg_img``.

    Images: (H, W, 3) uint8 arrays or (3, H, W) float tensors in [0, 1], any sizes; ``image_size``
    resizes both to that square before the model (Lee et al.: 320), None uses them as given.
    """
    src_kps = np.asarray(src_kps, dtype=np.float64).reshape(-1, 2)
    flow, src_hw, trg_hw = source_flow(model, src_img, trg_img, image_size)
    out = transfer_points(flow, torch.from_numpy(src_kps).to(flow.device, torch.float32), src_hw, trg_hw)
    return out.cpu().numpy().astype(np.float64)


def dense_flow(model: SFNet, src_img: Image, trg_img: Image, image_size: int | None = None) -> np.ndarray:
    """(H_s, W_s, 2) source->target flow in pixels at the source's own resolution (package convention:
    source pixel p matches target pixel p + flow[p])."""
    flow, src_hw, trg_hw = source_flow(model, src_img, trg_img, image_size)
    h, w = src_hw
    p = pixel_grid(src_hw, dtype=torch.float32).view(-1, 2).to(flow.device)
    return (transfer_points(flow, p, src_hw, trg_hw) - p).view(h, w, 2).cpu().numpy()


def sfnet_keypoint_fn(model: SFNet, image_size: int | None) -> ImageKeypointFn:
    """The model's keypoint transfer on a pair of images (for ``pair_prediction.on_images``)."""
    return lambda src, trg, kps: predict_keypoints(model, src, trg, kps, image_size)
