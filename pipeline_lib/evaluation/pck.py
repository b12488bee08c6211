"""Percentage of correct keypoints (pure functions)."""

from __future__ import annotations

import numpy as np

from ..datasets.base import keypoint_box


def pck_threshold(kind: str, trg_kps: np.ndarray, valid: np.ndarray, trg_hw: tuple[int, int],
                  trg_box: np.ndarray | None = None) -> float:
    """The PCK distance unit in target pixels.

    ``bbox``: max side of the target object box (the tight box of the valid target keypoints when
    the dataset has no box, as PF-WILLOW); ``img``: max side of the target image.
    """
    if kind == "img":
        return float(max(trg_hw))
    if kind == "bbox":
        box = trg_box if trg_box is not None else keypoint_box(trg_kps, valid)
        return float(max(box[2] - box[0], box[3] - box[1]))
    raise ValueError(f"unknown PCK threshold kind '{kind}'; use 'bbox' or 'img'.")


def correct_keypoints(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, threshold_px: float,
                      alpha: float) -> np.ndarray:
    """(K,) bool: keypoint k is valid and ||pred_k - gt_k|| <= alpha * threshold_px."""
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be (K, 2)")
    if valid.shape != (len(gt),):
        raise ValueError(f"valid must be ({len(gt)},), got {valid.shape}")
    with np.errstate(invalid="ignore"):
        d = np.linalg.norm(pred - gt, axis=1)
    # A non-finite prediction is wrong, never silently dropped.
    return valid & np.isfinite(d) & (d <= alpha * threshold_px)


def pck_counts(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, threshold_px: float,
               alpha: float) -> tuple[int, int]:
    """(number correct, number valid): a keypoint is correct when ||pred - gt|| <= alpha * threshold_px."""
    return int(correct_keypoints(pred, gt, valid, threshold_px, alpha).sum()), int(valid.sum())
