"""Workflow stage of the manifold learning (Gaur et al. Algorithm 1), one category per job.

Features: hyperpixels of ``manifold.layers`` from the cached feature store (no backbone run),
resized to a fixed ``grid_size`` square grid per image (Gaur et al. use a fixed 44 x 44 VGG16
map, Sec. 6) and read a block of ``manifold.chunk_images`` images at a time (:class:`GridFeatures`: the
category is never held whole). Images: ``manifold.images`` (``train`` = images of training pairs, as Gaur et al.
Sec. 6 learn on each class's training images; ``all`` where no image split exists). Outputs
``manifold.zarr`` (label maps of every iteration per image, the embedded features, SOP models,
energies, change fractions, keypoint-label agreement; ``manifold`` attribute = the settings, ReLU
included), the fitted KFD (``kfd.pkl``; it transforms ``algorithm1.prepare_features`` of the raw
hyperpixels, i.e. ReLU'd when ``manifold.relu``, then L2-normalised) and two pictures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import asdict, fields
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
import zarr

from ..atomic import atomic_path, write_bytes
from ..config import plain
from ..datasets import DatasetIndex, load_rgb
from ..evaluation.summary import write_csv
from ..features import FeatureStore, open_stores
from ..kernels.hyperpixels import build_hyperpixels
from ..provenance import provenance
from ..settings import Settings, reads
from ..stage_io import load_dataset
from .measures import keypoint_label_agreement, keypoint_part_ami
from .plots import plot_convergence, plot_label_maps
from .algorithm1 import ManifoldConfig, run_manifold

log = logging.getLogger(__name__)
STAGE_KEYS = ("run", "layers", "grid_size", "images")  # manifold.* keys of the stage, not of Algorithm 1


def manifold_config(cfg: Mapping) -> ManifoldConfig:
    s = Settings(cfg)
    algo = {k: v for k, v in plain(s.manifold).items() if k not in STAGE_KEYS}
    return ManifoldConfig.from_mapping({**algo, "seed": s.seed})


def category_images(index: DatasetIndex, category: str, which: str) -> list[str]:
    """Image ids of a category: all of them (the stage uses no labels) or those of training pairs."""
    if which == "train":
        ids = sorted({i for p in index.pairs if p.category == category and p.split == "train" for i in (p.src, p.trg)})
    else:
        ids = sorted(k for k, r in index.images.items() if r.category == category)
    if len(ids) < 2:
        raise ValueError(f"category '{category}' has {len(ids)} image(s) for the manifold stage (manifold.images: "
                         f"{which}); it needs at least 2.")
    return ids


def grid_features(store: FeatureStore, image_ids, layers, grid: int) -> np.ndarray:
    """(n_img, grid, grid, C) hyperpixel features of every image at a fixed grid size."""
    out = []
    for key in image_ids:
        feats = store.get(key, layers)
        hyper = build_hyperpixels([torch.from_numpy(feats[n]) for n in layers])
        hyper = F.interpolate(hyper[None], size=(grid, grid), mode="bilinear", align_corners=False)[0]
        out.append(hyper.permute(1, 2, 0).numpy())
    return np.stack(out)


class GridFeatures:
    """:func:`grid_features` of a category read on demand: ``self[a:b]`` builds images a..b-1 only, so
    Algorithm 1 reads the feature store a block of images at a time (never the whole category)."""

    def __init__(self, store: FeatureStore, image_ids, layers, grid: int):
        self.store, self.image_ids, self.layers, self.grid = store, list(image_ids), list(layers), grid
        channels = grid_features(store, self.image_ids[:1], self.layers, grid).shape[-1]
        self.shape = (len(self.image_ids), grid, grid, channels)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, images: slice) -> np.ndarray:
        return grid_features(self.store, self.image_ids[images], self.layers, self.grid)


def image_keypoints(index: DatasetIndex, image_ids) -> tuple[np.ndarray, np.ndarray]:
    """(n_img, K, 2) xy keypoints and (n_img, K) validity of each image, read off its pairs."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for p in index.pairs:
        found.setdefault(p.src, (p.src_kps, p.valid))
        found.setdefault(p.trg, (p.trg_kps, p.valid))
    k = max((len(found[i][0]) for i in image_ids if i in found), default=0)
    kps, valid = np.zeros((len(image_ids), k, 2)), np.zeros((len(image_ids), k), dtype=bool)
    for n, i in enumerate(image_ids):
        if i in found:
            kk, vv = found[i]
            kps[n, :len(kk)], valid[n, :len(vv)] = np.nan_to_num(kk), vv
    return kps, valid


def keypoint_cells(kps: np.ndarray, valid: np.ndarray, sizes, grid: int) -> np.ndarray:
    """(n_img, K, 2) (row, col) grid cell of each keypoint (image (H, W) -> grid x grid)."""
    cells = np.zeros(kps.shape, dtype=np.int64)
    for n, (h, w) in enumerate(sizes):
        cells[n, :, 0] = np.clip(((kps[n, :, 1] + 0.5) / h * grid).astype(int), 0, grid - 1)
        cells[n, :, 1] = np.clip(((kps[n, :, 0] + 0.5) / w * grid).astype(int), 0, grid - 1)
    return cells


@reads("seed", "manifold", "dataset")
def learn(cfg: Mapping, category: str, features: str | Path, out_store: str | Path, out_kfd: str | Path,
          out_labels_png: str | Path, out_convergence_png: str | Path) -> None:
    index = load_dataset(cfg)
    store = open_stores(features)
    stage = Settings(cfg).manifold
    layers = [store.resolve_layer(n) for n in stage.layers]
    ids = category_images(index, category, stage.images)
    grid = stage.grid_size
    feats = GridFeatures(store, ids, layers, grid)
    mcfg = manifold_config(cfg)
    log.info("category %s: %d images, features %s, layers %s", category, len(ids), feats.shape, layers)
    # graph cuts of an iteration in parallel over images, as many workers as the job's threads (run_stage
    # pins torch to them); the labels do not depend on it. Each finished iteration is kept beside the store,
    # so a killed job resumes after it.
    state_path, key = resume_path(out_store), run_key(feats, mcfg)
    result = run_manifold(feats, mcfg, progress=lambda d: log.info("iteration %s", d), workers=torch.get_num_threads(),
                          checkpoint=lambda st: write_bytes(state_path, pickle.dumps({"key": key, **st})),
                          resume_from=read_resume_state(state_path, key))
    kps, valid = image_keypoints(index, ids)
    cells = keypoint_cells(kps, valid, [(index.images[i].height, index.images[i].width) for i in ids], grid)
    agreement = [keypoint_label_agreement(m, cells, valid) for m in result.label_maps]
    ami = [keypoint_part_ami(m, cells, valid) for m in result.label_maps]
    log.info("keypoint-label agreement: raw HAC %.3f -> final %.3f; keypoint-part AMI %.3f -> %.3f",
             agreement[0], agreement[-1], ami[0], ami[-1])
    with atomic_path(out_store) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({"category": category, "image_ids": ids, "layers": layers, "grid_size": grid,
                           "converged": bool(result.converged), "n_iter": result.n_iter,
                           "keypoint_label_agreement": agreement, "keypoint_part_ami": ami,
                           "manifold": asdict(mcfg),
                           "provenance": provenance(cfg, Settings(cfg).seed)})
        n_it, n_img = result.label_maps.shape[:2]
        root.create_array("label_maps", data=result.label_maps, chunks=(1, 1, grid, grid))
        embedding = root.create_array("embedding", shape=(n_img, grid, grid, result.kfd.dual_coef_.shape[1]),
                                      dtype=np.float32, chunks=(1, grid, grid, result.kfd.dual_coef_.shape[1]))
        for images, block in result.embed_blocks(feats):  # a block of images at a time
            embedding[images] = block.astype(np.float32)
        for name in ("energies", "fraction_changed", "model_change", "n_components", "iteration_seconds"):
            root.create_array(name, data=np.asarray(getattr(result, name)))
        sop = root.create_group("sop_models")
        for f in fields(result.sop_models):
            sop.create_array(f.name, data=np.asarray(getattr(result.sop_models, f.name)))
    write_bytes(out_kfd, pickle.dumps(result.kfd))
    photos = [load_rgb(index.images[i].path) for i in ids]
    title = f"{category}: {len(ids)} images, keypoint-label agreement {agreement[0]:.2f} -> {agreement[-1]:.2f}"
    plot_label_maps(photos, result.label_maps, out_labels_png, title)
    plot_convergence(result.energies, result.fraction_changed, result.model_change, out_convergence_png, category)
    state_path.unlink(missing_ok=True)


def resume_path(out_store: str | Path) -> Path:
    """Where the last finished iteration of a manifold job is kept until its store is written."""
    out_store = Path(out_store)
    return out_store.with_name(f".{out_store.name}.resume.pkl")


def run_key(feats, mcfg: ManifoldConfig) -> str:
    """sha1 of the features (an array or :class:`GridFeatures`, read ``chunk_images`` images at a time) and
    the settings: a resume state is used only by the run that wrote it."""
    h = hashlib.sha1(json.dumps(asdict(mcfg), sort_keys=True).encode())
    h.update(str(tuple(feats.shape)).encode())
    step = mcfg.chunk_images or feats.shape[0]
    for start in range(0, feats.shape[0], step):
        h.update(np.ascontiguousarray(feats[start:start + step], dtype=np.float64).data)
    return h.hexdigest()


def read_resume_state(path: Path, key: str) -> dict | None:
    """The state a killed run of these features and settings left at ``path`` (written by this stage), or
    None (none left, or another run's: then it is ignored and overwritten)."""
    if not path.is_file():
        return None
    try:
        state = pickle.loads(path.read_bytes())
    except Exception as exc:  # a state from another version of the code: start over
        log.warning("ignoring %s (%s: %s); starting from iteration 1", path, type(exc).__name__, exc)
        return None
    if state.get("key") != key:
        log.warning("ignoring %s: it belongs to other features or settings; starting from iteration 1", path)
        return None
    log.info("resuming from %s (iteration %d finished before the job was stopped)", path, state["iteration"])
    return state


SUMMARY_COLUMNS = ("category", "n_images", "grid", "n_iter", "converged", "seconds", "agreement_raw_hac",
                   "agreement_learned", "ami_raw_hac", "ami_learned")


@reads("seed", "dataset")
def summarise(cfg: Mapping, stores, out_csv: str | Path) -> None:
    """One row per category: iterations, convergence, time, and part separation at the annotated
    keypoints (agreement and AMI, :mod:`.measures`) of the raw-feature clustering (iteration 0)
    against the final labels. Measures are recomputed from the stored label maps and the dataset."""
    index = load_dataset(cfg)
    rows = []
    for path in stores:
        root = zarr.open_group(str(path), mode="r")
        a = dict(root.attrs)
        ids, grid = a["image_ids"], a["grid_size"]
        maps = root["label_maps"]
        kps, valid = image_keypoints(index, ids)
        cells = keypoint_cells(kps, valid, [(index.images[i].height, index.images[i].width) for i in ids], grid)
        first, last = maps[0], maps[maps.shape[0] - 1]
        rows.append({"category": a["category"], "n_images": len(ids), "grid": grid, "n_iter": a["n_iter"],
                     "converged": a["converged"],
                     "seconds": round(float(sum(root["iteration_seconds"][:][1:])), 2),
                     "agreement_raw_hac": round(keypoint_label_agreement(first, cells, valid), 4),
                     "agreement_learned": round(keypoint_label_agreement(last, cells, valid), 4),
                     "ami_raw_hac": round(keypoint_part_ami(first, cells, valid), 4),
                     "ami_learned": round(keypoint_part_ami(last, cells, valid), 4)})
    write_csv(out_csv, rows, SUMMARY_COLUMNS)
