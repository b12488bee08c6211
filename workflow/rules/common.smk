# Path builders and target lists; no science here.
import json
import re
import sys

import torch

from pipeline_lib.datasets.frozen import FORMAT as FROZEN_FORMAT
from pipeline_lib.hpf.stage import OT_KEYS
from pipeline_lib.backbones import COMPOSITE_SEP
from pipeline_lib.methods.registry import (DENSE_FLOW_METHODS, INIT_SUFFIX, PSEUDO_GT_METHODS, check_backbones,
                                          evaluated_methods, method as method_entry, predicted_by, reads_of_rule)
from pipeline_lib.protocols import fold_names
from pipeline_lib.settings import reads_of
from pipeline_lib.stage_io import categories, dataset_fingerprints, feature_sources

# A composite backbone (a+b: several backbones' layers in one store) serves only the methods read from features.
check_backbones(config["backbones"], config["methods"], config["manifold"]["run"], COMPOSITE_SEP)

R = config["results_dir"]
D = config["dataset"]["name"]
# The dataset's tree: its index, the label-free per-category stages (manifold, pseudo flow) and the tables.
BASE = f"{R}/{D}"
# Under dataset.split.mode category_folds every searching, training and predicting stage runs once per fold
# (wildcard {fold}: fold0, fold1, ...) under BASE/folds/<fold>/, and `pool_folds` pools the folds' test
# pairs into BASE's tables; otherwise the per-fold tree is BASE itself.
FOLDS = fold_names(config)
DATA = f"{BASE}/folds/{{fold}}" if FOLDS else BASE
LOGD = f"{D}/folds/{{fold}}" if FOLDS else D  # logs and benchmarks of the per-fold rules
# Every rule logs to LOGS/<rule>/... and records time and memory in BENCH/<rule>/...: under results_dir, so
# two runs with different results_dir never write (or read back) each other's logs.
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"
# DATA inside expand(): the fold stays a wildcard
DATA_WILD = DATA.replace("{fold}", "{{fold}}")
# Features are cached per image set and resolution, not per config: configs over the same images share them.
# One image set per dataset (FEATURE_SOURCES: cache key -> config section), so a cross-dataset run reads the
# stores of the single-dataset runs over either of its datasets, and they read its.
FEATURE_SOURCES = feature_sources(config)
FEAT_RES = f"{config['image']['longer_side']}px-{config['features']['dtype']}"
FEAT_ROOT = f"{R}/features"
# GPUs each torch job asks the scheduler for: one whenever the resolved device is CUDA (device: cuda, or
# auto where Snakemake runs on a machine that sees one; on a cluster whose login node has no GPU, say cuda).
GPUS = 1 if config["device"] == "cuda" or (config["device"] == "auto" and torch.cuda.is_available()) else 0
# Content hashes of the dataset's files (all; images only): rerun triggers of the index and the features.
FINGERPRINTS = dataset_fingerprints(config)
# Threads of every heavy stage (extraction, manifold, training): config `threads`.
HEAVY_THREADS = config["threads"]
# The longest chain of the workflow (manifold -> pseudo flow -> Siamese training) starts first, so the
# other stages fill the remaining cores around it instead of delaying it.
CHAIN_PRIORITY = 10


wildcard_constraints:
    backbone="[A-Za-z0-9_.+-]+",
    method="[A-Za-z0-9_+.@-]+",
    fold="fold[0-9]+",


def trained_inputs(method):
    """A trained method's predict rule reads both its trained weights and the ones training started from."""
    return dict(weights=f"{DATA}/{{backbone}}/{method}/model.pt", init=f"{DATA}/{{backbone}}/{method}/init.pt")


def trained_outputs(method):
    """One predict job writes two rows through one prediction path: ``<method>`` (trained weights) and
    ``<method>@init`` (initial weights)."""
    row = f"{DATA}/{{backbone}}/methods/{method}"
    init = f"{row}{INIT_SUFFIX}"
    return dict(predictions=f"{row}/predictions.csv", meta=f"{row}/predict_meta.json",
                init_predictions=f"{init}/predictions.csv", init_meta=f"{init}/predict_meta.json")


def cfg_params(*keys, dataset_keys=None, drop=None, source=None):
    """The config sections a rule depends on, as one canonical string (a params rerun trigger): ``keys`` are
    what its stage declares it reads (``*reads_of("module:function")``, the stage's ``@reads``).

    ``dataset_keys`` narrows the dataset section to the keys that matter to the rule; ``drop`` maps a
    section to keys the rule does not read (e.g. prediction-only keys of a training rule). ``source``: the
    rule reads one dataset, the config section named (``dataset`` or ``train_dataset``), recorded as
    ``dataset`` (a store of that dataset's images gets the same params from a single- or cross-dataset config,
    so a shared feature cache is never re-extracted for that)."""
    picked = {k: config[k] for k in keys}
    if dataset_keys is not None:
        picked["dataset"] = {k: config[source or "dataset"][k] for k in dataset_keys}
    if "dataset" in picked and config["train_dataset"]["root"] and source is None:  # cross-dataset: both are read
        picked["train_dataset"] = config["train_dataset"]
    for section, names in (drop or {}).items():
        picked[section] = {k: v for k, v in picked[section].items() if k not in names}
    return json.dumps(picked, sort_keys=True)


# Evaluation keys that only score predictions: a predict rule reads the split and direction, never these;
# a layer search scores at its own alpha (hpf.search_alpha), so the table's alphas never rerun it.
SCORING_ONLY = {"evaluation": ("alphas", "threshold")}
TABLE_ALPHAS = {"evaluation": ("alphas",)}
# A layer search scores with RHM: the optimal-transport matchers' keys (hpf.ot_*) never rerun it.
SEARCH_ONLY_RHM = {**TABLE_ALPHAS, "hpf": OT_KEYS}


def feature_stores(wildcards):
    """The backbone's feature store of every dataset the job reads (one; two under the cross-dataset protocol),
    read as one by the stages (``features.open_stores``)."""
    return [f"{FEAT_ROOT}/{key}/{FEAT_RES}/{wildcards.backbone}.zarr" for key in FEATURE_SOURCES]


def dataset_inputs(wildcards=None):
    """The generated demo is an input of every stage that reads the dataset; real data lives outside."""
    return [f"{BASE}/data"] if config["dataset"]["kind"] == "demo" else []


def pair_inputs(wildcards=None):
    """Stages that read pairs also depend on the validated pair index (bad data stops there): their
    fold's index for a per-fold job, else the dataset's."""
    fold = getattr(wildcards, "fold", None) if wildcards is not None else None
    index = f"{BASE}/folds/{fold}/index/pairs.csv" if fold else f"{BASE}/index/pairs.csv"
    return dataset_inputs() + [index]


def manifold_outputs(backbone):
    return expand(f"{BASE}/{backbone}/manifold/{{category}}/manifold.zarr", category=categories(config))


def per_fold(path):
    """``path`` (under DATA) of every fold, or the one path without folds."""
    return expand(path, fold=FOLDS) if FOLDS else [path]


# Kinds without keypoints: nothing can be searched or scored, so the targets are the label-free chain.
UNLABELLED_KINDS = ("folder",)


def unlabelled_outputs():
    """A folder of unlabelled images: features, manifold, pseudo flow, the Siamese network and its encoder's
    features (the layer search and every prediction and table need keypoints)."""
    print(f"dataset kind '{config['dataset']['kind']}' has no keypoints: running features, manifold, pseudo flow, "
          f"Siamese training and the trained encoder's features; the layer search, predictions and PCK tables need "
          f"keypoints and are skipped (methods {config['methods']} not predicted).", file=sys.stderr)
    out = []
    for b in config["backbones"]:
        out += [f"{BASE}/{b}/manifold/summary.csv", f"{DATA}/{b}/siamese/model.pt", f"{DATA}/{b}/chain/features.zarr"]
        out += expand(f"{BASE}/{b}/pseudo_flow/{{category}}/pseudo_flow.zarr", category=categories(config))
    return out


def final_outputs():
    if config["dataset"]["kind"] in UNLABELLED_KINDS:
        return unlabelled_outputs()
    out = []
    # methods trained on the manifold's pseudo ground truth need it: its summaries join the targets
    if config["manifold"]["run"] or PSEUDO_GT_METHODS & set(config["methods"]):
        out += [f"{BASE}/{b}/manifold/summary.csv" for b in config["backbones"]]
        out += [f"{BASE}/{b}/pseudo_flow/quality_summary.csv" for b in config["backbones"]]
    if "gaur_hpf" in config["methods"]:  # the full chain's layer search, for the report
        out += [p for b in config["backbones"] for p in per_fold(f"{DATA}/{b}/chain/search_trace.png")]
    for b in config["backbones"]:
        out += [f"{BASE}/{b}/pck_summary.csv", f"{BASE}/{b}/pck_summary.md", f"{BASE}/{b}/pck_summary.png"]
        out += per_fold(f"{DATA}/{b}/pictures")  # each fold draws its own test categories
        if set(DENSE_FLOW_METHODS) & set(config["methods"]):  # the dense flows as warped images
            out += per_fold(f"{DATA}/{b}/warps")
    return out
