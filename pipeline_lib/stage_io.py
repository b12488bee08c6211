"""Ground floor of every workflow stage: the dataset behind a config, its evaluation pairs, the JSON
sidecar of an artifact, a method's predictions and a trained model's weights.

Imports no paper's package, so every ``<paper>/stage.py`` (and ``stages.py``, the generic stages) can
import it at module level without a cycle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .atomic import write_text
from .backbones import resolve_device
from .config import EvalConfig, section
from .datasets import DatasetIndex, category_folds, open_dataset
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
    what = {"root": str(Path(d["root"]).resolve()), "pairs_csv": d["pairs_csv"], "on_bad_pair": d["on_bad_pair"]}
    if d.get("categories"):  # a subset of the classes is another image set (key of the full set unchanged)
        what["categories"] = sorted(d["categories"])
    if has_train_dataset(cfg):  # the store holds the training dataset's images too
        t = cfg["train_dataset"]
        what["train"] = {"kind": t["kind"], "root": str(Path(t["root"]).resolve()), "pairs_csv": t["pairs_csv"],
                         "categories": sorted(t["categories"]), "on_bad_pair": t["on_bad_pair"]}
    ident = json.dumps(what, sort_keys=True)
    return f"{d['kind']}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def categories(cfg: Mapping) -> list[str]:
    """Names of the categories the per-category label-free stages (manifold, pseudo flow) run on, known
    before any job runs: the dataset's, or the training dataset's under the cross-dataset protocol."""
    d = cfg["train_dataset"] if has_train_dataset(cfg) else cfg["dataset"]
    if d["kind"] == "demo":
        return sorted(cfg["demo"]["photos"])
    root = Path(d["root"])
    sub = {"pf-willow": root, "pf-pascal": root / "Annotations", "spair": root / "JPEGImages"}[d["kind"]]
    if not sub.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {sub}; set dataset.root to the {d['kind']} release.")
    found = [p.name for p in category_dirs(sub)]
    wanted = d.get("categories") or []
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise FileNotFoundError(f"dataset.categories names {unknown}, not class folders of {sub} ({found}); "
                                f"fix dataset.categories.")
    return [c for c in found if not wanted or c in wanted]


# --- category folds: one workflow, every fold's jobs under folds/<fold>/ -----------------------------------

def is_folds(cfg: Mapping) -> bool:
    return cfg["dataset"]["split"]["mode"] == "category_folds"


def fold_names(cfg: Mapping) -> list[str]:
    """``fold0`` .. ``fold<K-1>`` under the category-fold protocol, else none."""
    return [f"fold{i}" for i in range(cfg["dataset"]["split"]["folds"])] if is_folds(cfg) else []


def fold_view(cfg: Mapping, fold: str | None) -> dict:
    """The config a fold's job runs with: ``dataset.split.fold`` set from its ``fold<i>`` name (a copy)."""
    out = json.loads(json.dumps(cfg))
    if fold is not None:
        if not is_folds(cfg):
            raise ValueError(f"fold '{fold}' given but dataset.split.mode is {cfg['dataset']['split']['mode']!r}")
        out["dataset"]["split"]["fold"] = int(fold.removeprefix("fold"))
    return out


def fold_table(cfg: Mapping) -> dict[str, str]:
    """Category -> fold name (the seeded assignment the fold jobs use), listed with the pooled results."""
    return {c: f"fold{i}" for c, i in category_folds(categories(cfg), cfg["dataset"]["split"]["folds"],
                                                     cfg["seed"]).items()}


def has_train_dataset(cfg: Mapping) -> bool:
    return bool(cfg.get("train_dataset", {}).get("root"))


def load_dataset(cfg: Mapping) -> DatasetIndex:
    """The index every stage reads: ``dataset`` with its split, plus (cross-dataset protocol) the pairs of
    ``train_dataset`` as training and validation pairs."""
    index = _open_eval_dataset(cfg)
    return with_train_dataset(cfg, index) if has_train_dataset(cfg) else index


def _open_eval_dataset(cfg: Mapping) -> DatasetIndex:
    d = cfg["dataset"]
    return open_dataset(d["kind"], dataset_root(cfg), name=d["name"], pairs_csv=d["pairs_csv"],
                        on_bad_pair=d["on_bad_pair"], split_mode=d["split"]["mode"],
                        train_fraction=d["split"]["train_fraction"], val_fraction=d["split"]["val_fraction"],
                        seed=cfg["seed"], categories=d.get("categories") or (), folds=d["split"].get("folds", 0),
                        fold=d["split"].get("fold"))


def _content_hash(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def with_train_dataset(cfg: Mapping, index: DatasetIndex) -> DatasetIndex:
    """Cross-dataset protocol: ``index`` (every pair an evaluation pair) joined with the pairs of
    ``train_dataset`` (training pairs, ``val_fraction`` of each category's held out for validation). An image
    of both (the same image id, or the same file content under another name) is refused, naming it."""
    t = cfg["train_dataset"]
    if cfg["dataset"]["split"]["mode"] != "all_test":
        raise ValueError(f"train_dataset is given, so every pair of dataset {index.name} is an evaluation pair: set "
                         f"dataset.split.mode: all_test (it is {cfg['dataset']['split']['mode']!r}).")
    train = open_dataset(t["kind"], Path(t["root"]), name=f"{index.name}-train", pairs_csv=t["pairs_csv"],
                         on_bad_pair=t["on_bad_pair"], split_mode="train_val", val_fraction=t["val_fraction"],
                         seed=cfg["seed"], categories=t["categories"])
    shared = sorted(set(index.images) & set(train.images))
    if shared:
        raise SeenError(f"image '{shared[0]}' is in the evaluation dataset ({index.images[shared[0]].path}) and in the "
                        f"training dataset ({train.images[shared[0]].path}) ({len(shared)} such images); choose "
                        f"evaluation categories the training dataset lacks (dataset.categories / "
                        f"train_dataset.categories).")
    by_hash = {_content_hash(r.path): k for k, r in train.images.items()}
    for k, r in index.images.items():
        twin = by_hash.get(_content_hash(r.path))
        if twin is not None:
            raise SeenError(f"evaluation image '{k}' ({r.path}) has the same content as training image '{twin}' "
                            f"({train.images[twin].path}); remove it from one of the datasets or choose other "
                            f"categories.")
    index.images = {**index.images, **train.images}
    index.pairs = [replace(p, split="test") for p in index.pairs] + list(train.pairs)
    index.skipped += [(f"train_dataset: {a}", b) for a, b in train.skipped]
    return index


# --- what a searched or trained artifact learned from, and the refusal to test on it ------------------------

class SeenError(ValueError):
    """An evaluation pair shares an image (or is a pair) that a method searched or trained on."""


def learned_from(pairs=(), images=()) -> dict:
    """The record every searched or trained artifact keeps: the pairs it read and every image behind them."""
    ids = sorted({i for p in pairs for i in (p.src, p.trg)} | set(images))
    return {"pairs": sorted(p.pair_id for p in pairs), "images": ids}


def merge_learned(*records: Mapping | None) -> dict:
    """One record for an artifact built on others (WeakAlign on CNNGeometric, gaur_hpf on the Siamese encoder)."""
    recs = [r for r in records if r]
    return {"pairs": sorted({p for r in recs for p in r["pairs"]}), "images": sorted({i for r in recs for i in r["images"]})}


def sidecar(artifact: str | Path) -> Path:
    """The JSON that records what ``artifact`` learned from: a JSON artifact itself (search.json), else the
    ``train_meta.json`` beside a checkpoint."""
    artifact = Path(artifact)
    return artifact if artifact.suffix == ".json" else artifact.with_name("train_meta.json")


def read_learned(artifact: str | Path) -> dict:
    path = sidecar(artifact)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the record of what {artifact} learned from is missing; rerun the rule "
                                f"that made {Path(artifact).name}.")
    record = json.loads(path.read_text()).get("learned_from")
    if record is None:
        raise SeenError(f"{path} does not say which images and pairs it learned from (made by an older version); "
                        f"rerun the rule that made it.")
    return record


def refuse_seen(cfg: Mapping, pairs, *artifacts: str | Path | None) -> dict:
    """Stop before predicting when an evaluation pair was seen by the search or training behind ``artifacts``
    (``evaluation.unseen``: ``images`` - any of its images; ``pairs`` - the pair itself). Returns the merged
    record, kept with the predictions."""
    record = merge_learned(*(read_learned(a) for a in artifacts if a is not None))
    mode = cfg["evaluation"].get("unseen", "auto")
    if mode == "auto":
        mode = "pairs" if cfg["dataset"]["split"]["mode"] == "given" else "images"
    seen_pairs, seen_images = set(record["pairs"]), set(record["images"])
    for p in pairs:
        if p.pair_id in seen_pairs:
            raise SeenError(f"evaluation pair {p.pair_id} was a search/training pair of {list(filter(None, artifacts))}; "
                            f"evaluate on pairs it did not learn from (evaluation.split, dataset.split).")
        if mode == "images":
            for img in (p.src, p.trg):
                if img in seen_images:
                    raise SeenError(
                        f"evaluation image '{img}' (pair {p.pair_id}) was seen by the search or training behind "
                        f"{[str(a) for a in artifacts if a is not None]}; use an image-disjoint protocol "
                        f"(dataset.split.mode: image_disjoint or category_folds) or, where the dataset's split "
                        f"is over pairs by design, evaluation.unseen: pairs.")
    return record


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
                 device: torch.device, learned: Mapping, **facts) -> None:
    """Final weights, then their sidecar ``train_meta.json`` (config, seed, versions, history, and the
    ``learned`` record of :func:`learned_from`, which every prediction from these weights checks)."""
    save_weights(model, out_weights, {"method": method, method: dict(cfg[method]), **facts})
    write_meta(Path(out_weights).with_name("train_meta.json"), cfg, method=method, learned_from=dict(learned),
               resumed_from_epoch=result.resumed_from, history=result.history, device=str(device), **facts)


def prediction_inputs(cfg: Mapping, model: nn.Module, weights: str | Path):
    """(dataset index, evaluation pairs, device, ``model`` with the trained ``weights``) of a predict stage;
    refuses evaluation pairs the training behind ``weights`` saw (:func:`refuse_seen`)."""
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    refuse_seen(cfg, pairs, weights)
    device = resolve_device(cfg["device"])
    return index, pairs, device, load_trained(model, weights, device)


__all__ = ["dataset_root", "feature_key", "categories", "has_train_dataset", "with_train_dataset", "is_folds", "fold_names", "fold_view", "fold_table",
           "SeenError", "learned_from", "merge_learned", "read_learned", "refuse_seen", "load_dataset", "write_meta", "eval_pairs", "finish_predictions", "save_trained", "prediction_inputs"]
