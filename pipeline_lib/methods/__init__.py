"""Methods map a pair's source keypoints to target keypoints. Each registers a predictor built from
cached features, so no method ever runs the backbone again."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..datasets.base import Pair
from ..features import FeatureStore
from ..geometry import scale_points

# (src_id, trg_id, src_kps in resized source pixels) -> target keypoints in resized target pixels
Predictor = Callable[[str, str, np.ndarray], np.ndarray]


def nn_predictor(store: FeatureStore, layer: str, device: torch.device) -> Predictor:
    """The nearest-neighbour baseline on one cached layer."""
    from .nn import nn_transfer

    layer = store.resolve_layer(layer)

    def predict(src: str, trg: str, kps: np.ndarray) -> np.ndarray:
        fs = torch.from_numpy(store.get(src, [layer])[layer]).to(device)
        ft = torch.from_numpy(store.get(trg, [layer])[layer]).to(device)
        out = nn_transfer(fs, ft, torch.from_numpy(kps).float().to(device), store.resized_hw(src), store.resized_hw(trg))
        return out.cpu().numpy().astype(np.float64)

    return predict


def predict_pairs(predictor: Predictor, pairs: Sequence[Pair], store: FeatureStore,
                  desc: str = "predict", progress: bool = True) -> tuple[dict[str, np.ndarray], float]:
    """Run ``predictor`` on every pair (coordinates converted to and from the feature store's resized
    images). Returns predictions in original target pixels (NaN for invalid keypoints) and ms per pair."""
    preds = {}
    t0 = time.perf_counter()
    for p in tqdm(pairs, desc=desc, unit="pair", disable=not progress):
        s_orig, t_orig = store.original_hw(p.src), store.original_hw(p.trg)
        s_res, t_res = store.resized_hw(p.src), store.resized_hw(p.trg)
        out = np.full(p.trg_kps.shape, np.nan)
        kps = scale_points(p.src_kps[p.valid], s_orig, s_res)
        out[p.valid] = scale_points(predictor(p.src, p.trg, kps), t_res, t_orig)
        preds[p.pair_id] = out
    ms = 1000.0 * (time.perf_counter() - t0) / max(len(pairs), 1)
    return preds, ms


PREDICTORS: dict[str, Callable[..., Predictor]] = {"nn": nn_predictor}
