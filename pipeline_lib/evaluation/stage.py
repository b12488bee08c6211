"""Workflow stages of the evaluation: PCK of every method's predictions, the result tables, the pictures of test
pairs (predictions against the truth, dense flows as warped images), and the category-fold protocol's pooling of
its folds."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..atomic import atomic_path
from ..backbones import resolve_device
from ..datasets import DatasetIndex, Pair, load_rgb
from ..kernels.image_warp import warp_grid, warp_source
from ..methods.registry import match_factory
from ..pair_prediction import predict_pairs
from ..protocols import fold_view, has_train_dataset, refuse_seen
from ..settings import EvaluationSection, Settings, reads
from ..stage_io import eval_pairs, fold_table, load_dataset
from .pictures import draw_category, draw_warps, pairs_to_draw, safe_name
from .predictions import read_predictions
from .summary import (PER_PAIR_COLUMNS, SUMMARY_COLUMNS, account_skipped, evaluate_predictions, pool_folds, read_csv,
                      summarise, write_csv, write_summary_tables)

log = logging.getLogger(__name__)

FOLD_COLUMNS = ("fold", "test_categories", "train_pairs", "val_pairs", "test_pairs")


def protocol(cfg: Mapping) -> str:
    """The result rows' ``protocol``: cross_dataset (searched/trained on train_dataset), else the split mode
    (all_test, image_disjoint, given, category_folds)."""
    return "cross_dataset" if has_train_dataset(cfg) else Settings(cfg).dataset.split.mode


def row_facts(cfg: Mapping, index: DatasetIndex, ev: EvaluationSection, backbone: str, ms_per_pair: float,
              protocol_name: str) -> dict:
    """The columns every summary row carries besides its PCK: what was evaluated, how, and how fast."""
    return {"dataset": index.name, "backbone": backbone, "direction": ev.direction, "split": ev.split,
            "longer_side": Settings(cfg).image.longer_side, "n_skipped": len(index.skipped),
            "ms_per_pair": round(float(ms_per_pair), 3), "protocol": protocol_name}


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
        summary = summarise(rows, row_facts(cfg, index, ev, backbone, meta.get("ms_per_pair", float("nan")),
                                            protocol(cfg)))
        # a fold's own table leaves vanished categories to the pooled one (they may be another fold's)
        summary = account_skipped(summary, index.skipped, add_vanished=Settings(cfg).dataset.split.fold is None,
                                  split_dropped=index.split_dropped)
        write_csv(per_pair_csv, rows, PER_PAIR_COLUMNS)
        write_csv(summary_csv, summary, SUMMARY_COLUMNS)
        out += summary
    return out


@reads("seed", "dataset", "evaluation", "image")
def evaluate_and_aggregate(cfg: Mapping, methods: Sequence[str], backbone: str, predictions, predict_metas,
                           per_pair_csvs, summary_csvs, csv_path, md_path, png_path, html_path=None) -> None:
    """:func:`evaluate` every method, then the result contract pck_summary.csv (+ Markdown, plot, HTML)."""
    rows = evaluate(cfg, methods, backbone, predictions, predict_metas, per_pair_csvs, summary_csvs)
    write_summary_tables(rows, csv_path, md_path, png_path, html_path)


@reads("seed", "dataset", "evaluation", "image")
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
    ev = Settings(cfg).evaluation
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
        out += account_skipped(summarise(rows, row_facts(cfg, index, ev, backbone, ms, "category_folds")),
                               index.skipped)
    fold_rows = []
    for f in folds:
        view = load_dataset(fold_view(cfg, f))
        counts = {s: sum(1 for p in view.pairs if p.split == s) for s in ("train", "val", "test")}
        fold_rows.append({"fold": f, "test_categories": " ".join(c for c, g in sorted(table.items()) if g == f),
                          "train_pairs": counts["train"], "val_pairs": counts["val"], "test_pairs": counts["test"]})
    write_csv(folds_csv, fold_rows, FOLD_COLUMNS)
    write_summary_tables(out, csv_path, md_path, png_path, html_path)
    log.info("category folds %s pooled: %d pairs per method", folds, len(expected))


@reads("seed", "dataset", "evaluation", "pictures")
def draw_test_pairs(cfg: Mapping, methods: Sequence[str], predictions: Sequence[str | Path], out_dir: str | Path) -> None:
    """``<out_dir>/<category>.png``: the first ``pictures.per_category`` evaluation pairs of each
    category, every method's predictions against the truth (:mod:`.pictures`), at the middle of
    ``evaluation.alphas``; the directory is written atomically."""
    ev, n = Settings(cfg).evaluation, Settings(cfg).pictures.per_category
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    preds = {m: read_predictions(p) for m, p in zip(methods, predictions, strict=True)}
    alpha = sorted(ev.alphas)[len(ev.alphas) // 2]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for category, drawn in pairs_to_draw(pairs, n).items():
            draw_category(drawn, index, preds, ev.threshold, alpha, tmp / f"{safe_name(category)}.png")
    log.info("pictures of %d methods on up to %d pairs per category -> %s", len(methods), n, out_dir)


@reads("seed", "dataset", "evaluation", "pictures", "weights")
def draw_flow_warps(cfg: Mapping, backbone: str, methods: Sequence[str], weights: Sequence[str | Path],
                    out_dir: str | Path) -> None:
    """``<out_dir>/<category>.png``: the pairs of :func:`draw_test_pairs`, the source warped onto the target by each
    dense-flow method's trained model (``weights``, one per method): its matches of the target's pixels every
    ``pictures.warp_step`` px back into the source (:mod:`pipeline_lib.kernels.image_warp`, as ``match``'s
    warp.png). The rule's params add each method's own config section; the directory is written atomically."""
    s = Settings(cfg)
    index = load_dataset(cfg)
    _, pairs = eval_pairs(cfg, index)
    drawn = pairs_to_draw(pairs, s.pictures.per_category)
    shown = [p for group in drawn.values() for p in group]
    device = resolve_device(s.device)
    trg_hw = {p.pair_id: (index.images[p.trg].height, index.images[p.trg].width) for p in shown}
    backs = {p.pair_id: warp_grid(trg_hw[p.pair_id], s.pictures.warp_step) for p in shown}
    reverse = [Pair(p.pair_id, p.category, p.trg, p.src, backs[p.pair_id], np.full_like(backs[p.pair_id], np.nan),
                    np.ones(len(backs[p.pair_id]), dtype=bool)) for p in shown]
    warped: dict[str, dict[str, np.ndarray]] = {}
    for m, w in zip(methods, weights, strict=True):
        refuse_seen(cfg, shown, w)
        fn, frame = match_factory(m)(cfg, backbone, w, device, index.images)
        back, _ = predict_pairs(fn, reverse, frame, desc=f"warps {m}")
        warped[m] = {p.pair_id: warp_source(load_rgb(index.images[p.src].path), back[p.pair_id], trg_hw[p.pair_id],
                                            s.pictures.warp_step) for p in shown}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for category, group in drawn.items():
            draw_warps(group, index, warped, tmp / f"{safe_name(category)}.png")
    log.info("warp pictures of %s on up to %d pairs per category -> %s", list(methods), s.pictures.per_category,
             out_dir)
