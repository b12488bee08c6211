"""How good a pseudo flow is: keypoints moved by it (PCK, confident fraction) and, where the exact flow
exists (the demo), its end-point error and dense PCK. Pure functions; the stage that writes the tables
is :mod:`.stage`."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..evaluation import pck_counts
from ..kernels.flow import upsample_flow
from ..kernels.sampling import sample_at_pixels


def moved_keypoints(flow: torch.Tensor, kps: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(K, 2) source keypoints moved by a (h, w, 2) grid flow covering an ``image_hw`` image, the flow read
    bilinearly (border values beyond the outer cells) -> (K, 2)."""
    step = sample_at_pixels(flow.permute(2, 0, 1), torch.from_numpy(kps), image_hw, padding_mode="border")
    return kps + step.numpy().astype(np.float64)


def confident_fraction(mask: torch.Tensor, kps: np.ndarray, image_hw: tuple[int, int]) -> float:
    """Fraction of (K, 2) keypoints whose nearest cell of a (h, w) confidence mask is True."""
    near = sample_at_pixels(mask.float()[None], torch.from_numpy(kps), image_hw, mode="nearest")[:, 0]
    return float((near.numpy() > 0.5).mean())


def flow_quality(pred_flow, pred_mask, true_flow, true_valid, alpha_px_list: Sequence[float]) -> dict[str, float]:
    """How good a (pseudo) flow is against the true flow, all (H, W, 2) / (H, W) on one grid.

    Returns ``epe``: mean end-point error (pixels) over pixels confident in ``pred_mask`` and valid
    in ``true_valid`` (NaN when none); ``pck@<a>``: fraction of those pixels with error <= a pixels,
    for each a in ``alpha_px_list``; ``coverage``: fraction of true-valid pixels that have a
    confident prediction; ``n_pixels``: number of pixels scored.
    """
    pf, tf = np.asarray(pred_flow, dtype=np.float64), np.asarray(true_flow, dtype=np.float64)
    pm, tv = np.asarray(pred_mask, dtype=bool), np.asarray(true_valid, dtype=bool)
    if pf.shape != tf.shape or pf.ndim != 3 or pf.shape[2] != 2 or pm.shape != pf.shape[:2] or tv.shape != pm.shape:
        raise ValueError(f"flow_quality: expected (H, W, 2) flows and (H, W) masks of one size, got {pf.shape}, "
                         f"{pm.shape}, {tf.shape}, {tv.shape}")
    both = pm & tv
    err = np.linalg.norm(pf - tf, axis=-1)[both]
    n = int(both.sum())
    out = {"epe": float(err.mean()) if n else float("nan"), "n_pixels": n,
           "coverage": float(both.sum() / tv.sum()) if tv.any() else float("nan")}
    for a in alpha_px_list:
        out[f"pck@{a:g}"] = float((err <= a).mean()) if n else float("nan")
    return out


def pair_quality(flow: torch.Tensor, mask: torch.Tensor, src_kps: np.ndarray, trg_kps: np.ndarray,
                 src_hw: tuple[int, int], threshold: float, alphas: Sequence[float],
                 true_flow: np.ndarray | None = None, true_valid: np.ndarray | None = None) -> list[dict]:
    """One row per alpha for one construction's (h, w, 2) grid flow and (h, w) mask of a pair: keypoint
    PCK of the moved (K, 2) ``src_kps`` against ``trg_kps`` at ``alpha * threshold`` pixels, the confident
    fraction of the keypoints, and with the exact (H, W, 2) flow the dense measures of :func:`flow_quality`
    (NaN without)."""
    moved = moved_keypoints(flow, src_kps, src_hw)
    confident = confident_fraction(mask, src_kps, src_hw)
    if true_flow is not None:
        f_img, m_img = upsample_flow(flow, mask, src_hw)
    rows = []
    for alpha in alphas:
        ok, tot = pck_counts(moved, trg_kps, np.ones(len(src_kps), bool), threshold, alpha)
        dense = {} if true_flow is None else flow_quality(f_img, m_img, true_flow, true_valid, [alpha * threshold])
        rows.append({"alpha": alpha, "kp_pck": round(100 * ok / tot, 3), "kp_confident": round(confident, 4),
                     "epe_px": round(dense.get("epe", float("nan")), 4),
                     "flow_pck": round(100 * dense.get(f"pck@{alpha * threshold:g}", float("nan")), 3),
                     "coverage": round(dense.get("coverage", float("nan")), 4)})
    return rows
