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

Matching loss (ours, ``siamese.match_loss_weight``; fusion=correlation): a cross-entropy over each
source cell's row of the correlation the network matched (the softmax with temperature beta of the kernel
soft argmax, Lee et al. Eq. 2), whose target is the cell the flow target points to. It trains the match
adapters (``backbones.ResidualAdapter``) directly. Measured on PF-WILLOW (README), the Eq. 10 loss on noisy pseudo
flow moves the decoder's residual away from the matched flow, while this loss improves the matching.

Deviations, documented: only pixels of the confidence mask count (Gaur et al. train on every
pixel; methods.md Sec. 1 asks for the mask), and the sum is divided by the number of confident
pixels in the batch (the paper's plain sum would tie the loss scale, and so the learning rate, to
the image size and to the mask coverage).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..kernels.grids import cell_centres

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


def match_targets(flow: torch.Tensor, mask: torch.Tensor, grid_hw: tuple[int, int],
                  target_grid_hw: tuple[int, int] | None = None, covered_hw: tuple[int, int] | None = None,
                  target_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The target cell of every source cell under a dense flow.

    flow (B, H, W, 2) px and mask (B, H, W) on the source image (H x W); the source grid covers ``covered_hw``
    pixels (default H x W; larger when the network padded its input to a multiple of its stride). The target
    image is ``target_hw`` (default: the source's size, its grid covering ``covered_hw`` too; given, its grid
    covers exactly that image, as the grids of stored features do). The flow is read at the pixel nearest each
    source cell centre (``kernels.grids.cell_centres``), and the point it reaches is assigned to the target cell
    containing it. Returns (index (B, h*w) long, row-major over the target grid; valid (B, h*w) bool: a
    confident flow from inside the image to inside the image).
    """
    b, big_h, big_w, _ = flow.shape
    h, w = grid_hw
    ht, wt = target_grid_hw or grid_hw
    cov_h, cov_w = covered_hw or (big_h, big_w)
    img_h, img_w = target_hw or (big_h, big_w)  # where a reached point is inside the target image
    tcov_h, tcov_w = target_hw or (cov_h, cov_w)  # the pixels the target grid covers
    centres = cell_centres(h, w, (cov_h, cov_w), device=flow.device, dtype=flow.dtype)  # (h*w, 2) xy px
    px = torch.floor(centres + 0.5).long()
    inside = (px[:, 0] < big_w) & (px[:, 1] < big_h)  # cells of the padding have no flow
    xi, yi = px[:, 0].clamp(0, big_w - 1), px[:, 1].clamp(0, big_h - 1)
    reached = centres + flow[:, yi, xi]  # (B, h*w, 2) target pixel centres
    ex, ey = reached[..., 0] + 0.5, reached[..., 1] + 0.5  # pixel-edge coordinates
    in_image = (ex >= 0) & (ex < img_w) & (ey >= 0) & (ey < img_h)
    cx = torch.floor(ex * wt / tcov_w).long().clamp(0, wt - 1)
    cy = torch.floor(ey * ht / tcov_h).long().clamp(0, ht - 1)
    valid = mask.bool()[:, yi, xi] & inside & in_image
    return cy * wt + cx, valid


def matching_loss(corr: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor, beta: float,
                  covered_hw: tuple[int, int] | None = None, target_hw: tuple[int, int] | None = None
                  ) -> tuple[torch.Tensor, float]:
    """Cross-entropy of each source cell's correlation row (softmax of beta x corr, Lee et al. Eq. 2) against
    its target cell under ``flow`` (:func:`match_targets`), averaged over the valid cells (0 when none).

    corr (B, h, w, ht, wt) cosine correlation of grids covering ``covered_hw`` px (default the flow's H x W);
    flow (B, H, W, 2), mask (B, H, W); ``target_hw``: a target image of another size (:func:`match_targets`).
    Returns (loss, share of the source cells that are supervised).
    """
    if corr.ndim != 5 or corr.shape[0] != flow.shape[0]:
        raise ValueError(f"matching_loss: expected corr (B, h, w, ht, wt) and flow (B, H, W, 2) of one batch, got "
                         f"{tuple(corr.shape)} and {tuple(flow.shape)}")
    b, h, w, ht, wt = corr.shape
    target, valid = match_targets(flow.to(corr), mask.to(corr.device), (h, w), (ht, wt), covered_hw, target_hw)
    ce = F.cross_entropy(beta * corr.reshape(b * h * w, ht * wt), target.reshape(-1), reduction="none")
    weight = valid.reshape(-1).to(ce)
    return (ce * weight).sum() / weight.sum().clamp_min(1), float(weight.mean())


def batch_loss(model: torch.nn.Module, batch, t_sq_px2: float | None = None, truncation: str = "long_side",
               truncation_fraction: float = 1.0, flow_weight: float = 1.0, match_weight: float = 0.0
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """``loss_fn(model, batch)`` for ``training.fit``: batch has ``src``, ``trg`` (B, 3, H, W), ``flow``
    (B, H, W, 2), ``mask`` (B, H, W) on the CPU; moved to the model's device here.

    loss = flow_weight x Eq. 10 + match_weight x :func:`matching_loss` (the latter needs a model with
    ``forward_with_correlation``, i.e. fusion=correlation). T^2 = ``t_sq_px2`` when given, else
    ``truncation_px2`` of the input size under ``truncation`` / ``truncation_fraction``. Returns (loss,
    {under_T, epe_px} (``flow_metrics``, always), and with match_weight > 0 {match_ce, match_share}).
    """
    if flow_weight < 0 or match_weight < 0 or not (flow_weight or match_weight):
        raise ValueError(f"loss weights must be >= 0 and not both 0, got flow {flow_weight}, match {match_weight}")
    device = next(model.parameters()).device
    src, trg = batch.src.to(device), batch.trg.to(device)
    with_corr = getattr(model, "forward_with_correlation", None)
    pred, corr = with_corr(src, trg) if match_weight and with_corr else (model(src, trg), None)
    if match_weight and corr is None:
        raise ValueError("the matching loss needs the network's correlation: set siamese.fusion: correlation")
    t_sq = truncation_px2(tuple(pred.shape[1:3]), truncation, truncation_fraction) if t_sq_px2 is None \
        else float(t_sq_px2)
    flow, mask = batch.flow.to(device), batch.mask.to(device)
    metrics = flow_metrics(pred, flow, mask, t_sq)
    loss = flow_weight * truncated_euclidean_loss(pred, flow, mask, t_sq) if flow_weight else pred.new_zeros(())
    if match_weight:
        ce, share = matching_loss(corr, flow, mask, model.beta, model.padded_hw(*pred.shape[1:3]))
        loss = loss + match_weight * ce
        metrics.update(match_ce=float(ce.detach()), match_share=share)
    return loss, metrics


__all__ = ["TRUNCATIONS", "truncated_euclidean_loss", "truncation_px2", "flow_metrics", "match_targets",
           "matching_loss", "batch_loss"]
