"""Dense flow resampling: a grid flow up to its image, a flow between resolutions of its two images.

Flow: (..., 2) xy displacement in pixels, source point p corresponds to target point p + F(p); validity
is a boolean mask. Device and dtype follow the inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from .grids import pixel_grid, pixels_to_normalised
from .sampling import masked_bilinear


def as_tensor(x) -> torch.Tensor:
    """A tensor as is, anything else through numpy."""
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def upsample_flow(flow_grid, mask, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid flow (h, w, 2) and mask (h, w) -> image flow (H, W, 2) and mask (H, W).

    Flow: bilinear between cell centres (``align_corners=False``, matching ``grids.cell_centres``),
    over confident cells only (``sampling.masked_bilinear``); displacement values are kept (they are
    already in image pixels). Mask: nearest cell.
    """
    flow_grid, mask = as_tensor(flow_grid), as_tensor(mask).bool()
    if flow_grid.ndim != 3 or flow_grid.shape[2] != 2 or tuple(mask.shape) != tuple(flow_grid.shape[:2]):
        raise ValueError(f"upsample_flow: expected flow (h, w, 2) and mask (h, w), got {tuple(flow_grid.shape)} "
                         f"and {tuple(mask.shape)}")
    dtype = flow_grid.dtype if flow_grid.is_floating_point() else torch.float32
    flow_grid = flow_grid.to(dtype)
    H, W = out_hw
    if H * W == 0 or flow_grid.shape[0] * flow_grid.shape[1] == 0:
        return (torch.zeros(H, W, 2, dtype=dtype, device=flow_grid.device),
                torch.zeros(H, W, dtype=torch.bool, device=flow_grid.device))
    grid = pixels_to_normalised(pixel_grid(out_hw, flow_grid.device, dtype), out_hw)
    return masked_bilinear(flow_grid, mask.to(flow_grid.device), grid)


def rescale_flow(flow, mask, from_src_hw: tuple[int, int], from_trg_hw: tuple[int, int],
                 to_src_hw: tuple[int, int], to_trg_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-express a dense flow between resolutions of the same two images.

    flow: (Hs, Ws, 2) on the ``from_src_hw`` source grid mapping into ``from_trg_hw`` target pixels
    -> (H's, W's, 2) on ``to_src_hw`` mapping into ``to_trg_hw`` pixels, and the mask. Target
    positions are rescaled exactly; the displacement is bilinear over valid pixels.
    """
    flow, mask = as_tensor(flow), as_tensor(mask).bool()
    if tuple(flow.shape) != (*from_src_hw, 2) or tuple(mask.shape) != tuple(from_src_hw):
        raise ValueError(f"rescale_flow: flow {tuple(flow.shape)} / mask {tuple(mask.shape)} do not match "
                         f"from_src_hw={tuple(from_src_hw)}")
    dtype = flow.dtype if flow.is_floating_point() else torch.float32
    flow = flow.to(dtype)
    dev = flow.device

    def wh(hw):
        return torch.tensor([hw[1], hw[0]], dtype=dtype, device=dev)

    s_trg = wh(to_trg_hw) / wh(from_trg_hw)
    q = pixel_grid(to_src_hw, dev, dtype)
    p = (q + 0.5) / wh(to_src_hw) * wh(from_src_hw) - 0.5  # q in the old source frame
    # target point (p + F(p) + .5) * s_trg - .5, with F bilinear at p over valid pixels; the
    # displacement is interpolated so a locally constant flow stays exact next to invalid pixels.
    disp, ok = masked_bilinear(flow, mask, pixels_to_normalised(p, from_src_hw))
    pos = (p + disp + 0.5) * s_trg - 0.5
    return torch.where(ok[..., None], pos - q, torch.zeros_like(pos)), ok
