"""How well a labelling of a category's grids separates semantic parts, measured at annotated keypoints.

Gaur et al. give no such measure; these are ours, to compare the labels of raw-feature clustering
(iteration 0 of Algorithm 1) with the labels after KFD embedding and graph-cut refinement:

- :func:`keypoint_label_agreement`: does the same keypoint get the same label in every image?
  (consistency only: one label everywhere scores 1);
- :func:`keypoint_part_ami`: adjusted mutual information between keypoint identity and label over
  all annotated keypoints: high only when the same keypoint gets the same label across images AND
  different keypoints get different labels; 0 for a labelling no better than chance, 1 at best.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score


def keypoint_labels(label_maps: np.ndarray, kp_cells: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(n_img, K) label at each keypoint's cell (validated shapes; valid cells must be inside the grid)."""
    L = np.asarray(label_maps)
    cells = np.asarray(kp_cells)
    valid = np.asarray(valid, dtype=bool)
    if L.ndim != 3:
        raise ValueError(f"label_maps must be (n_img, h, w), got shape {L.shape}")
    n_img, h, w = L.shape
    if cells.ndim != 3 or cells.shape[0] != n_img or cells.shape[2] != 2:
        raise ValueError(f"kp_cells must be ({n_img}, K, 2), got shape {cells.shape}")
    if valid.shape != cells.shape[:2]:
        raise ValueError(f"valid must have shape {cells.shape[:2]}, got {valid.shape}")
    if not np.issubdtype(cells.dtype, np.integer):
        raise ValueError(f"kp_cells must be integer (row, col) cells, got {cells.dtype}")
    r, c = cells[..., 0], cells[..., 1]
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    if np.any(valid & ~inside):
        raise ValueError(f"valid keypoint cells must lie inside the {h}x{w} grid")
    img_idx = np.broadcast_to(np.arange(n_img)[:, None], r.shape)
    return L[img_idx, np.where(inside, r, 0), np.where(inside, c, 0)]


def keypoint_label_agreement(label_maps: np.ndarray, kp_cells: np.ndarray, valid: np.ndarray) -> float:
    """Fraction of (image pair, keypoint) cases, over unordered image pairs and keypoints valid in
    both, whose labels at the keypoint's cell agree; NaN when no keypoint is valid in two images.

    label_maps (n_img, h, w) int; kp_cells (n_img, K, 2) int (row, col); valid (n_img, K) bool.
    """
    lab = keypoint_labels(label_maps, kp_cells, valid)
    valid = np.asarray(valid, dtype=bool)
    agree = total = 0
    for kp in range(lab.shape[1]):
        vals = lab[valid[:, kp], kp]
        total += vals.size * (vals.size - 1) // 2
        _, counts = np.unique(vals, return_counts=True)
        agree += int((counts * (counts - 1) // 2).sum())
    return float(agree / total) if total else math.nan


def keypoint_part_ami(label_maps: np.ndarray, kp_cells: np.ndarray, valid: np.ndarray) -> float:
    """Adjusted mutual information between keypoint index and label over every valid keypoint.

    Same arguments as :func:`keypoint_label_agreement`; NaN with fewer than two distinct keypoints.
    """
    lab = keypoint_labels(label_maps, kp_cells, valid)
    valid = np.asarray(valid, dtype=bool)
    kp_index = np.broadcast_to(np.arange(lab.shape[1])[None, :], lab.shape)
    truth, pred = kp_index[valid], lab[valid]
    if np.unique(truth).size < 2:
        return math.nan
    return float(adjusted_mutual_info_score(truth, pred))
