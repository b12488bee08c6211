"""Workflow stage of the feature-based methods: predictions from a cached feature store.

Which factory builds a method's predictor, and which artifacts it reads, is the registry's
(:mod:`pipeline_lib.methods.registry`); no method runs the backbone again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from ..backbones import resolve_device
from ..features import FeatureStore, open_features, require_key
from ..pair_prediction import predict_pairs
from ..protocols import refuse_seen
from ..settings import Settings, reads
from ..stage_io import eval_pairs, finish_predictions, load_dataset
from . import Predictor, nn_predictor, stage_end_layers
from .registry import ENCODER, SEARCH, method as registry_entry, predictor_factory


def nn_method(method: str, cfg: Mapping, store: FeatureStore, search_json, device) -> tuple[Predictor, dict]:
    """The nearest-neighbour baseline on ``nn.layer`` (no search record)."""
    s = Settings(cfg)
    return (nn_predictor(store, s.nn.layer, device, s.transfer.subcell()),
            {"layer": store.resolve_layer(s.nn.layer), "target": s.transfer.target})


def nn_stage_ends_method(method: str, cfg: Mapping, store: FeatureStore, search_json, device) -> tuple[Predictor, dict]:
    """The fixed bar: NN on the backbone's stage-end layers as one hyperpixel (no search record)."""
    layers = stage_end_layers(store.layers)
    transfer = Settings(cfg).transfer
    return nn_predictor(store, layers, device, transfer.subcell()), {"layers": layers, "target": transfer.target}


@reads("seed", "dataset", "evaluation")
def predict(cfg: Mapping, method: str, features: str | Path, out_csv: str | Path, meta_json: str | Path,
            search_json: str | Path | None = None, checkpoint: str | Path | None = None) -> None:
    """Run a feature-based method on the evaluation pairs and write its predictions.

    A method that needs the trained encoder's store (gaur_hpf) gets its ``checkpoint``: the store and
    the search record must both carry that checkpoint's key."""
    entry = registry_entry(method)
    if ENCODER in entry.needs and checkpoint is None:
        raise ValueError(f"method {method} runs on the trained encoder's features: give its checkpoint.")
    if SEARCH in entry.needs and search_json is None:
        raise ValueError(f"method {method} needs a layer search record (rule {entry.rule} reads one).")
    factory = predictor_factory(method)
    store, facts = open_features(features, checkpoint)
    if checkpoint is not None:
        require_key(json.loads(Path(search_json).read_text()).get("checkpoint_sha256"), checkpoint, search_json)
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    seen = refuse_seen(cfg, pairs, search_json, checkpoint)
    facts["learned_from"] = {k: len(v) for k, v in seen.items()}  # counts; the lists are in the artifacts
    device = resolve_device(Settings(cfg).device)
    predictor, params = factory(entry.variant, cfg, store, search_json, device)
    params.update(facts, backbone=store.attrs.get("backbone"))
    preds, ms = predict_pairs(predictor, pairs, store, desc=f"{method}")
    finish_predictions(cfg, method, preds, ms, out_csv, meta_json, device=str(device), **params)
