"""Sampling maps at points: bilinear or nearest (``grid_sample``, ``align_corners=False``), and
bilinear over confident cells only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .grids import pixels_to_normalised


def sample_points(maps: torch.Tensor, pts: torch.Tensor, mode: str = "bilinear",
                  padding_mode: str = "zeros") -> torch.Tensor:
    """(C, h, w) maps read at (K, 2) normalised xy points -> (K, C)."""
    return F.grid_sample(maps[None], pts.view(1, 1, -1, 2), mode=mode, padding_mode=padding_mode,
                         align_corners=False)[0, :, 0].T


def sample_at_pixels(maps: torch.Tensor, kps: torch.Tensor, image_hw: tuple[int, int], mode: str = "bilinear",
                     padding_mode: str = "zeros") -> torch.Tensor:
    """(C, h, w) maps covering an (H, W) image read at (K, 2) xy pixels of that image -> (K, C)."""
    if maps.ndim != 3 or kps.ndim != 2 or kps.shape[1] != 2:
        raise ValueError(f"expected maps (C, h, w) and kps (K, 2), got {tuple(maps.shape)} and {tuple(kps.shape)}")
    return sample_points(maps, pixels_to_normalised(kps.to(maps), image_hw), mode, padding_mode)


def masked_bilinear(values: torch.Tensor, mask: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a (h, w, C) field at normalised ``grid`` points, averaging confident cells only.

    values: (h, w, C); mask: (h, w) bool; grid: (H, W, 2) normalised xy.
    Returns (H, W, C) values (bilinear over the confident neighbours: normalised convolution, so an
    unreliable cell never leaks into a reliable one) and (H, W) bool: nearest cell is confident
    and inside the grid.
    """
    m = mask.to(values.dtype)[None, None]
    g = grid.to(values.dtype)[None]
    num = F.grid_sample((values * m[0, 0, ..., None]).permute(2, 0, 1)[None], g, mode="bilinear",
                        padding_mode="border", align_corners=False)[0].permute(1, 2, 0)
    den = F.grid_sample(m, g, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
    near = F.grid_sample(m, g, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0] > 0.5
    out = num / den.clamp_min(torch.finfo(values.dtype).eps)[..., None]
    ok = near & (den > 0)
    return torch.where(ok[..., None], out, torch.zeros_like(out)), ok
