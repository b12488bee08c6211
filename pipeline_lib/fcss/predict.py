"""FCSS inference: dense descriptors of both images, then nearest-neighbour keypoint transfer with
the shared :func:`pipeline_lib.methods.nn.nn_transfer` (Kim et al. Eq. 12 is a Euclidean NN; on
unit-norm descriptors it picks the same target cell as the cosine NN used there).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..datasets.base import ImageRecord, Pair, load_rgb
from ..features import resize_image
from ..geometry import scale_points
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


def predict_pairs(model: FCSS, pairs: Sequence[Pair], images: Mapping[str, ImageRecord], longer_side: int,
                  desc: str = "fcss") -> tuple[dict[str, np.ndarray], float]:
    """Predict every pair at ``longer_side`` resolution; returns ({pair_id: (K, 2) original target
    pixels, NaN where invalid}, ms per pair including descriptor computation). Feeds
    :func:`pipeline_lib.stages.finish_predictions`."""
    model.eval()
    cache: OrderedDict[str, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()

    def get(key: str) -> tuple[torch.Tensor, tuple[int, int]]:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        img = resize_image(load_rgb(images[key].path), longer_side)
        cache[key] = (describe(model, img), tuple(img.shape[1:]))
        if len(cache) > DESCRIPTOR_CACHE_IMAGES:
            cache.popitem(last=False)
        return cache[key]

    preds: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for p in tqdm(pairs, desc=desc, unit="pair"):
        (fs, s_hw), (ft, t_hw) = get(p.src), get(p.trg)
        s_rec, t_rec = images[p.src], images[p.trg]
        kps = scale_points(p.src_kps[p.valid], (s_rec.height, s_rec.width), s_hw)
        with torch.inference_mode():
            out_res = nn_transfer(fs, ft, torch.from_numpy(kps).to(fs), s_hw, t_hw).cpu().numpy().astype(np.float64)
        out = np.full(p.trg_kps.shape, np.nan)
        out[p.valid] = scale_points(out_res, t_hw, (t_rec.height, t_rec.width))
        preds[p.pair_id] = out
    ms = 1000.0 * (time.perf_counter() - t0) / max(len(pairs), 1)
    return preds, ms
