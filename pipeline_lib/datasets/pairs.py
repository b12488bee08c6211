"""Turning raw pair candidates into validated :class:`Pair` objects, and split assignment."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .base import DatasetError, DatasetIndex, ImageRecord, Pair, SkippedPair, check_keypoints


def collect_pairs(index: DatasetIndex, candidates: Iterable[tuple[str, str, Callable[[], Pair]]],
                  on_bad_pair: str) -> None:
    """Build each ``(where, category, make_pair)`` candidate (``where`` locates it: file and row, or pair id;
    ``category`` as far as the candidate names one, "" if not), validate it against its images and append it to
    ``index``.

    ``on_bad_pair='error'`` re-raises the first DatasetError; ``'skip'`` records a :class:`SkippedPair`. A pair
    listed twice (predictions are keyed by pair id, so the second row would be scored with the first
    row's prediction), a self-pair and a pair across two categories are bad pairs too.
    """
    seen: dict[str, str] = {}
    for where, category, make in candidates:
        try:
            pair = make()
            for key in (pair.src, pair.trg):
                if key not in index.images:
                    raise DatasetError(f"{where}: unknown image '{key}' (not found in the dataset root); "
                                       f"fix the pair list or restore the image.")
            if pair.src == pair.trg:
                raise DatasetError(f"{where}: source and target are the same image '{pair.src}'; remove the row.")
            cats = (index.images[pair.src].category, index.images[pair.trg].category)
            if cats[0] != cats[1]:
                raise DatasetError(f"{where}: pair {pair.pair_id} joins categories '{cats[0]}' and '{cats[1]}'; "
                                   f"semantic correspondence pairs two images of one category. Fix the row.")
            if pair.pair_id in seen:
                raise DatasetError(f"{where}: pair {pair.pair_id} is listed twice (first at {seen[pair.pair_id]}); "
                                   f"remove the duplicate row.")
            s, t = index.images[pair.src], index.images[pair.trg]
            check_keypoints(pair.src_kps, pair.trg_kps, pair.valid, (s.height, s.width), (t.height, t.width),
                            where=where if where == pair.pair_id else f"{where} (pair {pair.pair_id})")
        except DatasetError as exc:
            if on_bad_pair == "error":
                raise DatasetError(f"{exc} (or set dataset.on_bad_pair: skip to skip bad pairs)") from exc
            index.skipped.append(SkippedPair(where, str(exc), category))
            continue
        seen[pair.pair_id] = where
        index.pairs.append(pair)


def assign_image_disjoint_split(pairs: list[Pair], images: dict[str, ImageRecord], train_fraction: float,
                                val_fraction: float, seed: int) -> list[Pair]:
    """Per category, partition images into train/val/test; keep pairs whose two images share a split.

    Pairs that straddle two splits are dropped, so no test image is seen in training or validation.
    """
    if train_fraction + val_fraction >= 1.0:
        raise DatasetError(f"split fractions train={train_fraction} + val={val_fraction} leave no test images; "
                           f"make their sum < 1.")
    rng = np.random.default_rng(seed)
    image_split: dict[str, str] = {}
    for cat in sorted({r.category for r in images.values()}):
        ids = sorted(k for k, r in images.items() if r.category == cat)
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_train = int(round(train_fraction * len(ids)))
        n_val = int(round(val_fraction * len(ids)))
        for i, key in enumerate(order):
            image_split[key] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    out = []
    for p in pairs:
        a, b = image_split[p.src], image_split[p.trg]
        if a == b:
            out.append(replace(p, split=a))
    return out


def category_folds(categories: Sequence[str], n_folds: int, seed: int) -> dict[str, int]:
    """Category -> fold (0 .. n_folds-1): a seeded permutation of the sorted names dealt round robin, so fold
    sizes differ by at most one and the assignment depends only on the names, the fold count and the seed."""
    cats = sorted(categories)
    if not 2 <= n_folds <= len(cats):
        raise DatasetError(f"dataset.split.folds = {n_folds} for {len(cats)} categories {cats}: category folds need "
                           f"2 <= folds <= number of categories; change dataset.split.folds.")
    order = [cats[i] for i in np.random.default_rng(seed).permutation(len(cats))]
    return {c: i % n_folds for i, c in enumerate(order)}


def assign_category_fold_split(pairs: list[Pair], fold: int | None, folds: Mapping[str, int], val_fraction: float,
                               seed: int) -> list[Pair]:
    """The category-fold protocol: every pair of a category in ``fold`` is a test pair; the pairs of the other
    folds' categories are training pairs, except a seeded ``val_fraction`` of each category's pairs held out
    for validation (the layer search). ``fold=None`` gives the fold-free view (every category train/val),
    which the label-free per-category stages (manifold, pseudo flow) are computed on once for all folds:
    a category's train/val assignment is the same in every fold where it is not tested."""
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"dataset.split.val_fraction = {val_fraction}: category folds need 0 <= val_fraction < 1.")
    if fold is not None and fold not in set(folds.values()):
        raise DatasetError(f"dataset.split.fold = {fold} but there are {len(set(folds.values()))} folds "
                           f"(0 .. {max(folds.values())}).")
    out: list[Pair] = []
    for cat in sorted({p.category for p in pairs}):
        mine = sorted((p for p in pairs if p.category == cat), key=lambda p: p.pair_id)
        if fold is not None and folds[cat] == fold:
            out += [replace(p, split="test") for p in mine]
            continue
        # One generator per category (seed, name): the same held-out pairs whichever fold is tested.
        rng = np.random.default_rng([seed, *cat.encode()])
        n_val = int(round(val_fraction * len(mine)))
        val = set(rng.permutation(len(mine))[:n_val].tolist())
        out += [replace(p, split="val" if i in val else "train") for i, p in enumerate(mine)]
    order = {p.pair_id: i for i, p in enumerate(pairs)}
    return sorted(out, key=lambda p: order[p.pair_id])


def all_ordered_pairs(images: dict[str, ImageRecord]) -> list[tuple[str, str]]:
    """Every ordered pair of distinct images inside a category (PF-WILLOW's pair list when absent)."""
    out = []
    for cat in sorted({r.category for r in images.values()}):
        ids = sorted(k for k, r in images.items() if r.category == cat)
        out += [(a, b) for a in ids for b in ids if a != b]
    return out


def training_pairs(index: DatasetIndex, splits: Sequence[str] = ("train",), method: str = "training") -> list[Pair]:
    """The dataset's pairs of ``splits`` (each of one category); ``method`` names the caller in the error."""
    pairs = [p for p in index.pairs if p.split in splits]
    if not pairs:
        raise DatasetError(f"dataset {index.name}: no pair in split(s) {list(splits)}; {method} needs training "
                           f"pairs (set dataset.split so that a train split exists).")
    return pairs


def training_image_ids(index: DatasetIndex, splits: Sequence[str] = ("train",), method: str = "training") -> list[str]:
    """Sorted ids of the images that appear in pairs of ``splits``."""
    return sorted({i for p in training_pairs(index, splits, method) for i in (p.src, p.trg)})
