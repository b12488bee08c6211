"""A folder of unlabelled images: ``<root>/<category>/*.{png,jpg,jpeg}``, no annotations at all.

Gaur & Manjunath's chain needs nothing more than images of one category: the manifold, the pseudo flow and
the Siamese network learn from them alone. Every ordered pair of two images of a category is a training pair
without keypoints; nothing here can be searched or evaluated (both need keypoints), so the workflow's targets
for this kind stop at the trained encoder's features (``workflow/rules/common.smk``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetIndex, ImageRecord, Pair, SkippedPair, category_dirs, image_size
from .pairs import all_ordered_pairs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NO_KEYPOINTS = np.zeros((0, 2))


def load(root: str | Path, name: str = "folder", pairs_csv: str = "", on_bad_pair: str = "error") -> DatasetIndex:
    """Every image of every category folder; all ordered pairs within a category, split ``train``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}. Set dataset.root to a folder holding one sub-folder of "
                           f"images per category.")
    if pairs_csv:
        raise DatasetError(f"dataset.pairs_csv '{pairs_csv}' is given, but kind 'folder' pairs every two images of a "
                           f"category itself; leave pairs_csv empty.")
    images: dict[str, ImageRecord] = {}
    skipped: list[SkippedPair] = []
    for cat_dir in category_dirs(root):
        files = sorted(p for p in cat_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith("."))
        if len(files) < 2:
            raise DatasetError(f"category folder {cat_dir} holds {len(files)} image(s) ({', '.join(IMAGE_SUFFIXES)}); "
                               f"a category needs at least two. Add images or remove the folder.")
        readable = 0
        for path in files:
            key = f"{cat_dir.name}/{path.stem}"
            if key in images:
                raise DatasetError(f"{path} and {images[key].path} share the name '{key}'; rename one.")
            try:
                h, w = image_size(path, decode=on_bad_pair == "skip")
            except DatasetError as exc:  # zero-byte, truncated, not an image
                if on_bad_pair != "skip":
                    raise DatasetError(f"{exc} (or set dataset.on_bad_pair: skip to leave it out)") from exc
                skipped.append(SkippedPair(str(path), str(exc), cat_dir.name))
                continue
            images[key] = ImageRecord(key, path, cat_dir.name, h, w)
            readable += 1
        if readable < 2:
            raise DatasetError(f"category folder {cat_dir} holds {readable} readable image(s); a category needs at "
                               f"least two. Add or replace images, or remove the folder.")
    if not images:
        raise DatasetError(f"no category folders with images under {root}.")
    pairs = [Pair(f"{a}->{b}", images[a].category, a, b, NO_KEYPOINTS, NO_KEYPOINTS, np.zeros(0, dtype=bool), "train")
             for a, b in all_ordered_pairs(images)]
    return DatasetIndex(name=name, kind="folder", images=images, pairs=pairs, skipped=skipped)
