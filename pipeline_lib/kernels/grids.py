"""Grids and coordinate conversions (conventions in ``pipeline_lib/__init__.py``).

Pixel coordinates: xy, pixel centres at integers. Normalised coordinates: those of
``F.grid_sample(..., align_corners=False)``, -1 and +1 the outer image edges, so the same number is the
same image point at any resolution. Cell coordinates: xy in cells of an (h, w) feature grid, cell
centres at integers.
"""

from __future__ import annotations

import torch


def pixel_grid(hw: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """(H, W, 2) xy pixel-centre coordinates of an (H, W) image."""
    dtype = dtype or torch.get_default_dtype()
    ys = torch.arange(hw[0], device=device, dtype=dtype)
    xs = torch.arange(hw[1], device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def normalised_cell_grid(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(h, w, 2) normalised xy of the cell (or pixel) centres of an (h, w) grid."""
    dtype = dtype or torch.get_default_dtype()
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def pixels_to_normalised(pts: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(..., 2) xy pixels of an (H, W) image -> normalised coordinates."""
    h, w = hw
    return (pts + 0.5) / pts.new_tensor([w, h]) * 2 - 1


def normalised_to_pixels(pts: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixels_to_normalised`."""
    h, w = hw
    return (pts + 1) / 2 * pts.new_tensor([w, h]) - 0.5


def cell_to_normalised(xy_cells: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(..., 2) xy in cell units of an (h, w) grid -> normalised coordinates."""
    h, w = hw
    scale = xy_cells.new_tensor([2.0 / w, 2.0 / h])
    return (xy_cells + 0.5) * scale - 1.0


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
