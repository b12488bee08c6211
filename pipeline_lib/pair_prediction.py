"""Per-pair prediction: the loop every method runs over a dataset's pairs, and one pair through a
two-image network.

A method supplies only a keypoint function, ``(source id, target id, (K, 2) source keypoints) ->
(K, 2) target keypoints``; :func:`predict_pairs` runs it on the valid keypoints of every pair and
returns what ``stage_io.finish_predictions`` writes. Keypoints are in the pixels of the original
images, or, when a :class:`Frame` is given (a ``FeatureStore`` is one), in the pixels of each image
resized as the frame says: the loop scales the source keypoints in and the predictions back out.
Methods that work on images wrap an :data:`ImageKeypointFn` with :func:`on_images`.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .backbones import to_tensor
from .datasets import ImageRecord, Pair, load_rgb
from .geometry import scale_points

Image = np.ndarray | torch.Tensor  # (H, W, 3) uint8 or (3, H, W) float in [0, 1]
# (source id, target id, (K, 2) source keypoints) -> (K, 2) target keypoints, in the frame's pixels
KeypointFn = Callable[[str, str, np.ndarray], np.ndarray]
# (source image, target image, (K, 2) source keypoints) -> (K, 2) target keypoints, in their pixels
ImageKeypointFn = Callable[[Image, Image, np.ndarray], np.ndarray]


class Frame(Protocol):
    """The sizes of every image before and after the resize a method works at."""

    def original_hw(self, image_id: str) -> tuple[int, int]: ...

    def resized_hw(self, image_id: str) -> tuple[int, int]: ...


def predict_pairs(keypoint_fn: KeypointFn, pairs: Sequence[Pair], frame: Frame | None = None, desc: str = "predict",
                  progress: bool = True) -> tuple[dict[str, np.ndarray], float]:
    """Run ``keypoint_fn`` on every pair's valid keypoints (in ``frame``'s resized pixels when given).

    Returns ({pair_id: (K, 2) predicted original target pixels, NaN where the keypoint is invalid},
    milliseconds per pair, everything the keypoint function does included).
    """
    preds: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for p in tqdm(pairs, desc=desc, unit="pair", disable=not progress):
        out = np.full(p.trg_kps.shape, np.nan)
        if p.valid.any():
            kps = p.src_kps[p.valid]
            if frame is None:
                out[p.valid] = keypoint_fn(p.src, p.trg, kps)
            else:
                moved = keypoint_fn(p.src, p.trg, scale_points(kps, frame.original_hw(p.src), frame.resized_hw(p.src)))
                out[p.valid] = scale_points(moved, frame.resized_hw(p.trg), frame.original_hw(p.trg))
        preds[p.pair_id] = out
    ms = 1000.0 * (time.perf_counter() - t0) / max(len(pairs), 1)
    return preds, ms


def on_images(keypoint_fn: ImageKeypointFn, images: Mapping[str, ImageRecord]) -> KeypointFn:
    """A :data:`KeypointFn` that reads the pair's images (``datasets.load_rgb``) for ``keypoint_fn``; an image
    stays loaded while consecutive pairs share it."""
    cache: dict[str, np.ndarray] = {}

    def run(src: str, trg: str, kps: np.ndarray) -> np.ndarray:
        nonlocal cache
        cache = {k: cache[k] if k in cache else load_rgb(images[k].path) for k in (src, trg)}
        return keypoint_fn(cache[src], cache[trg], kps)

    return run


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


def forward_pair(model: torch.nn.Module, src_img: Image, trg_img: Image, image_size: int | None = None):
    """(model output, original (H, W) of the source, of the target) of a two-image network (SFNet,
    WeakAlign) on one pair, in eval mode without gradients (the model's training mode is restored)."""
    device = next(model.parameters()).device
    src, src_hw = as_batch(src_img, image_size, device)
    trg, trg_hw = as_batch(trg_img, image_size, device)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = model(src, trg)
    model.train(was_training)
    return out, src_hw, trg_hw
