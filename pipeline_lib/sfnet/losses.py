"""SFNet losses (Lee et al. Sec. 3.2): mask consistency, flow consistency and smoothness.

All terms work on the feature grid in the normalised coordinates of :mod:`pipeline_lib.sfnet.model`
(flows (B, h, w, 2) xy, masks (B, 1, h, w) in [0, 1]). Warping ``W(X; F)(p) = X(p + F(p))`` is
bilinear sampling at the matched positions ``grid = p + F(p)`` (a spatial transformer, Lee et al.
Eq. 6), with border padding (kernel soft argmax positions never leave the grid anyway).

L = lambda_mask L_mask + lambda_flow L_flow + lambda_smooth L_smooth   (Lee et al. Eq. 4)

- L_mask (Eq. 7): per image, the mean over *all* pixels of (M - W(M_other; F))^2;
- L_flow (Eq. 8): per image, sum_p ||(F(p) + W(F_other; F)(p)) * M(p)||^2 / sum_p M(p);
- L_smooth (Eq. 10): per image, sum_p ||grad F(p) * M(p)||_1 / sum_p M(p), grad = central differences
  with replicated borders, so a constant flow costs nothing (zero padding, which we believe the
  authors' release uses, would charge a constant flow at the image border; Eq. 10 has no such term).

Each term sums its source and target halves and averages over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import SFNetOutput

LAMBDA_MASK = 3.0  # Lee et al. Sec. 4.1
LAMBDA_FLOW = 16.0  # Lee et al. Sec. 4.1
LAMBDA_SMOOTH = 0.5  # Lee et al. Sec. 4.1
MIN_FOREGROUND = 1.0  # |N_F| is at least one cell, so an empty mask gives 0, not NaN


@dataclass(frozen=True)
class SFNetLossConfig:
    lambda_mask: float = LAMBDA_MASK
    lambda_flow: float = LAMBDA_FLOW
    lambda_smooth: float = LAMBDA_SMOOTH

    def __post_init__(self):
        for k in ("lambda_mask", "lambda_flow", "lambda_smooth"):
            if getattr(self, k) < 0:
                raise ValueError(f"sfnet loss weight {k} must be >= 0, got {getattr(self, k)}")


def warp(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """W(values; F): sample (B, C, h_o, w_o) maps at (B, h, w, 2) normalised positions -> (B, C, h, w)."""
    if values.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2 or values.shape[0] != grid.shape[0]:
        raise ValueError(f"warp: need values (B, C, h, w) and grid (B, h, w, 2), got {tuple(values.shape)} "
                         f"and {tuple(grid.shape)}")
    return F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=False)


def downsample_mask(mask: torch.Tensor, hw: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 1, H, W) binary/soft mask -> (B, 1, h, w) ``dtype`` fraction of foreground in each cell."""
    mask = mask.to(dtype)
    return mask if tuple(mask.shape[-2:]) == tuple(hw) else F.interpolate(mask, size=hw, mode="area")


def _check_pair(grid_s2t, grid_t2s, src_mask, trg_mask):
    if src_mask.shape[-2:] != grid_s2t.shape[1:3] or trg_mask.shape[-2:] != grid_t2s.shape[1:3]:
        raise ValueError(f"masks {tuple(src_mask.shape)}, {tuple(trg_mask.shape)} do not match the grids "
                         f"{tuple(grid_s2t.shape)}, {tuple(grid_t2s.shape)}; use downsample_mask first")


def mask_consistency(grid_s2t: torch.Tensor, grid_t2s: torch.Tensor, src_mask: torch.Tensor,
                     trg_mask: torch.Tensor) -> torch.Tensor:
    """L_mask (Lee et al. Eq. 7) -> (B,). grid_s2t (B, h_s, w_s, 2), grid_t2s (B, h_t, w_t, 2),
    src_mask (B, 1, h_s, w_s), trg_mask (B, 1, h_t, w_t)."""
    _check_pair(grid_s2t, grid_t2s, src_mask, trg_mask)
    est_src = warp(trg_mask, grid_s2t)  # M^s_hat = W(M^t; F^s)
    est_trg = warp(src_mask, grid_t2s)
    return ((src_mask - est_src) ** 2).mean(dim=(1, 2, 3)) + ((trg_mask - est_trg) ** 2).mean(dim=(1, 2, 3))


def _fg(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=(1, 2, 3)).clamp_min(MIN_FOREGROUND)


def flow_consistency(flow_s2t: torch.Tensor, flow_t2s: torch.Tensor, grid_s2t: torch.Tensor,
                     grid_t2s: torch.Tensor, src_mask: torch.Tensor, trg_mask: torch.Tensor) -> torch.Tensor:
    """L_flow (Lee et al. Eqs. 8-9) -> (B,). Flows and grids (B, h, w, 2), masks (B, 1, h, w)."""
    _check_pair(grid_s2t, grid_t2s, src_mask, trg_mask)
    back_s = warp(flow_t2s.permute(0, 3, 1, 2), grid_s2t)  # F^s_hat = W(F^t; F^s), (B, 2, h_s, w_s)
    back_t = warp(flow_s2t.permute(0, 3, 1, 2), grid_t2s)
    err_s = ((flow_s2t.permute(0, 3, 1, 2) + back_s) * src_mask).pow(2).sum(dim=(1, 2, 3))
    err_t = ((flow_t2s.permute(0, 3, 1, 2) + back_t) * trg_mask).pow(2).sum(dim=(1, 2, 3))
    return err_s / _fg(src_mask) + err_t / _fg(trg_mask)


def flow_gradients(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of a (B, h, w, 2) flow with replicated borders -> (d/dx, d/dy), each (B, 2, h, w)."""
    f = flow.permute(0, 3, 1, 2)
    px = F.pad(f, (1, 1, 0, 0), mode="replicate")
    py = F.pad(f, (0, 0, 1, 1), mode="replicate")
    return (px[..., 2:] - px[..., :-2]) / 2.0, (py[..., 2:, :] - py[..., :-2, :]) / 2.0


def smoothness(flow_s2t: torch.Tensor, flow_t2s: torch.Tensor, src_mask: torch.Tensor,
               trg_mask: torch.Tensor) -> torch.Tensor:
    """L_smooth (Lee et al. Eq. 10) -> (B,). Flows (B, h, w, 2), masks (B, 1, h, w)."""
    out = 0.0
    for flow, mask in ((flow_s2t, src_mask), (flow_t2s, trg_mask)):
        if mask.shape[-2:] != flow.shape[1:3]:
            raise ValueError(f"smoothness: mask {tuple(mask.shape)} does not match flow {tuple(flow.shape)}")
        dx, dy = flow_gradients(flow)
        out = out + ((dx.abs() + dy.abs()) * mask).sum(dim=(1, 2, 3)) / _fg(mask)
    return out


def sfnet_loss(out: SFNetOutput, src_mask: torch.Tensor, trg_mask: torch.Tensor,
               cfg: SFNetLossConfig = SFNetLossConfig()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Lee et al. Eq. 4 for a batch. Masks are (B, 1, H, W) at any resolution (area-downsampled to
    the feature grids). Returns (scalar loss, {"mask", "flow", "smooth": batch means, detached})."""
    sm = downsample_mask(src_mask, tuple(out.grid_s2t.shape[1:3]), out.grid_s2t.dtype)
    tm = downsample_mask(trg_mask, tuple(out.grid_t2s.shape[1:3]), out.grid_t2s.dtype)
    parts = {
        "mask": mask_consistency(out.grid_s2t, out.grid_t2s, sm, tm).mean(),
        "flow": flow_consistency(out.flow_s2t, out.flow_t2s, out.grid_s2t, out.grid_t2s, sm, tm).mean(),
        "smooth": smoothness(out.flow_s2t, out.flow_t2s, sm, tm).mean(),
    }
    total = cfg.lambda_mask * parts["mask"] + cfg.lambda_flow * parts["flow"] + cfg.lambda_smooth * parts["smooth"]
    return total, {k: v.detach() for k, v in parts.items()}
