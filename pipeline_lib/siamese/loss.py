"""Truncated Euclidean flow loss (Gaur et al. Eq. 10).

    L_flow(F~, F-) = sum_p min(||F~(p) - F-(p)||^2, T^2)

"... and the value of T^2 is kept equal to the long edge of the image" (Gaur et al. Sec. 5).

The sentence equates a squared distance with a length, so the truncation radius T is OUR READING
(config ``siamese.truncation``):

- ``long_side`` (default, ours): T = ``truncation_fraction`` x the longer input side in px (fraction 1:
  T^2 = side^2). A truncation radius on the scale of the image, so only wild pseudo ground-truth vectors
  are cut off (the purpose of truncation in ref. [33], Zhou et al. 2016).
- ``literal``: T^2 = the longer side in px^2, i.e. T = sqrt(side) px (11.3 px at 128 px). Measured on
  the demo's exact flow with the paper's augmentation, only ~25% of the supervised pixels start with an
  error under that T: the other ~75% give no gradient, and what remains pulls the network towards zero
  flow (test PCK@0.1 at or below predicting zero flow).

Pixels whose squared error reaches T^2 give no gradient; :func:`flow_metrics` reports their complement
(``under_T``: the share of supervised pixels that still train the network) and the end-point error
(``epe_px``), which ``batch_loss`` returns to ``training.fit`` for ``train_log.csv``.

Deviations, documented: only pixels of the confidence mask count (Gaur et al. train on every
pixel; methods.md Sec. 1 asks for the mask), and the sum is divided by the number of confident
pixels in the batch (the paper's plain sum would tie the loss scale, and so the learning rate, to
the image size and to the mask coverage).
"""

from __future__ import annotations

import math

import torch

TRUNCATIONS = ("long_side", "literal")  # our reading of Gaur et al. Eq. 10's T^2 (module docstring)


def truncation_px2(hw: tuple[int, int], reading: str = "literal", fraction: float = 1.0) -> float:
    """T^2 in px^2 for an (H, W) input under a reading of Gaur et al. Eq. 10 ("T^2 ... equal to the long
    edge of the image").

    literal: T^2 = max(H, W) (px^2; ``fraction`` unused); long_side: T = fraction * max(H, W) px.
    """
    if reading not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got '{reading}'")
    side = float(max(hw))
    if reading == "literal":
        return side
    if not fraction > 0:
        raise ValueError(f"truncation_fraction must be positive, got {fraction}")
    return (fraction * side) ** 2


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    if (pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 2
            or tuple(mask.shape) != tuple(pred.shape[:3])):
        raise ValueError(f"{name}: expected pred/target (B, H, W, 2) and mask (B, H, W), got "
                         f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}")


def truncated_euclidean_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                             t_sq_px2: float | None = None, reduction: str = "mean") -> torch.Tensor:
    """Masked truncated Euclidean loss between flows.

    pred, target: (B, H, W, 2) flow in pixels; mask: (B, H, W) bool (True = confident target).
    t_sq_px2: truncation T^2 in px^2 (default: ``truncation_px2((H, W))``, the literal reading).
    reduction: ``mean`` (sum / number of confident pixels; 0 when none) or ``sum`` (Eq. 10 as is).
    Returns a scalar; truncated and masked pixels give zero gradient.
    """
    _check(pred, target, mask, "truncated_euclidean_loss")
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


@torch.no_grad()
def flow_metrics(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, t_sq_px2: float) -> dict[str, float]:
    """Diagnostics of one batch over its supervised (mask) pixels: ``under_T`` = share whose squared error
    is below T^2 (those that give gradient), ``epe_px`` = mean end-point error ||pred - target|| in px.
    NaN when no pixel is supervised."""
    _check(pred, target, mask, "flow_metrics")
    m = mask.bool()
    n = int(m.sum())
    if n == 0:
        return {"under_T": math.nan, "epe_px": math.nan}
    sq = ((pred.detach() - target.to(pred)) ** 2).sum(-1)[m]
    return {"under_T": float((sq < float(t_sq_px2)).float().mean()), "epe_px": float(sq.sqrt().mean())}


def batch_loss(model: torch.nn.Module, batch, t_sq_px2: float | None = None, truncation: str = "long_side",
               truncation_fraction: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``loss_fn(model, batch)`` for ``training.fit``: batch has ``src``, ``trg`` (B, 3, H, W), ``flow``
    (B, H, W, 2), ``mask`` (B, H, W) on the CPU; moved to the model's device here.

    T^2 = ``t_sq_px2`` when given, else ``truncation_px2`` of the input size under ``truncation`` /
    ``truncation_fraction`` (defaults: the schema's, T = the longer side). Returns (loss, {under_T, epe_px})
    (``flow_metrics``).
    """
    device = next(model.parameters()).device
    pred = model(batch.src.to(device), batch.trg.to(device))
    t_sq = truncation_px2(tuple(pred.shape[1:3]), truncation, truncation_fraction) if t_sq_px2 is None \
        else float(t_sq_px2)
    flow, mask = batch.flow.to(device), batch.mask.to(device)
    return truncated_euclidean_loss(pred, flow, mask, t_sq), flow_metrics(pred, flow, mask, t_sq)


__all__ = ["TRUNCATIONS", "truncated_euclidean_loss", "truncation_px2", "flow_metrics", "batch_loss"]
