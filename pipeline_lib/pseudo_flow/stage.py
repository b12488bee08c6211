"""Pseudo ground-truth flow stages (Gaur et al. Sec. 2.1, 5): nearest neighbours in the learned
embedding for the training pairs of one category, with a confidence mask, stored in Zarr; and its
quality where truth exists, next to the same construction on the raw features.

Quality, per pair and construction. Candidates (``pseudo_flow.features`` picks the one that is
stored and trained on): ``embedding`` = nearest neighbours in the KFD embedding, ``raw`` = in the
same hyperpixel features before the manifold stage, ``concat`` = both, each L2-normalised per cell,
concatenated. References (never stored), both built on the final SOP label maps:
``part_chance`` = every source cell sent to a uniformly random target cell of the same label
(seeded per pair: the part-level chance level, which a pseudo flow must beat to know more than
the part a point is in); ``raw_same_label`` = raw-feature nearest neighbour among the target
cells of the same label. Measures: PCK of the keypoints moved by the flow (the flow sampled at
each source keypoint, all cells, confident or not), the fraction of keypoints that fall on a
confident cell (references: whose label exists in the target), and on the demo the end-point
error of the confident flow against the exact flow.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import zarr

from ..atomic import atomic_path
from ..datasets import demo as demo_data
from ..datasets.base import DatasetIndex, Pair
from ..evaluation import pck_threshold
from ..evaluation.summary import read_csv, write_csv
from ..features import open_stores
from ..manifold.stage import grid_features
from ..provenance import provenance
from ..settings import Settings, reads
from ..stage_io import load_dataset
from .construct import FEATURE_SOURCES, matching_features, part_chance_flow, pseudo_flow, same_label_flow
from .quality import pair_quality

log = logging.getLogger(__name__)
# Candidate constructions are named by their pseudo_flow.features value (FEATURE_SOURCES); references on
# the final SOP labels (see the module docstring) have names of their own.
REFERENCES = ("part_chance", "raw_same_label")
QUALITY_COLUMNS = ("category", "pair_id", "construction", "alpha", "kp_pck", "kp_confident", "epe_px",
                   "flow_pck", "coverage")


@dataclass(frozen=True)
class CategoryInputs:
    """What every pseudo-flow construction of one category is built from."""

    index: DatasetIndex
    pairs: list[Pair]
    pos: dict[str, int]  # image id -> row in the manifold's arrays
    learned: np.ndarray  # KFD embedding per image
    raw: np.ndarray  # hyperpixel features per image on the manifold's grid
    labels: np.ndarray  # final (graph-cut) SOP label map per image
    grid_size: int


def category_inputs(cfg: Mapping, category: str, manifold_store: str | Path, features: str | Path,
                    index: DatasetIndex | None = None) -> CategoryInputs:
    """``index``: the dataset, when the caller has it loaded already (one scoring job, many categories)."""
    index = index if index is not None else load_dataset(cfg)
    pc = Settings(cfg).pseudo_flow
    man = zarr.open_group(str(manifold_store), mode="r")
    ids = list(man.attrs["image_ids"])
    pos = {k: i for i, k in enumerate(ids)}
    pairs = [p for p in index.pairs if p.category == category and p.split == pc.split
             and p.src in pos and p.trg in pos]
    if not pairs:
        raise ValueError(f"category {category}: no '{pc.split}' pairs among the manifold's images; check "
                         f"dataset.split and manifold.images.")
    raw = grid_features(open_stores(features), ids, list(man.attrs["layers"]), int(man.attrs["grid_size"]))
    return CategoryInputs(index, pairs, pos, man["embedding"][:], raw, man["label_maps"][-1],
                          int(man.attrs["grid_size"]))


def pair_flows(cfg: Mapping, inp: CategoryInputs, names: Sequence[str]
               ) -> Iterator[tuple[int, Pair, tuple[int, int], tuple[int, int], dict]]:
    """(pair number, pair, source size, target size, {name: (flow, mask)}) of every pair, for the
    constructions and references in ``names``. Deterministic: ``part_chance`` is seeded per pair number."""
    pc = Settings(cfg).pseudo_flow
    feats = {name: matching_features(inp.learned, inp.raw, name) for name in names if name in FEATURE_SOURCES}
    lab = inp.labels
    for n, p in enumerate(inp.pairs):
        s, t = inp.pos[p.src], inp.pos[p.trg]
        src_hw = (inp.index.images[p.src].height, inp.index.images[p.src].width)
        trg_hw = (inp.index.images[p.trg].height, inp.index.images[p.trg].width)
        flows = {name: pseudo_flow(emb[s], emb[t], src_hw, trg_hw, mode=pc.mode, src_labels=lab[s],
                                   trg_labels=lab[t], metric=pc.metric) for name, emb in feats.items()}
        if "part_chance" in names:  # seeded per pair (config seed, pair number), whatever else runs
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([Settings(cfg).seed, n]).generate_state(1)[0]))
            flows["part_chance"] = part_chance_flow(lab[s], lab[t], src_hw, trg_hw, gen, dtype=torch.float32)
        if "raw_same_label" in names:
            flows["raw_same_label"] = same_label_flow(inp.raw[s], inp.raw[t], src_hw, trg_hw, lab[s], lab[t],
                                                      pc.metric)
        yield n, p, src_hw, trg_hw, flows


@reads("seed", "pseudo_flow", "dataset")
def make(cfg: Mapping, category: str, manifold_store: str | Path, features: str | Path,
         out_store: str | Path) -> None:
    """Store the configured construction (``pseudo_flow.features``) of every training pair: the Siamese
    network's targets. Its quality is :func:`score`, a stage of its own, so evaluation settings never
    rewrite the targets."""
    pc = Settings(cfg).pseudo_flow
    inp = category_inputs(cfg, category, manifold_store, features)
    with atomic_path(out_store) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({"category": category, "pair_ids": [p.pair_id for p in inp.pairs], "mode": pc.mode,
                           "manifold_image_ids": sorted(inp.pos),  # what the labels behind the flow learned from
                           "features": pc.features, "labels": "final graph-cut label maps",
                           "metric": pc.metric, "grid_size": inp.grid_size,
                           "provenance": provenance(cfg, Settings(cfg).seed),
                           "convention": "flow[i, j] = matched target cell centre (target px) - source cell "
                                         "centre (source px), on the source grid; mask = confident"})
        for n, p, src_hw, trg_hw, flows in pair_flows(cfg, inp, [pc.features]):
            flow, mask = flows[pc.features]
            g = root.create_group(f"p{n:05d}")
            g.attrs.update({"pair_id": p.pair_id, "src": p.src, "trg": p.trg, "src_hw": list(src_hw),
                            "trg_hw": list(trg_hw)})
            g.create_array("flow", data=flow.numpy().astype(np.float32))
            g.create_array("mask", data=mask.numpy())
    log.info("category %s: pseudo flow (%s) of %d pairs -> %s", category, pc.features, len(inp.pairs), out_store)


def score(cfg: Mapping, category: str, manifold_store: str | Path, features: str | Path, pseudo_flow_store: str | Path,
          out_quality: str | Path, index: DatasetIndex | None = None) -> None:
    """Quality of every construction and reference (module docstring) at the evaluation alphas; the stored
    construction is read back from ``pseudo_flow_store``, so its row scores exactly what training reads."""
    pc = Settings(cfg).pseudo_flow
    ev = Settings(cfg).evaluation
    inp = category_inputs(cfg, category, manifold_store, features, index)
    stored = zarr.open_group(str(pseudo_flow_store), mode="r")
    if list(stored.attrs["pair_ids"]) != [p.pair_id for p in inp.pairs] or stored.attrs["features"] != pc.features:
        raise ValueError(f"{pseudo_flow_store} holds other pairs or another construction than the config asks "
                         f"for; rerun make_pseudo_flow.")
    others = [c for c in (*FEATURE_SOURCES, *REFERENCES) if c != pc.features]
    rows = []
    for n, p, src_hw, trg_hw, flows in pair_flows(cfg, inp, others):
        g = stored[f"p{n:05d}"]
        flows[pc.features] = (torch.from_numpy(g["flow"][:]), torch.from_numpy(g["mask"][:]))
        if inp.index.flow_store is not None:
            true_flow, true_valid = demo_data.load_flow(inp.index.flow_store, p.pair_id)
        else:
            true_flow = true_valid = None
        thr = pck_threshold(ev.threshold, p.trg_kps, p.valid, trg_hw, p.trg_box)
        for name in (*FEATURE_SOURCES, *REFERENCES):
            for row in pair_quality(*flows[name], p.src_kps[p.valid], p.trg_kps[p.valid], src_hw, thr, ev.alphas,
                                    true_flow, true_valid):
                rows.append({"category": category, "pair_id": p.pair_id, "construction": name, **row})
    write_csv(out_quality, rows, QUALITY_COLUMNS)
    mid = ev.alphas[len(ev.alphas) // 2]
    mean = {c: np.mean([r["kp_pck"] for r in rows if r["construction"] == c and r["alpha"] == mid])
            for c in (*FEATURE_SOURCES, *REFERENCES)}
    log.info("category %s: %d pairs; keypoint PCK@%g of the pseudo flow: %s (stored: %s)", category,
             len(inp.pairs), mid, ", ".join(f"{c} {v:.1f}" for c, v in mean.items()), pc.features)


@reads("seed", "pseudo_flow", "evaluation", "dataset")
def score_all(cfg: Mapping, categories: Sequence[str], manifold_stores, features: str | Path, pseudo_flow_stores,
              out_qualities, out_summary: str | Path) -> None:
    """:func:`score` every category (the dataset indexed once), then :func:`summarise` them."""
    lists = (manifold_stores, pseudo_flow_stores, out_qualities)
    if any(len(x) != len(categories) for x in lists):
        raise ValueError(f"score_all: {len(categories)} categories but {[len(x) for x in lists]} "
                         f"manifolds/stores/outputs")
    index = load_dataset(cfg)
    for category, manifold, store, quality in zip(categories, *lists):
        score(cfg, category, manifold, features, store, quality, index)
    summarise(out_qualities, out_summary)


def summarise(quality_csvs, out_csv) -> None:
    """Mean quality per category and construction, plus 'all'."""
    groups = defaultdict(list)
    for path in quality_csvs:
        for r in read_csv(path):
            groups[(r["category"], r["construction"], r["alpha"])].append(r)
            groups[("all", r["construction"], r["alpha"])].append(r)
    out = []
    for (cat, cons, alpha), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        def mean(col):
            vals = [float(r[col]) for r in rs if r[col] not in ("", "nan")]
            return round(float(np.mean(vals)), 3) if vals else float("nan")
        out.append({"category": cat, "construction": cons, "alpha": alpha, "n_pairs": len(rs),
                    "kp_pck": mean("kp_pck"), "kp_confident": mean("kp_confident"), "epe_px": mean("epe_px"),
                    "flow_pck": mean("flow_pck"), "coverage": mean("coverage")})
    write_csv(out_csv, out, ("category", "construction", "alpha", "n_pairs", "kp_pck", "kp_confident", "epe_px",
                             "flow_pck", "coverage"))
