"""Benchmark protocols beyond one dataset's split: the category folds' per-fold view of a config, the
cross-dataset join of a training dataset to the evaluation dataset, and what a searched or trained
artifact learned from, with the refusal to test on it.

Imports no paper's package (the ground floor, beside :mod:`pipeline_lib.stage_io`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from .datasets import DatasetIndex, split_dataset
from .settings import Settings


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



# --- cross-dataset: search and train on train_dataset, evaluate on dataset ----------------------------------

def has_train_dataset(cfg: Mapping) -> bool:
    return bool(cfg.get("train_dataset", {}).get("root"))


def _content_hash(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def with_train_dataset(cfg: Mapping, index: DatasetIndex, train: DatasetIndex,
                       check_content: bool = False) -> DatasetIndex:
    """Cross-dataset protocol: ``index`` (every pair an evaluation pair) joined with the pairs of ``train``, the
    unsplit index of ``train_dataset`` (training pairs, ``val_fraction`` of each category's held out for validation). An image
    of both (the same image id, or with ``check_content`` the same file content under another name) is
    refused, naming it."""
    s = Settings(cfg)
    t = s.train_dataset
    if s.dataset.split.mode != "all_test":
        raise ValueError(f"train_dataset is given, so every pair of dataset {index.name} is an evaluation pair: set "
                         f"dataset.split.mode: all_test (it is {s.dataset.split.mode!r}).")
    train = split_dataset(train, "train_val", val_fraction=t.val_fraction, seed=s.split_seed)
    shared = sorted(set(index.images) & set(train.images))
    if shared:
        raise SeenError(f"image '{shared[0]}' is in the evaluation dataset ({index.images[shared[0]].path}) and in the "
                        f"training dataset ({train.images[shared[0]].path}) ({len(shared)} such images); choose "
                        f"evaluation categories the training dataset lacks (dataset.categories / "
                        f"train_dataset.categories).")
    by_hash = {_content_hash(r.path): k for k, r in train.images.items()} if check_content else {}
    for k, r in index.images.items() if check_content else ():
        twin = by_hash.get(_content_hash(r.path))
        if twin is not None:
            raise SeenError(f"evaluation image '{k}' ({r.path}) has the same content as training image '{twin}' "
                            f"({train.images[twin].path}); remove it from one of the datasets or choose other "
                            f"categories.")
    index.images = {**index.images, **train.images}
    index.pairs = [replace(p, split="test") for p in index.pairs] + list(train.pairs)
    index.skipped += [s._replace(where=f"train_dataset: {s.where}") for s in train.skipped]
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
    return {"pairs": sorted({p for r in recs for p in r["pairs"]}),
            "images": sorted({i for r in recs for i in r["images"]})}


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
    s = Settings(cfg)
    mode = s.evaluation.unseen
    if mode == "auto":
        mode = "pairs" if s.dataset.split.mode == "given" else "images"
    seen_pairs, seen_images = set(record["pairs"]), set(record["images"])
    for p in pairs:
        if p.pair_id in seen_pairs:
            raise SeenError(f"evaluation pair {p.pair_id} was a search/training pair of "
                            f"{[str(a) for a in artifacts if a is not None]}; evaluate on pairs it did not learn "
                            f"from (evaluation.split, dataset.split).")
        if mode == "images":
            for img in (p.src, p.trg):
                if img in seen_images:
                    raise SeenError(
                        f"evaluation image '{img}' (pair {p.pair_id}) was seen by the search or training behind "
                        f"{[str(a) for a in artifacts if a is not None]}; use an image-disjoint protocol "
                        f"(dataset.split.mode: image_disjoint or category_folds) or, where the dataset's split "
                        f"is over pairs by design, evaluation.unseen: pairs.")
    return record
