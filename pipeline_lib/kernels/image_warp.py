"""An image seen through matches: the target's pixels on a regular grid matched back into the source, the
matched positions interpolated to every target pixel, and the source read there (the source warped onto the
target). The same picture for every method: a flow method's dense flow, a transform's map, a matcher's matches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import sample_at_pixels


def warp_axes(hw: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced pixel rows and columns at most ``step`` px apart, first and last pixel included (the
    spacing ``align_corners=True`` interpolation assumes)."""
    if step < 1:
        raise ValueError(f"warp step must be >= 1 px, got {step}")
    return tuple(np.linspace(0, n - 1, int(np.ceil((n - 1) / step)) + 1) for n in hw)


def warp_grid(hw: tuple[int, int], step: int) -> np.ndarray:
    """(n, 2) xy of the pixels at most ``step`` px apart over an (H, W) image, row by row."""
    ys, xs = warp_axes(hw, step)
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


def warp_source(src_img: np.ndarray, back: np.ndarray, trg_hw: tuple[int, int], step: int) -> np.ndarray:
    """The source image seen through the target->source matches ``back`` of :func:`warp_grid` (``trg_hw``,
    ``step``): the matched source positions interpolated bilinearly to every target pixel, the source read there
    (black where a match is missing or outside the source). (H_t, W_t, 3) uint8."""
    h, w = trg_hw
    ys, xs = warp_axes(trg_hw, step)
    field = torch.from_numpy(back.reshape(len(ys), len(xs), 2).transpose(2, 0, 1).copy())[None]
    ok = torch.isfinite(field).all(1, keepdim=True)
    field = torch.nan_to_num(field, nan=-1e6)
    dense = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=True)[0].permute(1, 2, 0)
    valid = F.interpolate(ok.double(), size=(h, w), mode="nearest")[0, 0] > 0
    src = torch.from_numpy(np.ascontiguousarray(src_img, dtype=np.float64)).permute(2, 0, 1)
    out = sample_at_pixels(src, dense.reshape(-1, 2), src_img.shape[:2]).reshape(h, w, -1)
    out[~valid] = 0
    return out.clamp(0, 255).round().to(torch.uint8).numpy()


__all__ = ["warp_axes", "warp_grid", "warp_source"]
