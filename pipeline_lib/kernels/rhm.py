"""Regularized Hough matching (Min et al. 2019, Sec. 3.2, Eq. 3-4) and plain NN matching.

Every candidate match m = (source hyperpixel a, target hyperpixel b) votes with its appearance
confidence p(m_a) (Eq. 4) into the bin of its 2-D offset ``trg_pos[b] - src_pos[a]``; the vote
map is smoothed over neighbouring bins and each match is scored ``p(m_a) * vote(bin(m))``.

The bin id of every candidate match depends only on the hyperpixel positions and the image
sizes, so it is computed by :func:`build_hough_space` (as dhpf's ``HoughMatching`` does in its
constructor) once per (positions, image sizes) and reused for every pair with that geometry
(all pairs when images are resized to a fixed size; per pair when, as in HPF, only the longer
side is fixed). The per-pair work (:func:`rhm_scores`) is one matmul, one ``scatter_add``, one small
convolution and one gather. All functions accept an optional leading batch dim on the features
(the positions, hence the Hough space, are shared across the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "COS_EXPONENT",
    "N_BINS_PER_SIDE",
    "HOUGH_KERNEL_SIZE",
    "HoughSpace",
    "appearance_similarity",
    "assign",
    "build_hough_space",
    "hough_kernel",
    "hough_regularize",
    "hough_votes",
    "nn_match",
    "offset_bin_ids",
    "rhm",
    "rhm_scores",
]

# Min et al. Eq. 4 and Sec. 5.1: p(m_a) = ReLU(cos)^d with d = 3 (best on PF-PASCAL val, Table 5).
COS_EXPONENT = 3
# Reference code (juhongm999/hpf model/rhm.py, ncells=8192): 8192 square bins over the
# (W_src + W_trg) x (H_src + H_trg) offset range, i.e. sqrt(8192) ~ 90.5 bins per side for a
# square image pair. We split each axis into the same number of bins (see offset_bin_ids), so
# for non-square images our bins are rectangular where the reference's are square.
N_BINS_PER_SIDE = 91
# Reference code (hpf model/hpflow.py: geometry.gaussian2d(7), rhm.py: padding=3): 7x7 Gaussian
# over neighbouring bins; the padding is derived from this size, never typed separately.
HOUGH_KERNEL_SIZE = 7

KernelKind = Literal["gaussian", "box"]


@dataclass(frozen=True)
class HoughSpace:
    """Pair-independent part of RHM: bin id of every candidate match and the smoothing kernel.

    Attributes:
        bin_ids: ``(N, M)`` int64 flat bin index (``iy * n_bins_x + ix``) of match (a, b).
        n_bins: ``(n_bins_y, n_bins_x)``.
        kernel: ``(k, k)`` smoothing kernel over neighbouring bins, k odd, sums to 1.
    """

    bin_ids: Tensor
    n_bins: tuple[int, int]
    kernel: Tensor

    @property
    def n_src(self) -> int:
        return self.bin_ids.shape[0]

    @property
    def n_trg(self) -> int:
        return self.bin_ids.shape[1]


def appearance_similarity(src: Tensor, trg: Tensor, *, exponent: float = COS_EXPONENT) -> Tensor:
    """p(m_a) = ReLU(cos(f, f'))^d (Min et al. Eq. 4).

    Args:
        src: ``(N, C)`` or ``(B, N, C)``; trg: ``(M, C)`` or ``(B, M, C)``.

    Returns:
        ``(N, M)`` or ``(B, N, M)``. Zero feature vectors get similarity 0.
    """
    _check_feats(src, trg, "appearance_similarity")
    cos = F.normalize(src, dim=-1) @ F.normalize(trg, dim=-1).transpose(-1, -2)
    if _needs_autograd(cos):
        return cos.clamp_min(0).pow(exponent)
    return cos.clamp_min_(0).pow_(exponent)  # in place: no extra (N, M) buffers


def cosine_similarity(src: Tensor, trg: Tensor) -> Tensor:
    """All cosine similarities: ``(…, N, C), (…, M, C) -> (…, N, M)``."""
    _check_feats(src, trg, "cosine_similarity")
    return F.normalize(src, dim=-1) @ F.normalize(trg, dim=-1).transpose(-1, -2)


def nn_match(src: Tensor, trg: Tensor) -> Tensor:
    """Plain cosine nearest neighbour: ``(…, N, C), (…, M, C) -> (…, N)`` int64 target indices."""
    return assign(cosine_similarity(src, trg))


def assign(scores: Tensor) -> Tensor:
    """Best target per source (argmax over the last dim): ``(…, N, M) -> (…, N)`` int64.

    Ties go to the lowest target index. Raises ValueError when there is no target (M = 0)
    for a non-empty source set.
    """
    if scores.dim() < 2:
        raise ValueError(f"assign: expected scores of shape (..., N, M), got {tuple(scores.shape)}")
    if scores.shape[-1] == 0:
        if scores.numel() == 0 and scores.shape[-2] == 0:
            return torch.zeros(scores.shape[:-1], dtype=torch.long, device=scores.device)
        raise ValueError(f"assign: no target candidates (M = 0) for scores of shape {tuple(scores.shape)}")
    return scores.argmax(dim=-1)


def hough_kernel(
    size: int = HOUGH_KERNEL_SIZE,
    kind: KernelKind = "gaussian",
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(size, size)`` normalised smoothing kernel for the vote map; ``size`` must be odd.

    ``"gaussian"`` follows the reference ``geometry.gaussian2d``: full width at half maximum
    equal to half the kernel side (sigma = size / 2 / (2 sqrt(2 ln 2))). ``"box"`` is uniform.
    ``size=1`` disables smoothing.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"hough_kernel: size must be a positive odd integer, got {size}")
    dtype = dtype or torch.get_default_dtype()
    if kind == "box":
        kernel = torch.ones(size, size, dtype=dtype, device=device)
    elif kind == "gaussian":
        fwhm_per_sigma = 2.0 * math.sqrt(2.0 * math.log(2.0))
        sigma = (size / 2.0) / fwhm_per_sigma
        r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
        g = torch.exp(-(r**2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
    else:
        raise ValueError(f"hough_kernel: kind must be 'gaussian' or 'box', got {kind!r}")
    return kernel / kernel.sum()


def offset_bin_ids(
    offsets: Tensor,
    image_size: tuple[int, int],
    *,
    trg_image_size: tuple[int, int] | None = None,
    n_bins_per_side: int = N_BINS_PER_SIDE,
) -> Tensor:
    """Flat Hough bin index of xy offsets ``trg - src``: ``(…, 2) -> (…)`` int64.

    The offset range is ``[-W_src, W_trg] x [-H_src, H_trg]`` (``[-W, W] x [-H, H]`` for equal
    sizes), split into ``n_bins_per_side`` equal bins per axis, so the bin size scales with
    the image size; offsets outside the range are clamped to the border bins. Flat index is
    ``iy * n_bins_per_side + ix``.
    """
    if offsets.shape[-1:] != (2,):
        raise ValueError(f"offset_bin_ids: offsets must be (..., 2) xy, got {tuple(offsets.shape)}")
    if n_bins_per_side < 1:
        raise ValueError(f"offset_bin_ids: n_bins_per_side must be >= 1, got {n_bins_per_side}")
    (h_src, w_src) = _check_size(image_size, "image_size")
    (h_trg, w_trg) = _check_size(trg_image_size or image_size, "trg_image_size")
    ix = _axis_bin_ids(offsets[..., 0], w_src, w_trg, n_bins_per_side)
    iy = _axis_bin_ids(offsets[..., 1], h_src, h_trg, n_bins_per_side)
    return iy * n_bins_per_side + ix


def _axis_bin_ids(offset: Tensor, src_extent: int, trg_extent: int, n_bins: int) -> Tensor:
    """Bin index of 1-D offsets in ``[-src_extent, trg_extent]`` split into ``n_bins`` bins."""
    scaled = (offset + src_extent) / (src_extent + trg_extent) * n_bins
    return torch.floor(scaled).long().clamp_(0, n_bins - 1)


def build_hough_space(
    src_pos: Tensor,
    trg_pos: Tensor,
    image_size: tuple[int, int],
    *,
    trg_image_size: tuple[int, int] | None = None,
    n_bins_per_side: int = N_BINS_PER_SIDE,
    kernel_size: int = HOUGH_KERNEL_SIZE,
    kernel: KernelKind = "gaussian",
) -> HoughSpace:
    """Precompute the pair-independent RHM state for hyperpixels at fixed positions.

    Args:
        src_pos: ``(N, 2)`` xy source hyperpixel centres; trg_pos: ``(M, 2)`` target ones.
        image_size: source ``(H, W)``; trg_image_size: target ``(H, W)``, defaults to image_size.

    Memory: ``bin_ids`` holds N*M int64 (253 MB for two 75x75 base maps).
    """
    for name, pos in (("src_pos", src_pos), ("trg_pos", trg_pos)):
        if pos.dim() != 2 or pos.shape[1] != 2:
            raise ValueError(f"build_hough_space: {name} must be (n, 2) xy, got {tuple(pos.shape)}")
    # Offsets in at least float32 so half-precision positions do not shift bins.
    dtype = torch.float32
    if src_pos.is_floating_point():
        dtype = torch.promote_types(src_pos.dtype, dtype)
    src = src_pos.to(dtype)
    trg = trg_pos.to(device=src_pos.device, dtype=dtype)
    (h_src, w_src) = _check_size(image_size, "image_size")
    (h_trg, w_trg) = _check_size(trg_image_size or image_size, "trg_image_size")
    if n_bins_per_side < 1:
        raise ValueError(f"build_hough_space: n_bins_per_side must be >= 1, got {n_bins_per_side}")
    # The bin index is separable in x and y, and hyperpixels lie on a grid with few distinct
    # coordinates: bin every (distinct src, distinct trg) coordinate pair once per axis, then
    # gather. Same arithmetic as offset_bin_ids, so the ids are identical.
    axis_ids = []
    for axis, (src_extent, trg_extent) in enumerate(((w_src, w_trg), (h_src, h_trg))):
        src_u, src_inv = torch.unique(src[:, axis], return_inverse=True)
        trg_u, trg_inv = torch.unique(trg[:, axis], return_inverse=True)
        table = _axis_bin_ids(trg_u[None, :] - src_u[:, None], src_extent, trg_extent, n_bins_per_side)
        axis_ids.append(table[src_inv[:, None], trg_inv[None, :]])
    bin_ids = axis_ids[1].mul_(n_bins_per_side).add_(axis_ids[0])
    k = hough_kernel(kernel_size, kernel, dtype=dtype, device=src_pos.device)
    return HoughSpace(bin_ids=bin_ids, n_bins=(n_bins_per_side, n_bins_per_side), kernel=k)


def hough_votes(similarity: Tensor, space: HoughSpace) -> Tensor:
    """Smoothed Hough vote map: ``(…, N, M) -> (…, n_bins_y, n_bins_x)``.

    Each match adds its confidence to its offset bin (``scatter_add``), then the map is
    convolved with ``space.kernel`` (zero padding ``k // 2``). Votes are accumulated in at
    least float32 and returned in the dtype of ``similarity``.
    """
    _check_space(similarity, space, "hough_votes")
    lead = similarity.shape[:-2]
    n_y, n_x = space.n_bins
    acc_dtype = torch.promote_types(similarity.dtype, torch.float32)
    n_batch = math.prod(lead)
    sim = similarity.reshape(n_batch, space.bin_ids.numel()).to(acc_dtype)
    index = space.bin_ids.reshape(1, -1).expand(n_batch, -1)
    votes = sim.new_zeros(sim.shape[0], n_y * n_x).scatter_add_(1, index, sim)
    k = space.kernel.to(acc_dtype)
    votes = F.conv2d(votes.view(-1, 1, n_y, n_x), k[None, None], padding=k.shape[-1] // 2)
    return votes.view(*lead, n_y, n_x).to(similarity.dtype)


def rhm_scores(
    src_feats: Tensor, trg_feats: Tensor, space: HoughSpace, *, exponent: float = COS_EXPONENT,
    rows: Tensor | None = None,
) -> Tensor:
    """RHM confidence p(m_a) * vote(bin(m)) with a precomputed :class:`HoughSpace`.

    Args:
        src_feats: ``(N, C)`` or ``(B, N, C)``; trg_feats: ``(M, C)`` or ``(B, M, C)``.
        rows: optional ``(R,)`` source indices: every match still votes, but only these rows of the
            scores are returned (a keypoint transfer needs the rows near its keypoints only).

    Returns:
        ``(N, M)`` or ``(B, N, M)`` regularized confidences (not normalised); ``(…, R, M)`` with ``rows``.
    """
    return hough_regularize(appearance_similarity(src_feats, trg_feats, exponent=exponent), space, rows=rows)


def hough_regularize(sim: Tensor, space: HoughSpace, *, rows: Tensor | None = None) -> Tensor:
    """Any appearance confidence of every match times the smoothed Hough vote of its offset bin (Min et al.
    Eq. 3; SCOT uses it on its transport plan): ``(…, N, M) -> (…, N, M)``, or ``(…, R, M)`` with ``rows``."""
    votes = hough_votes(sim, space).flatten(-2)  # (…, n_bins)
    bins = space.bin_ids if rows is None else space.bin_ids[rows]
    if rows is not None:
        sim = sim[..., rows, :]
    gathered = votes[..., bins.reshape(-1)].view(sim.shape)
    return sim * gathered if _needs_autograd(sim) else gathered.mul_(sim)


def rhm(
    src_feats: Tensor,
    trg_feats: Tensor,
    src_pos: Tensor,
    trg_pos: Tensor,
    image_size: tuple[int, int],
    *,
    trg_image_size: tuple[int, int] | None = None,
    n_bins_per_side: int = N_BINS_PER_SIDE,
    kernel_size: int = HOUGH_KERNEL_SIZE,
    kernel: KernelKind = "gaussian",
    exponent: float = COS_EXPONENT,
) -> Tensor:
    """One-shot RHM: :func:`build_hough_space` then :func:`rhm_scores`. ``-> (…, N, M)``.

    For many pairs at the same resolution, build the space once and call :func:`rhm_scores`.
    """
    space = build_hough_space(
        src_pos,
        trg_pos,
        image_size,
        trg_image_size=trg_image_size,
        n_bins_per_side=n_bins_per_side,
        kernel_size=kernel_size,
        kernel=kernel,
    )
    return rhm_scores(src_feats, trg_feats, space, exponent=exponent)


def _needs_autograd(t: Tensor) -> bool:
    """True when ``t`` is part of a graph, so in-place ops would break backward."""
    return torch.is_grad_enabled() and t.requires_grad


def _check_feats(src: Tensor, trg: Tensor, fn: str) -> None:
    if src.dim() not in (2, 3) or trg.dim() != src.dim():
        raise ValueError(
            f"{fn}: expected src (N, C) and trg (M, C), or both batched (B, N, C) / (B, M, C); "
            f"got {tuple(src.shape)} and {tuple(trg.shape)}"
        )
    if src.shape[-1] != trg.shape[-1]:
        raise ValueError(f"{fn}: channel mismatch, src has C={src.shape[-1]}, trg has C={trg.shape[-1]}")
    if src.dim() == 3 and src.shape[0] != trg.shape[0]:
        raise ValueError(f"{fn}: batch mismatch, src B={src.shape[0]}, trg B={trg.shape[0]}")


def _check_space(similarity: Tensor, space: HoughSpace, fn: str) -> None:
    if similarity.dim() < 2 or tuple(similarity.shape[-2:]) != tuple(space.bin_ids.shape):
        raise ValueError(
            f"{fn}: similarity {tuple(similarity.shape)} does not match the Hough space built for "
            f"(N, M) = {tuple(space.bin_ids.shape)}"
        )


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be a positive (H, W), got {size!r}")
    return int(size[0]), int(size[1])
