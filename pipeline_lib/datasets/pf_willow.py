"""PF-WILLOW in its release layout (Ham et al., Proposal Flow, CVPR 2016).

    <root>/<subclass>/<image>.png   RGB images
    <root>/<subclass>/<image>.mat   variable pts_coord: 2 x K (row 0 = x, row 1 = y), MATLAB 1-based
    <root>/test_pairs.csv           optional: source_image, target_image, category, XA1.., YA1.., XB1.., YB1..

Without a pairs CSV every ordered pair of distinct images inside a subclass is used. Keypoints are
converted to 0-based pixels. The PCK box is the tight box of the target keypoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import (DatasetError, DatasetIndex, ImageRecord, Pair, category_dirs, image_size, keypoint_box, read_csv_rows,
                   read_mat, row_length_problem)
from .pairs import all_ordered_pairs, collect_pairs

MATLAB_TO_ZERO_BASED = 1.0  # MATLAB pixel (1, 1) is our pixel (0, 0)
DEFAULT_PAIRS_CSV = "test_pairs.csv"


def _read_pts(mat_path: Path) -> np.ndarray:
    if not mat_path.is_file():
        raise DatasetError(f"annotation file missing: {mat_path}; PF-WILLOW needs a .mat with pts_coord per image.")
    try:
        pts = read_mat(mat_path)["pts_coord"]
    except (KeyError, ValueError, OSError) as exc:
        raise DatasetError(f"cannot read pts_coord from {mat_path} ({exc}); replace the annotation file.") from exc
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 2:
        raise DatasetError(f"{mat_path}: pts_coord has shape {pts.shape}, expected 2 x K (x row, y row).")
    return pts.T - MATLAB_TO_ZERO_BASED


def load(root: str | Path, name: str = "pf-willow", pairs_csv: str = "", on_bad_pair: str = "error") -> DatasetIndex:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"PF-WILLOW root not found: {root}. Set dataset.root to the folder holding the class folders.")
    images: dict[str, ImageRecord] = {}
    unreadable: dict[str, ImageRecord] = {}  # skip mode: images that cannot be read (their pairs are skipped)
    why: dict[str, str] = {}
    for cls_dir in category_dirs(root):
        pngs = sorted(cls_dir.glob("*.png"))
        if not pngs:
            raise DatasetError(f"empty category: {cls_dir} holds no .png images; remove the folder or add images.")
        for png in pngs:
            key = f"{cls_dir.name}/{png.stem}"
            try:
                h, w = image_size(png, decode=on_bad_pair == "skip")
            except DatasetError as exc:  # zero-byte, truncated, not an image
                if on_bad_pair != "skip":
                    raise
                unreadable[key], why[key] = ImageRecord(key, png, cls_dir.name, 0, 0), str(exc)
                continue
            images[key] = ImageRecord(key, png, cls_dir.name, h, w)

    def readable(*keys: str) -> None:
        for k in keys:
            if k in why:
                raise DatasetError(why[k])

    if not images:
        raise DatasetError(f"no class folders with images under {root}.")
    index = DatasetIndex(name=name, kind="pf-willow", images=images, pairs=[])
    kps = {}

    def pts(key: str) -> np.ndarray:
        if key not in kps:
            kps[key] = _read_pts(images[key].path.with_suffix(".mat"))
        return kps[key]

    csv_path = root / (pairs_csv or DEFAULT_PAIRS_CSV)
    if pairs_csv and not csv_path.is_file():
        raise DatasetError(f"pairs CSV not found: {csv_path}; fix dataset.pairs_csv or leave it empty to generate pairs.")
    if csv_path.is_file():
        candidates = list(_csv_candidates(csv_path, root, images, readable))
    else:
        def generated(a: str, b: str) -> Pair:
            readable(a, b)
            return _pair(f"{a}->{b}", a, b, images, pts(a), pts(b))

        everything = {**images, **unreadable}
        candidates = [(f"{a}->{b}", everything[a].category, lambda a=a, b=b: generated(a, b))
                      for a, b in all_ordered_pairs(everything)]
    collect_pairs(index, candidates, on_bad_pair)
    return index


def _pair(pair_id: str, a: str, b: str, images, src_kps: np.ndarray, trg_kps: np.ndarray) -> Pair:
    if a not in images or b not in images:
        missing = a if a not in images else b
        raise DatasetError(f"pair {pair_id}: unknown image '{missing}'; fix the pair list or restore the image.")
    if src_kps.shape != trg_kps.shape:
        raise DatasetError(f"pair {pair_id}: keypoint count mismatch ({len(src_kps)} source vs {len(trg_kps)} target).")
    # Every PF-WILLOW keypoint is annotated in every image: a NaN is an error, caught by check_keypoints.
    valid = np.ones(len(src_kps), dtype=bool)
    finite = bool(np.isfinite(src_kps).all() and np.isfinite(trg_kps).all())
    return Pair(pair_id, images[a].category, a, b, src_kps, trg_kps, valid,
                src_box=keypoint_box(src_kps, valid) if finite else None,
                trg_box=keypoint_box(trg_kps, valid) if finite else None)


def check_category(value: str | None, image_key: str, images, where: str) -> None:
    """The CSV's ``category`` names the class folder of its images (a numeric class id, as some releases
    write it, is accepted unchecked)."""
    value = (value or "").strip()
    if not value or value.lstrip("-").isdigit() or image_key not in images:
        return
    if value != images[image_key].category:
        raise DatasetError(f"{where}: category column says '{value}' but image '{image_key}' is in class folder "
                           f"'{images[image_key].category}'; fix the row's category or its image paths.")


def _row_category(row: dict, root: Path) -> str:
    """The class folder a CSV row's source image sits in, as far as the row can be read ("" if not)."""
    parts = Path(str(row.get("source_image") or "")).parts
    return parts[0] if len(parts) > 1 and (root / parts[0]).is_dir() else ""


def _csv_candidates(csv_path: Path, root: Path, images, readable=lambda *keys: None):
    for row_no, row in read_csv_rows(csv_path, required=("source_image", "target_image")):
        def make(row=row, row_no=row_no):
            where = f"{csv_path}, row {row_no}"
            problem = row_length_problem(row)
            if problem:
                raise DatasetError(f"{where}: {problem}; fix the row or remove it.")
            for col in ("source_image", "target_image"):
                if row.get(col) and not (root / row[col]).is_file():
                    raise DatasetError(f"{where}: image file missing: {root / row[col]}; restore it or "
                                       f"remove the row.")
            try:
                a = str(Path(row["source_image"]).with_suffix("")).replace("\\", "/")
                b = str(Path(row["target_image"]).with_suffix("")).replace("\\", "/")
                readable(a, b)
                check_category(row.get("category"), a, images, where)
                n = sum(1 for k in row if k.startswith("XA"))
                m = sum(1 for k in row if k.startswith("XB"))
                if n != m:
                    raise DatasetError(f"{where}: keypoint count mismatch ({n} source vs {m} target columns).")
                def col(p: str, i: int) -> float:
                    v = row[f"{p}{i}"]
                    return float(v) if v not in ("", None) else np.nan
                src = np.array([[col("XA", i), col("YA", i)] for i in range(1, n + 1)]) - MATLAB_TO_ZERO_BASED
                trg = np.array([[col("XB", i), col("YB", i)] for i in range(1, n + 1)]) - MATLAB_TO_ZERO_BASED
            except (KeyError, ValueError) as exc:
                if isinstance(exc, DatasetError):  # already names the file and the fix
                    raise
                raise DatasetError(f"{where}: malformed row ({exc}); expected source_image, target_image, "
                                   f"category, XA*, YA*, XB*, YB* columns.") from exc
            return _pair(f"{a}->{b}", a, b, images, src, trg)
        yield f"{csv_path}, row {row_no}", _row_category(row, root), make
