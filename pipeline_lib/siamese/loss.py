"""Truncated Euclidean flow loss (Gaur et al. Eq. 10).

    L_flow(F~, F-) = sum_p min(||F~(p) - F-(p)||^2, T^2)

"... and the value of T^2 is kept equal to the long edge of the image" (Gaur et al. Sec. 5).

Our reading, taken literally: T^2 (a squared distance, px^2) equals the number of pixels on the
longer image side, so the per-pixel squared error is capped at max(H, W) px^2, i.e. errors beyond
T = sqrt(max(H, W)) pixels (16 px on a 256 px input) stop producing gradient. That makes the loss
robust to wrong pseudo ground-truth vectors, the purpose of truncation in [33] (Zhou et al. 2016).
The other reading, T = long edge (T^2 = side^2), would cap only errors larger than the whole image
and so never truncate; pass ``t_sq_px2=side**2`` to get it.

Deviations, documented: only pixels of the confidence mask count (Gaur et al. train on every
pixel; methods.md Sec. 1 asks for the mask), and the sum is divided by the number of confident
pixels in the batch (the paper's plain sum would tie the loss scale, and so the learning rate, to
the image size and to the mask coverage).
"""

from __future__ import annotations

import torch


def truncation_px2(hw: tuple[int, int]) -> float:
    """T^2 in px^2 for an (H, W) input: the longer side (Gaur et al. Sec. 5, literal reading)."""
    return float(max(hw))


def truncated_euclidean_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                             t_sq_px2: float | None = None, reduction: str = "mean") -> torch.Tensor:
    """Masked truncated Euclidean loss between flows.

    pred, target: (B, H, W, 2) flow in pixels; mask: (B, H, W) bool (True = confident target).
    t_sq_px2: truncation T^2 in px^2 (default: ``truncation_px2((H, W))``).
    reduction: ``mean`` (sum / number of confident pixels; 0 when none) or ``sum`` (Eq. 10 as is).
    Returns a scalar; truncated and masked pixels give zero gradient.
    """
    if (pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 2
            or tuple(mask.shape) != tuple(pred.shape[:3])):
        raise ValueError(f"truncated_euclidean_loss: expected pred/target (B, H, W, 2) and mask (B, H, W), got "
                         f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got '{reduction}'")
    t_sq = truncation_px2(tuple(pred.shape[1:3])) if t_sq_px2 is None else float(t_sq_px2)
    sq = ((pred - target.to(pred)) ** 2).sum(-1)
    # clamp(max=) passes no gradient where it clips: min(., T^2) exactly.
    per_px = torch.where(mask.bool(), sq.clamp(max=t_sq), torch.zeros_like(sq))
    total = per_px.sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp_min(1).to(total)


def batch_loss(model: torch.nn.Module, batch, t_sq_px2: float | None = None) -> torch.Tensor:
    """``loss_fn(model, batch)`` for ``training.fit``: batch has ``src``, ``trg`` (B, 3, H, W), ``flow``
    (B, H, W, 2), ``mask`` (B, H, W) on the CPU; moved to the model's device here."""
    device = next(model.parameters()).device
    pred = model(batch.src.to(device), batch.trg.to(device))
    return truncated_euclidean_loss(pred, batch.flow.to(device), batch.mask.to(device), t_sq_px2)


__all__ = ["truncated_euclidean_loss", "truncation_px2", "batch_loss"]
