"""Sub-cell targets (config section ``transfer``): every training-free method with cell-centre and soft-argmax
targets, per fold, on cached features and the folds' own layer searches, with PCK and time per pair beside the
cell-centre baseline of the same run.

Needs the folds config's features and ``hpf/search.json`` of every fold (for the hpf rows), e.g.
``snakemake --cores 2 <results>/pf-willow-folds/folds/fold{0,1,2}/efficientnet_lite0/hpf/search.json
--configfile config/pf-willow-folds.yaml``. Choose settings on ``--split val``, report ``--split test`` once.

Usage:
    python bench/bench_transfer.py --methods nn nn_stage_ends hpf --split val --variant 10,2 --variant 20,3
    python bench/bench_transfer.py --methods hpf hpf_ot hpf_ot_only --split val --set hpf.ot_iterations=1
Prints a Markdown table and saves ``bench/results/transfer.csv``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline_lib.config import load_config, validate_config
from pipeline_lib.evaluation.summary import evaluate_predictions
from pipeline_lib.features import FeatureStore
from pipeline_lib.methods.registry import method as registry_entry, predictor_factory
from pipeline_lib.pair_prediction import predict_pairs
from pipeline_lib.protocols import fold_view
from pipeline_lib.stage_io import eval_pairs, feature_key, load_dataset
from _timing import markdown_table, save_rows

BACKBONE = "efficientnet_lite0"  # default of --backbone


@dataclass
class Row:
    method: str
    target: str
    split: str
    pck_010_per_fold: str
    n_pairs: int
    pck_005: float
    pck_010: float
    ms_per_pair: float
    time_vs_cell: float


COLUMNS = [f.name for f in fields(Row)]


def score(cfg, method: str, store: FeatureStore, fold: str,
          backbone: str = BACKBONE) -> tuple[dict, int, float, list[dict]]:
    """({alpha: PCK}, pairs, ms per pair, per-pair rows) of ``method`` on one fold's evaluation pairs."""
    cfg = fold_view(cfg, fold)
    index = load_dataset(cfg)
    ev, pairs = eval_pairs(cfg, index)
    search = Path(cfg["results_dir"]) / cfg["dataset"]["name"] / "folds" / fold / backbone / "hpf" / "search.json"
    fn, _ = predictor_factory(method)(registry_entry(method).variant, cfg, store, search, torch.device("cpu"))
    t0 = time.perf_counter()
    preds, _ = predict_pairs(fn, pairs, frame=store, progress=False)
    ms = 1000 * (time.perf_counter() - t0) / len(pairs)
    rows = evaluate_predictions(method, pairs, index.images, preds, ev)
    pck = {a: float(np.mean([r["pck"] for r in rows if r["alpha"] == a])) for a in (0.05, 0.1)}
    return pck, len(pairs), ms, rows


def apply_sets(cfg: dict, items) -> dict:
    """``cfg`` with each ``"hpf.ot_iterations=1"`` set in place (the value parsed as YAML)."""
    for item in items:
        key, _, value = item.partition("=")
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/pf-willow-folds.yaml")
    ap.add_argument("--methods", nargs="+", default=["nn", "nn_stage_ends", "nn_best_layer", "hpf_single", "hpf_nn", "hpf"])
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--variant", action="append", default=[], help="beta,radius_cells of a soft_argmax row")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override of every row (YAML value), e.g. hpf.ot_iterations=1")
    ap.add_argument("--backbone", default=BACKBONE, help="whose features and layer searches (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/transfer.csv")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = validate_config(apply_sets(load_config(args.config), args.set), source=args.config)
    base["evaluation"]["split"] = args.split
    folds = [f"fold{i}" for i in range(base["dataset"]["split"]["folds"])]
    store = FeatureStore(Path(base["results_dir"]) / "features" / feature_key(base)
                         / f"{base['image']['longer_side']}px-{base['features']['dtype']}" / f"{args.backbone}.zarr")
    targets = [("cell", {"target": "cell"})] + [
        (f"soft_argmax b{b} r{r}", {"target": "soft_argmax", "beta": float(b), "radius_cells": int(r)})
        for b, r in (v.split(",") for v in (args.variant or ["10,2"]))]
    rows, per_class = [], []
    for m in args.methods:
        cell_ms = None
        for name, transfer in targets:
            cfg = copy.deepcopy(base)
            cfg["transfer"] = {**cfg["transfer"], **transfer}
            per_fold = [score(cfg, m, store, f, args.backbone) for f in folds]
            n = sum(p[1] for p in per_fold)
            pooled = {a: sum(p[0][a] * p[1] for p in per_fold) / n for a in (0.05, 0.1)}
            ms = sum(p[2] * p[1] for p in per_fold) / n
            cell_ms = cell_ms or ms
            rows.append(Row(m, name, args.split, " / ".join(f"{p[0][0.1]:.1f}" for p in per_fold), n,
                            round(pooled[0.05], 1), round(pooled[0.1], 1), round(ms, 1), round(ms / cell_ms, 2)))
            print(markdown_table([rows[-1]], COLUMNS).splitlines()[-1], flush=True)
            per_class.append(class_row(m, name, [r for p in per_fold for r in p[3]]))
    print("\n" + markdown_table(rows, COLUMNS))
    print("\nPCK@0.1 per class (pairs of all folds)\n" + markdown_table(per_class, list(per_class[0])))
    save_rows(Path(args.out), rows)
    out = Path(args.out)
    save_dicts(out.with_name(out.stem + "_per_class.csv"), per_class)


def class_row(method: str, target: str, pair_rows: list[dict], alpha: float = 0.1) -> dict:
    """Mean PCK@``alpha`` per category and over all pairs, one row."""
    rows = [r for r in pair_rows if r["alpha"] == alpha]
    cats = sorted({r["category"] for r in rows})
    out = {"method": method, "target": target}
    out.update({c: round(float(np.mean([r["pck"] for r in rows if r["category"] == c])), 1) for c in cats})
    out["all"] = round(float(np.mean([r["pck"] for r in rows])), 1)
    return out


def save_dicts(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
