"""Keypoint transfer with a hyperpixel flow (Min et al. 2019, Sec. 3.3)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["transfer_keypoints", "transfer_rows"]


def transfer_keypoints(
    src_kps: Tensor, src_pos: Tensor, trg_pos_of_match: Tensor, radius_px: float
) -> Tensor:
    """Move source keypoints to the target image along the hyperpixel flow.

    For each keypoint x, the neighbours N(x) are the source hyperpixels whose base-map receptive
    field covers x, approximated as the square of half-side ``radius_px`` centred on the cell
    (``max(|dx|, |dy|) <= radius_px``, inclusive, like the reference ``geometry.neighbours`` box
    test). The prediction is the mean over q in N(x) of ``trg_pos_of_match[q] + (x - src_pos[q])``.

    Fallback (not in the paper; the reference divides by zero and returns NaN): a keypoint
    covered by no hyperpixel uses its nearest source hyperpixel (Euclidean distance to the
    cell centre) as its only neighbour.

    Args:
        src_kps: ``(K, 2)`` xy source keypoints.
        src_pos: ``(N, 2)`` xy source hyperpixel centres.
        trg_pos_of_match: ``(N, 2)`` xy centre of the target hyperpixel matched to each source one.
        radius_px: receptive-field half-side in pixels, >= 0.

    Returns:
        ``(K, 2)`` predicted target keypoints, dtype of ``src_kps``. Padded/invalid keypoints
        are transferred like any other; mask them with the caller's boolean mask.
    """
    if src_kps.dim() != 2 or src_kps.shape[1] != 2:
        raise ValueError(f"transfer_keypoints: src_kps must be (K, 2) xy, got {tuple(src_kps.shape)}")
    if src_pos.dim() != 2 or src_pos.shape[1] != 2 or trg_pos_of_match.shape != src_pos.shape:
        raise ValueError(
            "transfer_keypoints: src_pos and trg_pos_of_match must both be (N, 2) xy, got "
            f"{tuple(src_pos.shape)} and {tuple(trg_pos_of_match.shape)}"
        )
    if radius_px < 0:
        raise ValueError(f"transfer_keypoints: radius_px must be >= 0, got {radius_px}")
    if src_kps.shape[0] == 0:
        return src_kps.new_zeros((0, 2))
    if src_pos.shape[0] == 0:
        raise ValueError("transfer_keypoints: no hyperpixels (N = 0) to transfer keypoints with")

    # compute in at least float32 (integer keypoints allowed); return in the keypoints' float dtype
    dtype = torch.promote_types(torch.promote_types(src_kps.dtype, src_pos.dtype), torch.float32)
    kps = src_kps.to(dtype)
    src = src_pos.to(kps)
    trg = trg_pos_of_match.to(kps)
    disp = kps[:, None, :] - src[None, :, :]  # (K, N, 2): d(x_q) = x - centre_q
    covered = disp.abs().amax(dim=-1) <= radius_px  # (K, N)

    nearest = disp.norm(dim=-1).argmin(dim=-1)  # (K,)
    fallback = ~covered.any(dim=-1)
    covered[fallback, nearest[fallback]] = True

    weights = covered.to(kps.dtype)
    votes = trg[None, :, :] + disp  # (K, N, 2): T(x_q) + d(x_q)
    pred = (weights[..., None] * votes).sum(dim=1) / weights.sum(dim=1, keepdim=True)
    return pred.to(src_kps.dtype) if src_kps.is_floating_point() else pred


def transfer_rows(src_kps: Tensor, src_pos: Tensor, radius_px: float) -> Tensor:
    """Sorted indices of the source hyperpixels :func:`transfer_keypoints` reads for ``src_kps``: those within
    ``radius_px`` of a keypoint and each keypoint's nearest one. Transferring with ``src_pos[rows]`` and the
    matches of those rows gives the same keypoints as with all of them."""
    if src_kps.shape[0] == 0 or src_pos.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=src_pos.device)
    disp = src_kps.to(src_pos)[:, None, :] - src_pos[None, :, :]
    used = (disp.abs().amax(dim=-1) <= radius_px).any(dim=0)
    used[disp.norm(dim=-1).argmin(dim=-1)] = True
    return torch.nonzero(used, as_tuple=True)[0]
