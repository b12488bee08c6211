"""Methods map a pair's source keypoints to target keypoints. Each registers a predictor built from
cached features, so no method ever runs the backbone again. A predictor is the keypoint function of
:func:`pipeline_lib.pair_prediction.predict_pairs`, run with the feature store as its frame."""

from __future__ import annotations

import numpy as np
import torch

from ..features import FeatureStore
from ..pair_prediction import KeypointFn
from .nn import nn_transfer

# (src_id, trg_id, src_kps in resized source pixels) -> target keypoints in resized target pixels
Predictor = KeypointFn


def nn_predictor(store: FeatureStore, layer: str, device: torch.device) -> Predictor:
    """The nearest-neighbour baseline on one cached layer."""
    layer = store.resolve_layer(layer)

    def predict(src: str, trg: str, kps: np.ndarray) -> np.ndarray:
        fs = torch.from_numpy(store.get(src, [layer])[layer]).to(device)
        ft = torch.from_numpy(store.get(trg, [layer])[layer]).to(device)
        out = nn_transfer(fs, ft, torch.from_numpy(kps).float().to(device), store.resized_hw(src), store.resized_hw(trg))
        return out.cpu().numpy().astype(np.float64)

    return predict


__all__ = ["Predictor", "nn_predictor"]
