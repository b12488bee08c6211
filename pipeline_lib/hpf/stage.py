"""Workflow stages of Hyperpixel Flow: the layer search and the predictors of the hpf methods.

Methods (all on the same cached features):
- ``hpf``: RHM on the searched hyperpixel layers (the paper's method);
- ``hpf_nn``: plain NN on the same hyperpixels (ablation: what RHM adds);
- ``hpf_single``: RHM on the best single layer of the search's first step (ablation: what the set adds);
- ``hpf_ot``: optimal transport with RHM's Hough prior on the searched layers (SCOT, Liu et al. 2020);
- ``hpf_ot_only``: the transport plan alone (ablation: what the Hough prior adds to it);
- ``nn_best_layer``: the NN baseline on its best single layer on the validation pairs;
- ``gaur_hpf`` (registry: runs as ``hpf``): ``hpf`` on the features of the Siamese-trained encoder (the full chain).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

from ..atomic import atomic_path, write_text
from ..backbones import resolve_device
from ..evaluation import oriented
from ..evaluation.summary import write_csv
from ..features import FeatureStore, FeatureStores, open_features, open_stores
from ..methods import Predictor, nn_predictor
from ..provenance import provenance
from ..protocols import learned_from
from ..settings import HPFSection, Settings, reads
from ..stage_io import load_dataset
from .beam_search import encode_layers
from .matcher import HyperpixelMatcher, MatchParams
from .search import composite_search, search_space, single_layer_nn_scores

log = logging.getLogger(__name__)
# The variants this stage predicts: which layers of the search record, matched by RHM or plain NN.
VARIANTS = {"hpf": ("best_layers", "rhm"), "hpf_nn": ("best_layers", "nn"), "hpf_single": ("best_single_rhm", "rhm"),
            "hpf_ot": ("best_layers", "ot_rhm"), "hpf_ot_only": ("best_layers", "ot")}
NN_BEST_LAYER = "nn_best_layer"
# keys of the hpf section only the optimal-transport variants read (the layer search scores with RHM)
OT_KEYS = ("ot_epsilon", "ot_iterations", "ot_exponent")


def match_params(hc: HPFSection) -> MatchParams:
    """The RHM and transfer settings of an ``hpf`` section."""
    return MatchParams(hc.n_bins_per_side, hc.kernel_size, hc.exponent, hc.transfer_radius_px, hc.ot_epsilon,
                       hc.ot_iterations, hc.ot_exponent)


def search(cfg: Mapping, features: str | Path | FeatureStore, out_json: str | Path, out_csv: str | Path,
           out_png: str | Path, device, extra: Mapping | None = None) -> None:
    """Beam-search the layer set on the validation split and record the whole trace (of a composite backbone's
    store: each member's search, then the joint one seeded with their sets, ``search.composite_search``).

    ``features``: a store or its path (any backbone's, or the trained encoder's); ``extra`` is added
    to the record (e.g. the checkpoint key of the store)."""
    hc = Settings(cfg).hpf
    ev = Settings(cfg).evaluation
    index = load_dataset(cfg)
    pairs = [p for p in index.pairs if p.split == hc.search_split]
    test_ids = {p.pair_id for p in index.pairs if ev.split in (p.split, "all")}
    fixed = hc.layers != "search"
    if not pairs and not fixed:
        raise ValueError(f"no '{hc.search_split}' pairs to search hyperpixel layers on in dataset {index.name}; "
                         f"set dataset.split (e.g. mode: image_disjoint, val_fraction: 0.3) or give hpf.layers.")
    if fixed and hc.search_split == ev.split:
        pairs = []  # fixed layers on an all-test protocol: nothing to score them on, and nothing is searched
    elif hc.search_split == ev.split or {p.pair_id for p in pairs} & test_ids:
        raise ValueError(f"hpf.search_split '{hc.search_split}' overlaps the evaluation split '{ev.split}'; "
                         f"the layer search must never see test pairs.")
    if hc.max_search_pairs:
        pairs = pairs[:hc.max_search_pairs]
    pairs = oriented(pairs, ev.direction)
    store = features if isinstance(features, (FeatureStore, FeatureStores)) else open_stores(features)
    matcher = HyperpixelMatcher(store, device, match_params(hc))
    record: dict = {"search_split": hc.search_split, "n_pairs": len(pairs), "alpha": hc.search_alpha,
                    "threshold": ev.threshold, "layer_names": store.layer_names,
                    "backbone": store.attrs.get("backbone"), **(extra or {})}
    if hc.layers == "search":
        space = search_space(store.layers, hc.min_base_stride, hc.max_base_stride)
        result, members = composite_search(matcher, pairs, index.images, ev, hc.search_alpha, store.layers, space,
                                           hc.beam_width, hc.max_layers)
        if members:  # a composite backbone: what each member's layers alone reached, the joint search's seeds
            record.update(member_searches={m: {"best_layers": matcher.layer_names(r.best), "best_score": r.best_score,
                                               "n_evaluations": r.n_evaluations} for m, r in members.items()})
        best, best_score = result.best, result.best_score
        first = result.trace[0].kept[0]
        record.update(base_candidates=[store.layer_names[i] for i in space.base_candidates],
                      n_evaluations=result.n_evaluations,
                      trace=[{"n_layers": st.n_layers,
                              "evaluated": [[matcher.layer_names(s), sc] for s, sc in st.evaluated],
                              "kept": [[matcher.layer_names(s), sc] for s, sc in st.kept]} for st in result.trace],
                      best_single_rhm=matcher.layer_names(first[0]), best_single_rhm_score=first[1])
    else:
        best = tuple(store.layer_names.index(n) for n in hc.layers)
        best_score = float("nan")
        record.update(trace=[], best_single_rhm=[store.layer_names[best[0]]], best_single_rhm_score=best_score)
    # Single-layer NN scores (nn_best_layer) need validation pairs; with fixed layers and none, there are none.
    nn_scores = single_layer_nn_scores(store, pairs, index.images, ev, hc.search_alpha, device) if pairs else {}
    record.update(best_layers=matcher.layer_names(best), best_layers_id=encode_layers(best), best_score=best_score,
                  nn_single_layer_scores=nn_scores, best_nn_layer=max(nn_scores, key=nn_scores.get, default=None),
                  learned_from=learned_from(pairs), hpf=asdict(hc), **provenance(cfg, cfg["seed"]))
    rows = [{"step": st["n_layers"], "layers": "+".join(s), "score": round(sc, 4),
             "kept": s in [k for k, _ in st["kept"]]} for st in record.get("trace", []) for s, sc in st["evaluated"]]
    write_csv(out_csv, rows, ("step", "layers", "score", "kept"))
    write_text(out_json, json.dumps(record, indent=2, default=str))
    plot_trace(record, out_png)
    log.info("best layers %s (val PCK@%g %.2f); best single NN layer %s", record["best_layers"], hc.search_alpha,
             best_score, record["best_nn_layer"])


@reads("seed", "dataset", "hpf", "evaluation")
def search_layers(cfg: Mapping, features: str | Path, out_json, out_csv, out_png,
                  checkpoint: str | Path | None = None) -> None:
    """The layer search stage on a backbone's features, or on the trained encoder's (``checkpoint``: the
    store must have been extracted from it, and the record carries its key)."""
    store, facts = open_features(features, checkpoint)
    search(cfg, store, out_json, out_csv, out_png, resolve_device(cfg["device"]), extra=facts)


def plot_trace(record: Mapping, path: str | Path) -> None:
    """Every evaluated set's validation PCK per search step, the beam, the best set, and single-layer NN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.2, 1]})
    for st in record.get("trace", []):
        ys = [sc for _, sc in st["evaluated"]]
        ax.scatter([st["n_layers"]] * len(ys), ys, s=10, color="0.6")
        ax.scatter([st["n_layers"]] * len(st["kept"]), [sc for _, sc in st["kept"]], s=18, color="C0")
    if record.get("trace"):
        best_by_step = [max(sc for _, sc in st["kept"]) for st in record["trace"]]
        ax.plot(range(1, len(best_by_step) + 1), best_by_step, color="C0", label="beam best")
    ax.set_xlabel("layers in set")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f"val PCK@{record['alpha']} (%)")
    ax.set_title("best: " + "+".join(record["best_layers"]), fontsize=8)
    if record.get("trace"):
        ax.legend(loc="lower right")
    names = list(record["nn_single_layer_scores"])
    ax2.bar(range(len(names)), [record["nn_single_layer_scores"][n] for n in names], color="C1")
    ax2.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax2.set_title("single-layer NN on the validation pairs", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def predictor(method: str, cfg: Mapping, store: FeatureStore, search_json: str | Path, device) -> tuple[Predictor, dict]:
    """The predictor of one of VARIANTS or of nn_best_layer, from the search record made on ``store``."""
    record = json.loads(Path(search_json).read_text())
    missing = [n for n in record["best_layers"] + record["best_single_rhm"] if n not in store.layer_names]
    if record.get("layer_names", store.layer_names) != store.layer_names or missing:
        raise ValueError(f"{search_json} was searched on other features than {store.path} (layers {missing} "
                         f"unknown); rerun the layer search.")
    hc = Settings(cfg).hpf
    if method != NN_BEST_LAYER and method not in VARIANTS:
        raise ValueError(f"unknown Hyperpixel Flow variant '{method}'; known: {NN_BEST_LAYER}, {', '.join(VARIANTS)}")
    if method == NN_BEST_LAYER and not record.get("nn_single_layer_scores", {"?": 0}):
        raise ValueError(f"{method} needs single layers scored on validation pairs, and {search_json} has none "
                         f"(hpf.layers fixed on a dataset without '{record['search_split']}' pairs); drop {method} "
                         f"from methods or give the dataset a validation split.")
    transfer = Settings(cfg).transfer
    subcell = transfer.subcell()
    if method == NN_BEST_LAYER:
        return (nn_predictor(store, record["best_nn_layer"], device, subcell),
                {"layer": record["best_nn_layer"], "target": transfer.target})
    which, kind = VARIANTS[method]
    names = record[which]
    layers = tuple(store.layer_names.index(n) for n in names)
    matcher = HyperpixelMatcher(store, device, match_params(hc))
    return ((lambda s, t, k: matcher.transfer(s, t, k, layers, kind, subcell)),
            {"layers": names, "matcher": kind, "target": transfer.target})
