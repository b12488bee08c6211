"""Ground floor of every workflow stage: the dataset behind a config, its evaluation pairs, the JSON
sidecar of an artifact, a method's predictions and a trained model's weights.

Imports no paper's package, so every ``<paper>/stage.py`` (and ``stages.py``, the generic stages) can
import it at module level without a cycle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .atomic import write_text
from .backbones import resolve_device
from .config import EvalConfig, section
from .datasets import DatasetIndex, open_dataset
from .datasets.base import category_dirs
from .evaluation import oriented, write_predictions
from .provenance import provenance
from .training import TrainResult, load_trained, save_weights

log = logging.getLogger(__name__)


def dataset_root(cfg: Mapping) -> Path:
    """Where the dataset lives: generated under results/ for the demo, else ``dataset.root``."""
    if cfg["dataset"]["kind"] == "demo":
        return Path(cfg["results_dir"]) / cfg["dataset"]["name"] / "data"
    return Path(cfg["dataset"]["root"])


def feature_key(cfg: Mapping) -> str:
    """Name of the feature cache of a dataset: shared by every config that reads the same images at
    the same resolution (e.g. pf-willow and pf-willow-split), so features are never computed twice."""
    d = cfg["dataset"]
    if d["kind"] == "demo":
        return d["name"]
    ident = json.dumps({"root": str(Path(d["root"]).resolve()), "pairs_csv": d["pairs_csv"],
                        "on_bad_pair": d["on_bad_pair"]}, sort_keys=True)
    return f"{d['kind']}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def categories(cfg: Mapping) -> list[str]:
    """Category names, known before any job runs (one manifold job per category)."""
    d = cfg["dataset"]
    if d["kind"] == "demo":
        return sorted(cfg["demo"]["photos"])
    root = Path(d["root"])
    sub = {"pf-willow": root, "pf-pascal": root / "Annotations", "spair": root / "JPEGImages"}[d["kind"]]
    if not sub.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {sub}; set dataset.root to the {d['kind']} release.")
    return [p.name for p in category_dirs(sub)]


def load_dataset(cfg: Mapping) -> DatasetIndex:
    d = cfg["dataset"]
    return open_dataset(d["kind"], dataset_root(cfg), name=d["name"], pairs_csv=d["pairs_csv"],
                        on_bad_pair=d["on_bad_pair"], split_mode=d["split"]["mode"],
                        train_fraction=d["split"]["train_fraction"], val_fraction=d["split"]["val_fraction"],
                        seed=cfg["seed"])


def write_meta(path: str | Path, cfg: Mapping, **extra) -> None:
    """The JSON sidecar recorded next to an artifact: config, seed, versions and stage facts."""
    write_text(path, json.dumps({**provenance(cfg, cfg["seed"]), **extra}, indent=2, sort_keys=True, default=str))


def eval_pairs(cfg: Mapping, index: DatasetIndex):
    ev = section(EvalConfig, cfg["evaluation"])
    pairs = [p for p in index.pairs if ev.split == "all" or p.split == ev.split]
    if not pairs:
        raise ValueError(f"no pairs in split '{ev.split}' of dataset {index.name}; change evaluation.split or "
                         f"dataset.split.")
    return ev, oriented(pairs, ev.direction)


def finish_predictions(cfg: Mapping, method: str, preds: Mapping, ms_per_pair: float, out_csv: str | Path,
                       meta_json: str | Path, **params) -> None:
    """Write any method's predictions (pair_id -> (K, 2) original target pixels) and their sidecar.

    Every method's predict rule ends here, so the evaluation rule is the same for all of them.
    """
    write_predictions(out_csv, dict(preds))
    write_meta(meta_json, cfg, method=method, params=params, ms_per_pair=ms_per_pair, n_pairs=len(preds))


def save_trained(cfg: Mapping, method: str, model: nn.Module, result: TrainResult, out_weights: str | Path,
                 device: torch.device, **facts) -> None:
    """Final weights, then their sidecar ``train_meta.json`` (config, seed, versions, history)."""
    save_weights(model, out_weights, {"method": method, method: dict(cfg[method]), **facts})
    write_meta(Path(out_weights).with_name("train_meta.json"), cfg, method=method,
               resumed_from_epoch=result.resumed_from, history=result.history, device=str(device), **facts)


def prediction_inputs(cfg: Mapping, model: nn.Module, weights: str | Path):
    """(dataset index, evaluation pairs, device, ``model`` with the trained ``weights``) of a predict stage."""
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    device = resolve_device(cfg["device"])
    return index, pairs, device, load_trained(model, weights, device)


__all__ = ["dataset_root", "feature_key", "categories", "load_dataset", "write_meta", "eval_pairs", "finish_predictions", "save_trained", "prediction_inputs"]
