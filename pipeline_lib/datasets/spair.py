"""SPair-71k in its public layout (Min et al., 2019).

    <root>/JPEGImages/<category>/<image>.jpg
    <root>/PairAnnotation/{trn,val,test}/<pair name>.json
        src_imname, trg_imname, category, src_kps, trg_kps ([[x, y], ...]), src_bndbox, trg_bndbox (xyxy)

Coordinates are 0-based pixels already. The split comes from the PairAnnotation sub-folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetIndex, ImageRecord, Pair, image_size
from .pairs import collect_pairs

SPLIT_DIRS = {"train": "trn", "val": "val", "test": "test"}


def load(root: str | Path, name: str = "spair", pairs_csv: str = "", on_bad_pair: str = "error") -> DatasetIndex:
    root = Path(root)
    ann_root = root / "PairAnnotation"
    if not ann_root.is_dir():
        raise DatasetError(f"{ann_root} not found; set dataset.root to the SPair-71k folder.")
    images: dict[str, ImageRecord] = {}
    candidates = []
    for split, sub in SPLIT_DIRS.items():
        for path in sorted((ann_root / sub).glob("*.json")):
            try:
                ann = json.loads(path.read_text())
                category = ann["category"]
                names = (ann["src_imname"], ann["trg_imname"])
            except (ValueError, KeyError) as exc:
                raise DatasetError(f"{path}: malformed pair annotation ({exc}); replace the file.") from exc
            keys = []
            for imname in names:
                key = f"{category}/{Path(imname).stem}"
                if key not in images:
                    img = root / "JPEGImages" / category / imname
                    h, w = image_size(img, decode=on_bad_pair == "skip")
                    images[key] = ImageRecord(key, img, category, h, w)
                keys.append(key)

            def make(ann=ann, path=path, split=split, keys=keys, category=category):
                try:
                    src = np.asarray(ann["src_kps"], dtype=np.float64).reshape(-1, 2)
                    trg = np.asarray(ann["trg_kps"], dtype=np.float64).reshape(-1, 2)
                    boxes = [np.asarray(ann[k], dtype=np.float64).reshape(4) for k in ("src_bndbox", "trg_bndbox")]
                except (KeyError, ValueError) as exc:
                    raise DatasetError(f"{path}: bad keypoints or boxes ({exc}).") from exc
                if src.shape != trg.shape:
                    raise DatasetError(f"{path}: keypoint count mismatch ({len(src)} vs {len(trg)}).")
                valid = np.isfinite(src).all(1) & np.isfinite(trg).all(1)
                return Pair(f"{split}:{path.stem}", category, keys[0], keys[1], src, trg, valid, split, *boxes)

            candidates.append((str(path), category, make))
    if not candidates:
        raise DatasetError(f"no pair annotations under {ann_root}/{{trn,val,test}}.")
    index = DatasetIndex(name=name, kind="spair", images=images, pairs=[])
    collect_pairs(index, candidates, on_bad_pair)
    return index
