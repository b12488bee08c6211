"""Image resizing in pixel coordinates (conventions in ``pipeline_lib/__init__.py``): the size an image is
resized to, and keypoints carried between two resolutions of one image. Grids, cell centres and
normalised coordinates are :mod:`pipeline_lib.kernels.grids`."""

from __future__ import annotations

import numpy as np


def resized_shape(h: int, w: int, longer_side: int) -> tuple[int, int]:
    """(H, W) after scaling so that the longer side is ``longer_side`` pixels (aspect kept)."""
    s = longer_side / max(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def scale_points(kps: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Map (K, 2) xy pixel coordinates between two resolutions of the same image (pixel centres kept)."""
    sx, sy = to_hw[1] / from_hw[1], to_hw[0] / from_hw[0]
    return (kps + 0.5) * np.array([sx, sy]) - 0.5
