"""The NN baseline recovers the demo's known warps within a stated tolerance."""

import numpy as np
import torch

from pipeline_lib.settings import EvaluationSection
from pipeline_lib.evaluation import evaluate_predictions
from pipeline_lib.methods import nn_predictor
from pipeline_lib.pair_prediction import predict_pairs

# Stated tolerance: with ImageNet Lite0 features (stride-8 layer), NN puts at least this fraction of
# the demo's keypoints within 0.15 x the object box of the truth (measured: ~0.9 on this tiny demo).
MIN_PCK_AT_015 = 60.0


def test_nn_recovers_known_warps(tiny_demo_store):
    index, store = tiny_demo_store
    pairs = index.pairs
    preds, _ = predict_pairs(nn_predictor(store, "block04", torch.device("cpu")), pairs, store, progress=False)
    rows = evaluate_predictions("nn", pairs, index.images, preds, EvaluationSection(alphas=(0.15,)))
    pck = np.mean([r["pck"] for r in rows])
    identity = {p.pair_id: p.src_kps for p in pairs}  # keypoints left where they are
    base = np.mean([r["pck"] for r in evaluate_predictions("id", pairs, index.images, identity, EvaluationSection(alphas=(0.15,)))])
    assert pck >= MIN_PCK_AT_015, pck
    assert pck > base + 10, (pck, base)
