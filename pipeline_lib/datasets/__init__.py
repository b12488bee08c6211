"""Dataset adapters behind one interface, looked up by kind in a registry."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from . import demo, pf_pascal, pf_willow, spair
from .base import DatasetError, DatasetIndex, ImageRecord, Pair, keypoint_box, load_mask, load_rgb
from .pairs import assign_image_disjoint_split

LOADERS: dict[str, Callable[..., DatasetIndex]] = {
    "demo": demo.load,
    "pf-willow": pf_willow.load,
    "pf-pascal": pf_pascal.load,
    "spair": spair.load,
}


def open_dataset(kind: str, root, name: str | None = None, pairs_csv: str = "", on_bad_pair: str = "error",
                 split_mode: str = "all_test", train_fraction: float = 0.0, val_fraction: float = 0.0,
                 seed: int = 0) -> DatasetIndex:
    """Read a dataset of ``kind`` from ``root`` and apply the configured split."""
    if kind not in LOADERS:
        raise DatasetError(f"unknown dataset kind '{kind}'; choose one of {sorted(LOADERS)}.")
    index = LOADERS[kind](root, name=name or kind, pairs_csv=pairs_csv, on_bad_pair=on_bad_pair)
    if split_mode == "image_disjoint":
        index.pairs = assign_image_disjoint_split(index.pairs, index.images, train_fraction, val_fraction, seed)
    elif split_mode == "all_test":
        index.pairs = [replace(p, split="test") for p in index.pairs]
    # "given": keep the layout's own split (demo, PF-PASCAL, SPair-71k).
    return index


__all__ = ["DatasetError", "DatasetIndex", "ImageRecord", "Pair", "LOADERS", "open_dataset", "keypoint_box",
           "load_rgb", "load_mask"]
