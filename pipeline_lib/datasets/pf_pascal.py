"""PF-PASCAL in the layout of the Hyperpixel Flow release (Ham et al., TPAMI 2017).

    <root>/{trn,val,test}_pairs.csv       source_image, target_image, class (1..20)[, flip]
    <root>/JPEGImages/<image>.jpg
    <root>/Annotations/<class name>/<image>.mat   kps: K x 2 (NaN = not visible), bbox: 1 x 4 xyxy

Annotation coordinates are MATLAB 1-based and converted to 0-based pixels; a keypoint is valid when
it is finite in both images. The split comes from the CSV file name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (DatasetError, DatasetIndex, ImageRecord, Pair, image_size, read_csv_rows, read_mat,
                   row_length_problem)
from .pairs import collect_pairs

PASCAL_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                  "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                  "train", "tvmonitor")
SPLIT_FILES = {"train": "trn_pairs.csv", "val": "val_pairs.csv", "test": "test_pairs.csv"}
MATLAB_TO_ZERO_BASED = 1.0


def _annotation(root: Path, category: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    path = root / "Annotations" / category / f"{stem}.mat"
    if not path.is_file():
        raise DatasetError(f"annotation file missing: {path}; PF-PASCAL needs kps and bbox per image.")
    try:
        mat = read_mat(path)
        kps = np.asarray(mat["kps"], dtype=np.float64).reshape(-1, 2) - MATLAB_TO_ZERO_BASED
        box = np.asarray(mat["bbox"], dtype=np.float64).reshape(4) - MATLAB_TO_ZERO_BASED
    except (KeyError, ValueError, OSError) as exc:
        raise DatasetError(f"cannot read kps/bbox from {path} ({exc}); replace the annotation file.") from exc
    return kps, box


def load(root: str | Path, name: str = "pf-pascal", pairs_csv: str = "", on_bad_pair: str = "error") -> DatasetIndex:
    root = Path(root)
    files = {s: root / f for s, f in SPLIT_FILES.items() if (root / f).is_file()}
    if not files:
        raise DatasetError(f"no pair lists ({', '.join(SPLIT_FILES.values())}) under {root}; "
                           f"set dataset.root to the PF-PASCAL folder.")
    images: dict[str, ImageRecord] = {}
    rows = []
    for split, path in files.items():
        for row_no, row in read_csv_rows(path, required=("source_image", "target_image", "class")):
            where = f"{path}, row {row_no}"
            problem = row_length_problem(row)
            if problem:
                raise DatasetError(f"{where}: {problem}; fix the row or remove it.")
            try:
                cls = int(row["class"])
                category = PASCAL_CLASSES[cls - 1]
            except (KeyError, ValueError, IndexError) as exc:
                raise DatasetError(f"{where}: bad class column ({exc}); expected 1..20.") from exc
            keys = []
            for col in ("source_image", "target_image"):
                img = root / row[col]
                key = Path(row[col]).stem
                if key not in images:
                    h, w = image_size(img, decode=on_bad_pair == "skip")
                    images[key] = ImageRecord(key, img, category, h, w)
                keys.append(key)
            rows.append((where, split, category, *keys))
    index = DatasetIndex(name=name, kind="pf-pascal", images=images, pairs=[])

    def candidate(where, split, category, a, b):
        def make():
            src, src_box = _annotation(root, category, a)
            trg, trg_box = _annotation(root, category, b)
            if src.shape != trg.shape:
                raise DatasetError(f"{where}: keypoint count mismatch ({len(src)} vs {len(trg)}).")
            valid = np.isfinite(src).all(1) & np.isfinite(trg).all(1)
            return Pair(f"{split}:{a}->{b}", category, a, b, src, trg, valid, split, src_box, trg_box)
        return where, category, make

    collect_pairs(index, [candidate(*r) for r in rows], on_bad_pair)
    return index
