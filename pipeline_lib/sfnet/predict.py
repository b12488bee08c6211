"""SFNet prediction: keypoint transfer through the dense source->target flow (Lee et al. Sec. 4.1/4.3).

"At test time, we upsample a flow field of size 20x20 using bilinear interpolation" and "warp
keypoints using an estimated dense flow": the source->target flow of the kernel soft argmax is
sampled bilinearly at each source keypoint and added to it. Images are resized to a square
``image_size`` first when given (Lee et al.: 320 x 320); keypoints and results stay in the pixels of
the images as passed in (normalised coordinates do not change under resizing).

Also here: :func:`predict_pairs`, the loop over a dataset's pairs shared with
:mod:`pipeline_lib.weakalign.predict`, whose output goes to ``stages.finish_predictions``.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..backbones import to_tensor
from ..datasets import DatasetIndex, Pair, load_rgb
from .model import SFNet, normalised_to_pixels, pixels_to_normalised

Image = np.ndarray | torch.Tensor
# (src image (H, W, 3) uint8, trg image, src keypoints (K, 2) in src pixels) -> (K, 2) target pixels
KeypointFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def as_batch(image: Image, image_size: int | None, device, dtype=torch.float32) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 array or (3, H, W) float tensor in [0, 1] -> ((1, 3, H', W') on device, (H, W)).

    H' = W' = ``image_size`` when given (square resize, aspect not kept), else the input size.
    """
    t = to_tensor(image) if isinstance(image, np.ndarray) else image.float()
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 or (3, H, W) float, got shape {tuple(t.shape)}")
    hw = (int(t.shape[1]), int(t.shape[2]))
    t = t[None].to(device=device, dtype=dtype)
    if image_size is not None and hw != (image_size, image_size):
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True).clamp(0, 1)
    return t, hw


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def forward_pair(model: torch.nn.Module, src_img: Image, trg_img: Image, image_size: int | None = None):
    """(model output, original (H, W) of the source, of the target) for one pair, run in eval mode without
    gradients (the model's training mode is restored); shared by every two-image model (SFNet, WeakAlign)."""
    device = _model_device(model)
    src, src_hw = as_batch(src_img, image_size, device)
    trg, trg_hw = as_batch(trg_img, image_size, device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = model(src, trg)
    model.train(was_training)
    return out, src_hw, trg_hw


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
    f = F.grid_sample(flow_s2t.permute(0, 3, 1, 2), p.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                      align_corners=False)[0, :, 0].T
    return normalised_to_pixels(p + f, trg_hw)


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
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    p = torch.stack([xs, ys], -1).view(-1, 2).to(flow.device)
    return (transfer_points(flow, p, src_hw, trg_hw) - p).view(h, w, 2).cpu().numpy()


def predict_pairs(keypoint_fn: KeypointFn, index: DatasetIndex, pairs: Sequence[Pair], desc: str = "predict",
                  progress: bool = True) -> tuple[dict[str, np.ndarray], float]:
    """Run ``keypoint_fn`` on every pair's original images.

    Returns ({pair_id: (K, 2) predicted target pixels, NaN where the keypoint is invalid}, ms per
    pair), the input of ``stages.finish_predictions``.
    """
    preds: dict[str, np.ndarray] = {}
    cache: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for p in tqdm(pairs, desc=desc, unit="pair", disable=not progress):
        # keep only this pair's images: consecutive pairs often share one
        cache = {k: cache[k] if k in cache else load_rgb(index.images[k].path) for k in (p.src, p.trg)}
        imgs = [cache[p.src], cache[p.trg]]
        out = np.full(p.trg_kps.shape, np.nan)
        if p.valid.any():
            out[p.valid] = keypoint_fn(imgs[0], imgs[1], p.src_kps[p.valid])
        preds[p.pair_id] = out
    ms = 1000.0 * (time.perf_counter() - t0) / max(len(pairs), 1)
    return preds, ms


def sfnet_keypoint_fn(model: SFNet, image_size: int | None) -> KeypointFn:
    """A :data:`KeypointFn` for :func:`predict_pairs`."""
    return lambda src, trg, kps: predict_keypoints(model, src, trg, kps, image_size)
