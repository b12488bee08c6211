"""One function per workflow stage: read the validated config, call the pure code, write artifacts.

The Snakemake scripts in ``workflow/scripts`` are thin adapters onto these functions, so every stage
can also be run, tested and debugged without Snakemake.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

import torch

from . import chain
from .atomic import write_text
from .backbones import build_backbone, resolve_device
from .config import EvalConfig, config_json, section
from .datasets import demo as demo_data
from .evaluation import evaluate_predictions, read_predictions, summarise
from .evaluation.summary import (PER_PAIR_COLUMNS, SUMMARY_COLUMNS, pool_folds, read_csv, write_csv,
                                 write_summary_tables)
from .features import FeatureStore, extract_features
from .hpf import stage as hpf_stage
from .methods import PREDICTORS, predict_pairs
from .provenance import provenance
# Re-exported: the stage helpers live in stage_io (the ground floor that imports no paper).
from .stage_io import (categories, dataset_root, eval_pairs, feature_key, finish_predictions,  # noqa: F401
                       fold_table, fold_view, has_train_dataset, load_dataset, manifest, prediction_inputs,
                       refuse_seen, save_trained, write_meta)

log = logging.getLogger(__name__)


def generate_demo(cfg: Mapping, out_dir: str | Path) -> None:
    demo_data.generate(out_dir, section(demo_data.DemoConfig, cfg["demo"]), seed=cfg["seed"])


def index_dataset(cfg: Mapping, pairs_csv: str | Path, meta_json: str | Path, files=None) -> None:
    """Validate the dataset and write its pair list with splits (and the skipped pairs) for inspection;
    ``files`` (the dataset's, :func:`stage_io.dataset_files`) go into ``manifest.json`` beside them. Under
    the cross-dataset protocol an image in both datasets, by name or content, stops it here."""
    index = load_dataset(cfg, check_content=True)
    if files:
        write_text(Path(meta_json).with_name("manifest.json"), json.dumps(manifest(files), indent=1))
    rows = [{"pair_id": p.pair_id, "category": p.category, "split": p.split, "src": p.src, "trg": p.trg,
             "n_keypoints": int(p.valid.sum())} for p in index.pairs]
    write_csv(pairs_csv, rows, ("pair_id", "category", "split", "src", "trg", "n_keypoints"))
    counts = {s: sum(1 for p in index.pairs if p.split == s) for s in ("train", "val", "test")}
    write_meta(meta_json, cfg, n_images=len(index.images), n_pairs=len(index.pairs), split_counts=counts,
               categories=index.categories(), skipped=[{"pair": a, "reason": b} for a, b in index.skipped])
    log.info("dataset %s: %d images, %d pairs %s, %d skipped", index.name, len(index.images), len(index.pairs),
             counts, len(index.skipped))


def extract(cfg: Mapping, backbone_name: str, out_path: str | Path) -> None:
    index = load_dataset(cfg)
    torch.manual_seed(cfg["seed"])
    backbone = build_backbone(backbone_name, weights_path=cfg["weights"].get(backbone_name))
    extract_features(index, backbone, out_path, cfg["image"]["longer_side"], cfg["features"]["batch_size"],
                     resolve_device(cfg["device"]), cfg["features"]["dtype"],
                     provenance=json.loads(json.dumps(provenance(cfg, cfg["seed"]), default=str)))


def extract_encoder(cfg: Mapping, checkpoint: str | Path, out_path: str | Path) -> None:
    """Features of the Siamese-trained encoder (the full chain), keyed by the checkpoint's sha256."""
    key = chain.extract_encoder_features(cfg, checkpoint, out_path)
    log.info("encoder features of %s (key %s) -> %s", checkpoint, key, out_path)


def open_features(features: str | Path, checkpoint: str | Path | None = None) -> tuple[FeatureStore, dict]:
    """A feature store and the facts to record with what is made from it; with ``checkpoint`` the store
    must have been extracted from it (else StaleFeaturesError)."""
    if checkpoint is None:
        return FeatureStore(features), {}
    store = chain.open_encoder_store(features, checkpoint)
    return store, {"checkpoint": str(checkpoint), "checkpoint_sha256": chain.store_key(store)}


def predict(cfg: Mapping, method: str, features: str | Path, out_csv: str | Path, meta_json: str | Path,
            search_json: str | Path | None = None, checkpoint: str | Path | None = None) -> None:
    """Run a feature-based method on the evaluation pairs and write its predictions.

    ``checkpoint``: the features are the trained encoder's (method gaur_hpf); the store and the
    search record must both carry this checkpoint's key."""
    if method == chain.CHAIN_METHOD and checkpoint is None:
        raise ValueError(f"method {method} runs on the trained encoder's features: give its checkpoint.")
    store, facts = open_features(features, checkpoint)
    if checkpoint is not None:
        found = json.loads(Path(search_json).read_text()).get("checkpoint_sha256")
        chain.require_key(found, checkpoint, search_json)
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    seen = refuse_seen(cfg, pairs, None if method == "nn" else search_json, checkpoint)
    facts["learned_from"] = {k: len(v) for k, v in seen.items()}  # counts; the lists are in the artifacts
    device = resolve_device(cfg["device"])
    if method == "nn":
        predictor = PREDICTORS["nn"](store, cfg["nn"]["layer"], device)
        params = {"layer": store.resolve_layer(cfg["nn"]["layer"])}
    elif method in hpf_stage.METHODS or method in hpf_stage.SAME_AS:
        predictor, params = hpf_stage.predictor(method, cfg, store, search_json, device)
    else:
        raise ValueError(f"unknown feature-based method '{method}'; known: nn, "
                         f"{', '.join(hpf_stage.METHODS + tuple(hpf_stage.SAME_AS))}")
    params.update(facts, backbone=store.attrs.get("backbone"))
    preds, ms = predict_pairs(predictor, pairs, store, desc=f"{method}")
    finish_predictions(cfg, method, preds, ms, out_csv, meta_json, device=str(device), **params)


def protocol(cfg: Mapping) -> str:
    """The result rows' ``protocol``: cross_dataset (searched/trained on train_dataset), else the split mode
    (all_test, image_disjoint, given, category_folds)."""
    return "cross_dataset" if has_train_dataset(cfg) else cfg["dataset"]["split"]["mode"]


def evaluate(cfg: Mapping, methods: Sequence[str], backbone: str, predictions: Sequence[str | Path],
             predict_metas: Sequence[str | Path], per_pair_csvs: Sequence[str | Path],
             summary_csvs: Sequence[str | Path]) -> list[dict]:
    """PCK of every method's predictions on the evaluation pairs (the dataset is indexed once).

    Writes each method's per-pair and summary CSV (``methods/<m>/pck_{per_pair,summary}.csv``) and
    returns all summary rows, in the order of ``methods``."""
    lists = (predictions, predict_metas, per_pair_csvs, summary_csvs)
    if any(len(x) != len(methods) for x in lists):
        raise ValueError(f"evaluate: {len(methods)} methods but {[len(x) for x in lists]} predictions/metas/outputs")
    index = load_dataset(cfg)
    ev, pairs = eval_pairs(cfg, index)
    out: list[dict] = []
    for method, pred, meta_path, per_pair_csv, summary_csv in zip(methods, *lists):
        rows = evaluate_predictions(method, pairs, index.images, read_predictions(pred), ev)
        meta = json.loads(Path(meta_path).read_text())
        extra = {"dataset": index.name, "backbone": backbone, "direction": ev.direction, "split": ev.split,
                 "longer_side": cfg["image"]["longer_side"], "n_skipped": len(index.skipped),
                 "ms_per_pair": round(float(meta.get("ms_per_pair", float("nan"))), 3),
                 "protocol": protocol(cfg)}
        summary = summarise(rows, extra)
        write_csv(per_pair_csv, rows, PER_PAIR_COLUMNS)
        write_csv(summary_csv, summary, SUMMARY_COLUMNS)
        out += summary
    return out


def evaluate_and_aggregate(cfg: Mapping, methods: Sequence[str], backbone: str, predictions, predict_metas,
                           per_pair_csvs, summary_csvs, csv_path, md_path, png_path, html_path=None) -> None:
    """:func:`evaluate` every method, then the result contract pck_summary.csv (+ Markdown, plot, HTML)."""
    rows = evaluate(cfg, methods, backbone, predictions, predict_metas, per_pair_csvs, summary_csvs)
    write_summary_tables(rows, csv_path, md_path, png_path, html_path)


def pool_category_folds(cfg: Mapping, methods: Sequence[str], backbone: str, folds: Sequence[str],
                        fold_per_pair: Sequence[str | Path], fold_metas: Sequence[str | Path],
                        per_pair_csvs: Sequence[str | Path], folds_csv, csv_path, md_path, png_path,
                        html_path=None) -> None:
    """The category-fold protocol's tables: each method's per-pair rows of every fold pooled (every pair
    of the dataset tested once, checked), summarised per category and overall; ``folds.csv`` lists
    which categories each fold tested and how many pairs it searched/trained on.

    ``fold_per_pair``/``fold_metas``: fold-major, method-minor (``expand(fold=..., method=...)`` order)."""
    n = len(methods)
    if len(fold_per_pair) != n * len(folds) or len(fold_metas) != n * len(folds) or len(per_pair_csvs) != n:
        raise ValueError(f"pool_folds: {n} methods x {len(folds)} folds, got {len(fold_per_pair)} per-pair files, "
                         f"{len(fold_metas)} metas, {len(per_pair_csvs)} outputs")
    index = load_dataset(cfg)  # the fold-free view: every pair of the dataset
    expected = [p.pair_id for p in index.pairs]
    ev = section(EvalConfig, cfg["evaluation"])
    table = fold_table(cfg)
    out: list[dict] = []
    for m, method in enumerate(methods):
        by_fold = {f: read_csv(fold_per_pair[i * n + m]) for i, f in enumerate(folds)}
        rows = pool_folds(by_fold, expected)
        per_fold_ms = [(json.loads(Path(fold_metas[i * n + m]).read_text()), len(by_fold[f]))
                       for i, f in enumerate(folds)]
        total = sum(k for _, k in per_fold_ms) or 1
        ms = sum(float(meta.get("ms_per_pair", float("nan"))) * k for meta, k in per_fold_ms) / total
        write_csv(per_pair_csvs[m], rows, PER_PAIR_COLUMNS + ("fold",))
        extra = {"dataset": index.name, "backbone": backbone, "direction": ev.direction, "split": ev.split,
                 "longer_side": cfg["image"]["longer_side"], "n_skipped": len(index.skipped),
                 "ms_per_pair": round(ms, 3), "protocol": "category_folds"}
        out += summarise(rows, extra)
    fold_rows = []
    for f in folds:
        view = load_dataset(fold_view(cfg, f))
        counts = {s: sum(1 for p in view.pairs if p.split == s) for s in ("train", "val", "test")}
        fold_rows.append({"fold": f, "test_categories": " ".join(c for c, g in sorted(table.items()) if g == f),
                          "train_pairs": counts["train"], "val_pairs": counts["val"], "test_pairs": counts["test"]})
    write_csv(folds_csv, fold_rows, ("fold", "test_categories", "train_pairs", "val_pairs", "test_pairs"))
    write_summary_tables(out, csv_path, md_path, png_path, html_path)
    log.info("category folds %s pooled: %d pairs per method", folds, len(expected))


def search_layers(cfg: Mapping, features, out_json, out_csv, out_png, checkpoint=None) -> None:
    """Hyperpixel layer search on a backbone's features, or on the trained encoder's (``checkpoint``)."""
    store, facts = open_features(features, checkpoint)
    hpf_stage.search(cfg, store, out_json, out_csv, out_png, resolve_device(cfg["device"]), extra=facts)


def learn_manifold(cfg: Mapping, category: str, features, out_store, out_kfd, out_labels_png, out_conv_png) -> None:
    from .manifold.stage import learn

    learn(cfg, category, features, out_store, out_kfd, out_labels_png, out_conv_png)


__all__ = ["generate_demo", "index_dataset", "extract", "extract_encoder", "open_features", "predict",
           "finish_predictions", "evaluate", "evaluate_and_aggregate",
           "load_dataset", "eval_pairs", "write_meta", "config_json"]
