"""Methods map a pair's source keypoints to target keypoints. Each registers a predictor built from
cached features, so no method ever runs the backbone again. A predictor is the keypoint function of
:func:`pipeline_lib.pair_prediction.predict_pairs`, run with the feature store as its frame."""

from __future__ import annotations

import numpy as np
import torch

from ..backbones import layer_member
from ..features import FeatureStore
from ..kernels.hyperpixels import build_hyperpixels
from ..kernels.soft_argmax import Subcell
from ..pair_prediction import KeypointFn
from .nn import nn_transfer

# (src_id, trg_id, src_kps in resized source pixels) -> target keypoints in resized target pixels
Predictor = KeypointFn

# The fixed bar of issue 17: the last layer of each of these strides, one hyperpixel, no search (measured there on
# all 900 PF-WILLOW pairs: 52.3 PCK@0.1 for Lite0, 7 below hpf).
STAGE_END_STRIDES = (8, 16, 32)


def stage_end_layers(layers: list[dict], strides=STAGE_END_STRIDES) -> list[str]:
    """The last layer of each of ``strides`` (in the backbone's order; the finest first: the hyperpixel's base)
    among a store's ``layers`` ({name, stride, ...}); of a composite backbone's store, each member's, stride by
    stride (the bar on the same backbones as a layer set searched across them)."""
    last: dict[str, dict[float, str]] = {}  # member -> stride -> its last layer
    for x in layers:  # later layers of a stride overwrite earlier ones
        last.setdefault(layer_member(x["name"]), {})[float(x["stride"])] = x["name"]
    names = [ends[float(s)] for s in strides for ends in last.values() if float(s) in ends]
    if not names:
        raise ValueError(f"no layer of stride {'/'.join(map(str, strides))} among {[x['name'] for x in layers]}")
    return names


def nn_predictor(store: FeatureStore, layer: str | list[str], device: torch.device,
                 subcell: Subcell | None = None) -> Predictor:
    """The nearest-neighbour baseline on one cached layer, or on several as one hyperpixel (the first the base):
    cosine similarity of the source descriptor read bilinearly at the keypoint to every target cell; the target
    at the best cell's centre, or at a sub-cell position (``subcell``)."""
    layers = [store.resolve_layer(layer)] if isinstance(layer, str) else list(layer)

    def feature(image_id: str) -> torch.Tensor:
        maps = store.get(image_id, layers)
        if len(layers) == 1:
            return torch.from_numpy(maps[layers[0]]).to(device)
        return build_hyperpixels([torch.from_numpy(maps[n]).to(device) for n in layers])

    def predict(src: str, trg: str, kps: np.ndarray) -> np.ndarray:
        out = nn_transfer(feature(src), feature(trg), torch.from_numpy(kps).float().to(device), store.resized_hw(src),
                          store.resized_hw(trg), subcell)
        return out.cpu().numpy().astype(np.float64)

    return predict


__all__ = ["Predictor", "nn_predictor", "stage_end_layers", "STAGE_END_STRIDES"]
