"""Does training earn its place? Each variant of a trained method's config section, trained per fold through
the workflow's own stage functions, then PCK on the fold's test pairs beside its initial weights (``@init``),
with the training time and the training log's first and last epoch.

Why: a model whose loss is near zero from the start, or whose labels come from itself, can train without
moving; the tables then show it tied with its initial weights (SFNet on synthetic warps of single images:
54.6 vs 54.7 PCK@0.1 on the PF-WILLOW folds). This bench compares settings on the same pairs before a
config changes. Each variant is a set of ``key=value`` overrides of the method's section (YAML values;
``a.b=v`` sets a nested key).

``--method weakalign`` first trains ``cnngeometric`` as the config says (untimed), then WeakAlign from it: its
``@init`` column is then the CNNGeometric checkpoint.

``--train-seeds 0 1 2`` trains each variant once per top-level ``seed`` on the same split (the config's split
seed held through ``dataset.split.seed``) and adds the spread of PCK@0.1 and of the gain over ``@init`` across
those runs: how far a difference between two settings, or between two machines, has to be to mean something.

Usage (``--root`` replaces ``dataset.root``; ``--folds none`` for a config without folds):
    python bench/bench_training_variants.py --method sfnet --config config/pf-willow-folds.yaml \\
        --folds fold0 fold1 fold2 --variant paper:synthetic_fraction=1.0 --variant mix:synthetic_fraction=0.5,epochs=4
    python bench/bench_training_variants.py --method weakalign --config config/pf-willow-split.yaml --folds none \\
        --train-seeds 0 1 2 3 4
Prints a Markdown table and saves ``bench/results/<method>_training_variants.csv`` (and ``*_spread.csv``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline_lib.backbones import resolve_device
from pipeline_lib.config import load_config
from pipeline_lib.evaluation.predictions import read_predictions
from pipeline_lib.evaluation.summary import evaluate_predictions
from pipeline_lib.fcss import stage as fcss_stage
from pipeline_lib.protocols import fold_view
from pipeline_lib.settings import Settings
from pipeline_lib.sfnet import stage as sfnet_stage
from pipeline_lib.stage_io import eval_pairs, load_dataset
from pipeline_lib.weakalign import stage as weakalign_stage
from _timing import markdown_table, save_rows

BACKBONE = "efficientnet_lite0"
# method -> (train(cfg, backbone, out_weights, out_init), predict(cfg, backbone, weights, csv, meta, method))
STAGES = {
    "sfnet": (sfnet_stage.train, sfnet_stage.predict),
    "fcss": (fcss_stage.train, fcss_stage.predict),
    "cnngeometric": (weakalign_stage.train_cnngeometric, weakalign_stage.predict),
    "weakalign": (None, weakalign_stage.predict),  # trains cnngeometric (its config section) first, then from it
}


@dataclass
class Row:
    method: str
    fold: str
    variant: str
    overrides: str
    train_seed: int
    n_test_pairs: int
    train_s: float
    steps: int
    init_pck_010: float
    pck_005: float
    pck_010: float
    pck_015: float
    loss_first: float
    loss_last: float
    param_change_last: float


COLUMNS = [f.name for f in fields(Row)]


@dataclass
class Spread:
    """PCK@0.1 of one method / fold / variant over training seeds, and its gain over the initial weights."""
    method: str
    fold: str
    variant: str
    n_seeds: int
    init_pck_010_mean: float
    pck_010_mean: float
    pck_010_std: float
    gain_mean: float
    gain_std: float
    gain_min: float
    gain_max: float


def spreads(rows: list[Row]) -> list[Spread]:
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.method, r.fold, r.variant), []).append(r)
    out = []
    for (method, fold, variant), rs in groups.items():
        pck, gain = [r.pck_010 for r in rs], [r.pck_010 - r.init_pck_010 for r in rs]
        sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
        out.append(Spread(method, fold, variant, len(rs), round(statistics.mean(r.init_pck_010 for r in rs), 1),
                          round(statistics.mean(pck), 1), round(sd(pck), 1), round(statistics.mean(gain), 1),
                          round(sd(gain), 1), round(min(gain), 1), round(max(gain), 1)))
    return out


def with_train_seed(cfg: dict, seed: int | None) -> dict:
    """``cfg`` trained with top-level ``seed`` on the config's own split (its split seed held)."""
    if seed is None:
        return cfg
    cfg["dataset"].setdefault("split", {})["seed"] = Settings(cfg).split_seed
    cfg["seed"] = seed
    return cfg


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    overrides = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def apply(section: dict, overrides: dict) -> dict:
    out = copy.deepcopy(section)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def pck(cfg, predictions: Path) -> tuple[dict[float, float], int]:
    """{alpha: PCK (%) averaged per pair} of a predictions file on the evaluation pairs, and their number."""
    index = load_dataset(cfg)
    ev, pairs = eval_pairs(cfg, index)
    rows = evaluate_predictions("m", pairs, index.images, read_predictions(predictions), ev)
    return {a: float(np.mean([r["pck"] for r in rows if r["alpha"] == a])) for a in ev.alphas}, len(pairs)


def run(method: str, cfg, fold: str, name: str, overrides: dict, train_seed: int | None = None) -> Row:
    train, predict = STAGES[method]
    cfg = with_train_seed(fold_view(cfg, None if fold == "none" else fold), train_seed)
    cfg[method] = apply(cfg.get(method, {}), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / method
        if method == "weakalign":  # its start: the cnngeometric checkpoint of the config (not timed)
            start = Path(tmp) / "cnngeometric" / "model.pt"
            weakalign_stage.train_cnngeometric(cfg, BACKBONE, start)
        t0 = time.perf_counter()
        if method == "weakalign":
            weakalign_stage.train(cfg, BACKBONE, out / "model.pt", init_from=start, out_init=out / "init.pt")
        else:
            train(cfg, BACKBONE, out / "model.pt", out / "init.pt")
        train_s = time.perf_counter() - t0
        scores = {}
        for which in ("model", "init"):
            predict(cfg, BACKBONE, out / f"{which}.pt", out / f"{which}.csv", out / f"{which}.json", method)
            scores[which], n_test = pck(cfg, out / f"{which}.csv")
        log = list(csv.DictReader((out / "train_log.csv").open()))
    first, last = log[0], log[-1]
    return Row(method, fold, name, ",".join(f"{k}={v}" for k, v in overrides.items()), cfg["seed"], n_test,
               round(train_s, 1),
               sum(int(r["n_batches"]) for r in log), round(scores["init"].get(0.1, float("nan")), 1),
               *(round(scores["model"].get(a, float("nan")), 1) for a in (0.05, 0.1, 0.15)),
               round(float(first["loss"]), 4), round(float(last["loss"]), 4), round(float(last["param_change"]), 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=sorted(STAGES), required=True)
    ap.add_argument("--config", default="config/pf-willow-folds.yaml")
    ap.add_argument("--root", default=None, help="replaces dataset.root")
    ap.add_argument("--folds", nargs="+", default=["fold0"], help="fold names, or none (a config without folds)")
    ap.add_argument("--variant", action="append", default=[], help="name:key=value,key=value (section overrides)")
    ap.add_argument("--train-seeds", nargs="+", type=int, default=None,
                    help="train each variant once per top-level seed, on the config's split (adds a spread table)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="CSV path (default bench/results/<method>_training_variants.csv)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.root:
        cfg["dataset"]["root"] = args.root
    cfg["device"] = args.device
    variants = [parse_variant(v) for v in args.variant] or [("config", {})]
    rows = []
    for fold in args.folds:
        for name, overrides in variants:
            for seed in args.train_seeds or [None]:
                rows.append(run(args.method, copy.deepcopy(cfg), fold, name, overrides, seed))
                print("\n" + markdown_table([rows[-1]], COLUMNS).splitlines()[-1], flush=True)
    print(f"\ndevice {resolve_device(args.device)}\n" + markdown_table(rows, COLUMNS))
    out = Path(args.out or f"bench/results/{args.method}_training_variants.csv")
    save_rows(out, rows)
    if args.train_seeds and len(args.train_seeds) > 1:
        spread = spreads(rows)
        print("\nSpread over training seeds (PCK@0.1; gain = trained - @init):\n"
              + markdown_table(spread, [f.name for f in fields(Spread)]))
        save_rows(out.with_name(out.stem + "_spread.csv"), spread)


if __name__ == "__main__":
    main()
