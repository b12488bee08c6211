"""Dataset adapters behind one interface, looked up by kind in a registry."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable

from . import demo, folder, pf_pascal, pf_willow, spair
from .base import DatasetError, DatasetIndex, ImageRecord, Pair, SkippedPair, keypoint_box, load_mask, load_rgb
from .pairs import (assign_category_fold_split, assign_image_disjoint_split, category_folds, training_image_ids,
                    training_pairs)

LOADERS: dict[str, Callable[..., DatasetIndex]] = {
    "demo": demo.load,
    "pf-willow": pf_willow.load,
    "pf-pascal": pf_pascal.load,
    "spair": spair.load,
    "folder": folder.load,
}


def keep_categories(index: DatasetIndex, names) -> DatasetIndex:
    """Only the images and pairs of the categories ``names`` (all when empty)."""
    if not names:
        return index
    unknown = sorted(set(names) - set(index.categories()))
    if unknown:
        raise DatasetError(f"dataset.categories names {unknown}, not categories of {index.name} "
                           f"({index.categories()}); fix dataset.categories.")
    keep = set(names)
    index.images = {k: r for k, r in index.images.items() if r.category in keep}
    index.pairs = [p for p in index.pairs if p.category in keep]
    return index


def read_dataset(kind: str, root, name: str | None = None, pairs_csv: str = "", on_bad_pair: str = "error",
                 categories=()) -> DatasetIndex:
    """Every valid pair of the dataset of ``kind`` at ``root`` (its ``categories``, all when empty), before any
    split: what the index stage validates and freezes (:mod:`.frozen`), and every later stage splits."""
    if kind not in LOADERS:
        raise DatasetError(f"unknown dataset kind '{kind}'; choose one of {sorted(LOADERS)}.")
    return keep_categories(LOADERS[kind](root, name=name or kind, pairs_csv=pairs_csv, on_bad_pair=on_bad_pair),
                           categories)


def split_dataset(index: DatasetIndex, split_mode: str = "all_test", train_fraction: float = 0.0,
                  val_fraction: float = 0.0, seed: int = 0, folds: int = 0, fold: int | None = None) -> DatasetIndex:
    """A copy of ``index`` with its pairs split by ``split_mode`` (``index`` itself is left as it was).

    ``split_mode='category_folds'``: ``fold`` (0 .. folds-1) names the tested categories' fold; ``None``
    is the fold-free view (see :func:`assign_category_fold_split`). ``'train_val'``: every pair a training
    pair but a seeded ``val_fraction`` of each category's (a cross-dataset protocol's training dataset)."""
    if index.kind == "folder" and split_mode not in ("given", "all_test"):
        raise DatasetError(f"dataset kind 'folder' has no keypoints, so every pair is a training pair; "
                           f"dataset.split.mode '{split_mode}' would split off pairs nothing can score. "
                           f"Set dataset.split.mode: given.")
    index = replace(index, images=dict(index.images), pairs=list(index.pairs), skipped=list(index.skipped))
    if index.kind == "folder":  # no keypoints: every pair trains, nothing is tested (all_test: the image-only view)
        return index
    if split_mode == "train_val":  # a training dataset: every pair trains, val_fraction per category validates
        index.pairs = assign_category_fold_split(index.pairs, None, {c: 0 for c in index.categories()},
                                                 val_fraction, seed)
    elif split_mode == "category_folds":
        index.pairs = assign_category_fold_split(index.pairs, fold, category_folds(index.categories(), folds, seed),
                                                 val_fraction, seed)
    elif split_mode == "image_disjoint":
        before = Counter(p.category for p in index.pairs)
        index.pairs = assign_image_disjoint_split(index.pairs, index.images, train_fraction, val_fraction, seed)
        index.split_dropped = dict(sorted((before - Counter(p.category for p in index.pairs)).items()))
    elif split_mode == "all_test":
        index.pairs = [replace(p, split="test") for p in index.pairs]
    # "given": keep the layout's own split (demo, PF-PASCAL, SPair-71k).
    return index


def open_dataset(kind: str, root, name: str | None = None, pairs_csv: str = "", on_bad_pair: str = "error",
                 split_mode: str = "all_test", train_fraction: float = 0.0, val_fraction: float = 0.0,
                 seed: int = 0, categories=(), folds: int = 0, fold: int | None = None) -> DatasetIndex:
    """:func:`read_dataset` then :func:`split_dataset`: the live files of a dataset, split."""
    return split_dataset(read_dataset(kind, root, name=name, pairs_csv=pairs_csv, on_bad_pair=on_bad_pair,
                                      categories=categories),
                         split_mode, train_fraction=train_fraction, val_fraction=val_fraction, seed=seed, folds=folds,
                         fold=fold)


__all__ = ["DatasetError", "DatasetIndex", "ImageRecord", "Pair", "SkippedPair", "LOADERS", "open_dataset", "read_dataset", "split_dataset", "keep_categories", "category_folds", "keypoint_box",
           "load_rgb", "load_mask", "training_pairs", "training_image_ids"]
