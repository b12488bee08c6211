"""Coordinate helpers shared by every method (conventions in ``pipeline_lib/__init__.py``)."""

from __future__ import annotations

import numpy as np
import torch


def resized_shape(h: int, w: int, longer_side: int) -> tuple[int, int]:
    """(H, W) after scaling so that the longer side is ``longer_side`` pixels (aspect kept)."""
    s = longer_side / max(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def scale_points(kps: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Map (K, 2) xy pixel coordinates between two resolutions of the same image (pixel centres kept)."""
    sx, sy = to_hw[1] / from_hw[1], to_hw[0] / from_hw[0]
    return (kps + 0.5) * np.array([sx, sy]) - 0.5


def cell_centres(h: int, w: int, image_hw: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """(h*w, 2) xy image coordinates of the centres of an (h, w) feature grid, row-major."""
    if min(h, w) < 0 or min(image_hw) <= 0:
        raise ValueError(f"cell_centres: need h, w >= 0 and a positive image size; got h={h}, w={w}, "
                         f"image_hw={tuple(image_hw)}")
    dtype = dtype or torch.get_default_dtype()
    sy, sx = (image_hw[0] / h if h else 0.0), (image_hw[1] / w if w else 0.0)
    # (j + 0.5) cells in pixel-edge coordinates, minus half a pixel for pixel-centre coordinates
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * sy - 0.5
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * sx - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def points_to_grid(kps: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """(K, 2) xy image coordinates -> (K, 2) coordinates in [-1, 1] for ``grid_sample(align_corners=False)``."""
    h, w = image_hw
    return torch.stack([(kps[:, 0] + 0.5) / w * 2 - 1, (kps[:, 1] + 0.5) / h * 2 - 1], dim=1)
