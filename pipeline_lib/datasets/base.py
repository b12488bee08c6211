"""The one dataset interface: every adapter turns its release layout into a :class:`DatasetIndex`.

Downstream stages never see a layout: they read the normalised index (images, pairs, keypoints)
that :func:`pipeline_lib.datasets.index_io.write_index` stores under ``results/<dataset>/index``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """Bad input data; the message names the file (and row) and what to do about it."""


def read_csv_rows(path: Path, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, row) of every data row of a CSV annotation file, read as UTF-8 (a byte-order mark is
    fine). File-level problems are :class:`DatasetError` naming the file: not UTF-8 (with the byte offset),
    a header without the ``required`` columns (blamed on the header, line 1). A row with fewer or more fields
    than the header is left to the caller (``row_length_problem``), which may skip it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 4]!r}); "
                           f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
    reader = csv.DictReader(text.splitlines(), restkey=EXTRA_FIELDS)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}, line 1 (header): missing column(s) {missing}; the header has {header}. Add "
                           f"them or fix their names.")
    for line_no, row in enumerate(reader, start=2):
        yield line_no, row


EXTRA_FIELDS = "__extra_fields__"  # where read_csv_rows' DictReader keeps the fields beyond the header


def row_length_problem(row: dict) -> str | None:
    """Why a row of :func:`read_csv_rows` does not fit its header (too few or too many fields), or None."""
    n_header = sum(1 for k in row if k != EXTRA_FIELDS)
    if row.get(EXTRA_FIELDS):
        return f"{n_header + len(row[EXTRA_FIELDS])} fields where the header has {n_header}"
    short = sum(1 for k, v in row.items() if k != EXTRA_FIELDS and v is None)
    if short:
        return f"{n_header - short} fields where the header has {n_header}"
    return None


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    path: Path
    category: str
    height: int
    width: int
    mask_path: Path | None = None


@dataclass(frozen=True)
class Pair:
    """An ordered image pair with corresponding keypoints.

    src_kps, trg_kps: (K, 2) xy pixels in the original images; valid: (K,) bool.
    Boxes are xyxy in original pixels, or None when the layout has none.
    """

    pair_id: str
    category: str
    src: str
    trg: str
    src_kps: np.ndarray
    trg_kps: np.ndarray
    valid: np.ndarray
    split: str = "test"
    src_box: np.ndarray | None = None
    trg_box: np.ndarray | None = None


class SkippedPair(NamedTuple):
    """A pair candidate that failed validation in ``on_bad_pair: skip`` mode: where it is (file and row, or
    pair id), why, and its category where the candidate names one ("" when not even that could be read)."""

    where: str
    reason: str
    category: str = ""


@dataclass
class DatasetIndex:
    name: str
    kind: str
    images: dict[str, ImageRecord]
    pairs: list[Pair]
    skipped: list[SkippedPair] = field(default_factory=list)
    # image_disjoint: per category, the valid pairs whose two images fell into different splits
    split_dropped: dict[str, int] = field(default_factory=dict)
    flow_store: Path | None = None

    def categories(self) -> list[str]:
        return sorted({r.category for r in self.images.values()})

    @property
    def n_split_dropped(self) -> int:
        return sum(self.split_dropped.values())


def read_mat(path: Path) -> dict:
    """A MATLAB annotation file as a dict (``scipy.io.loadmat``). scipy.io is imported here, on first use:
    it costs 0.2 s of every workflow job's start, and only the .mat annotation readers need it."""
    import scipy.io

    return scipy.io.loadmat(path)


def image_size(path: Path, decode: bool = False) -> tuple[int, int]:
    """(H, W) of an image file, with a clear error for a missing or unreadable file. Pillow's verify() checks a
    PNG's chunk CRCs, not its compressed pixels; ``decode`` also decodes the image (:func:`load_rgb`), so damage
    inside the pixel data is found here, not in feature extraction (``on_bad_pair: skip`` decodes every image
    once when the index is built, so such an image is skipped with its pairs)."""
    if decode:
        h, w = load_rgb(path).shape[:2]
        return h, w
    if not path.is_file():
        raise DatasetError(f"image file missing: {path}. Restore it or remove it from the pair list.")
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"image file is corrupt or not an image: {path} ({exc}). Replace the file.") from exc
    return h, w


def category_dirs(root: Path) -> list[Path]:
    """Sub-folders of ``root`` that are categories: hidden folders (``.ipynb_checkpoints``) and archive
    debris (``__MACOSX``) are not."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's modes of 16-bit greyscale PNG/TIFF
UINT16_TO_UINT8 = 257.0  # 65535 / 255


def load_rgb(path: Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, with a clear error naming the file.

    16-bit greyscale is rescaled to 8 bits (Pillow's ``convert("RGB")`` would clip it to almost white)."""
    image_size(path)
    try:
        return _decode_rgb(path)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # damage that Pillow's verify() does not see
        raise DatasetError(f"image file is corrupt: {path} cannot be decoded ({type(exc).__name__}: {exc}). "
                           f"Replace the file.") from exc


def _decode_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode in SIXTEEN_BIT_MODES:
            grey = np.asarray(im, dtype=np.int64)
            if grey.min() < 0 or grey.max() > 65535:
                raise DatasetError(f"{path}: {im.mode} image with values in [{grey.min()}, {grey.max()}], outside "
                                   f"16-bit range; save it as 8- or 16-bit RGB/greyscale.")
            grey8 = np.round(grey / UINT16_TO_UINT8).astype(np.uint8)
            return np.repeat(grey8[..., None], 3, axis=2)
        if im.mode == "F":
            raise DatasetError(f"{path}: floating-point image (mode F) has no defined intensity range; save it as "
                               f"an 8- or 16-bit image.")
        return np.asarray(im.convert("RGB"))


def load_mask(path: Path) -> np.ndarray:
    """Read a foreground mask as (H, W) bool (grey > 127), with a clear error naming the file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > 127
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DatasetError(f"mask file is missing or corrupt: {path} ({type(exc).__name__}: {exc}). Replace the "
                           f"file.") from exc


def check_keypoints(src_kps: np.ndarray, trg_kps: np.ndarray, valid: np.ndarray,
                    src_hw: tuple[int, int], trg_hw: tuple[int, int], where: str) -> None:
    """Raise DatasetError for a count mismatch, non-finite or out-of-image valid keypoints."""
    if src_kps.shape != trg_kps.shape or src_kps.ndim != 2 or src_kps.shape[1] != 2:
        raise DatasetError(f"{where}: keypoint count mismatch: source has {src_kps.shape[0]} and target "
                           f"{trg_kps.shape[0]} keypoints; each source keypoint needs its target.")
    if not valid.any():
        raise DatasetError(f"{where}: no keypoint is valid in both images; drop the pair.")
    for name, kps, (h, w) in (("source", src_kps, src_hw), ("target", trg_kps, trg_hw)):
        v = kps[valid]
        if not np.isfinite(v).all():
            raise DatasetError(f"{where}: {name} keypoints contain NaN/inf; mark them invalid or fix the annotation.")
        # Half a pixel of slack: annotations on the border pixel centre are legitimate.
        bad = (v[:, 0] < -0.5) | (v[:, 0] > w - 0.5) | (v[:, 1] < -0.5) | (v[:, 1] > h - 0.5)
        if bad.any():
            i = int(np.flatnonzero(valid)[np.flatnonzero(bad)[0]])
            raise DatasetError(f"{where}: {name} keypoint {i} = ({kps[i, 0]:.2f}, {kps[i, 1]:.2f}) lies outside the "
                               f"{w}x{h} image; fix the annotation or the image.")


def keypoint_box(kps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Tight xyxy box of the valid keypoints (PF-WILLOW's PCK box)."""
    v = kps[valid]
    return np.array([v[:, 0].min(), v[:, 1].min(), v[:, 0].max(), v[:, 1].max()], dtype=np.float64)
