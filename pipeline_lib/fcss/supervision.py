"""Weak supervision by correspondence consistency inside object regions (Kim et al. Sec. 3.4).

The nearest neighbour (Euclidean, Eq. 12) of every source cell inside the source region is searched
among the target cells inside the target region, and the other way round. A match whose
back-match returns to where it started is *consistent* and becomes a positive pair; an inconsistent
match becomes a negative pair ("Invalid matches are also used to generate negative samples"). These
negatives are the descriptor's own wrong best matches, i.e. hard negatives. Samples are then drawn
at random (Kim et al.: N = 1024 per image pair).

Everything here is pure torch on detached descriptors: no gradient flows through the selection.
Cells are flat row-major indices into the (h, w) maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Kim et al. Sec. 4.1: "The number of training samples N is 1024" (per image pair).
N_SAMPLES = 1024
# Not in the paper: the share of positives among the N samples (we take half, the rest negatives).
POSITIVE_FRACTION = 0.5
# Kim et al. require the back-match to return to the start; the authors' release accepts a Manhattan
# error of up to 6 image pixels (CorrespondenceLoss.m, `threshold = 6`), i.e. 1.5 cells of our stride-4
# descriptor grid. We take the release's: read exactly (0 cells), a back-match one cell off is a *negative*,
# so 92% of the samples are negatives, many of them near-correct, and training pushes matching descriptors
# apart (PF-WILLOW split: positive share 8%, the positives' distance grows 0.146 -> 0.202 in 2 epochs);
# at 1.5 cells 38% are positives and their distance stays put (0.141 -> 0.149).
RELEASE_TOLERANCE_PX = 6.0
DESCRIPTOR_STRIDE_PX = 4.0  # the finest FCSS level of the shipped layers (block02)
CONSISTENCY_TOLERANCE_CELLS = RELEASE_TOLERANCE_PX / DESCRIPTOR_STRIDE_PX
NN_CHUNK = 4096  # query rows per distance block: bounds memory at NN_CHUNK x n_target floats


@dataclass(frozen=True)
class ConsistencySets:
    """Positive and negative cell pairs of one image pair: each (M,) int64 flat indices."""

    pos_src: torch.Tensor
    pos_trg: torch.Tensor
    neg_src: torch.Tensor
    neg_trg: torch.Tensor

    @property
    def n_pos(self) -> int:
        return int(self.pos_src.numel())

    @property
    def n_neg(self) -> int:
        return int(self.neg_src.numel())


def nearest_neighbours(query: torch.Tensor, ref: torch.Tensor, chunk: int = NN_CHUNK) -> torch.Tensor:
    """Index of the Euclidean nearest ``ref`` row for each ``query`` row: (Q, L), (R, L) -> (Q,) int64.
    Ties go to the lowest index. R must be > 0."""
    return mutual_nearest(query, ref, chunk)[0]


def mutual_nearest(a: torch.Tensor, b: torch.Tensor, chunk: int = NN_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean nearest neighbours both ways from one pass over the distance matrix (Kim et al. Eq. 12).

    a: (Na, L), b: (Nb, L), both non-empty -> (a_to_b (Na,), b_to_a (Nb,)) int64; ties go to the
    lowest index. Memory is bounded by ``chunk`` x Nb distances.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"nearest neighbours: need (Na, L) and (Nb, L), got {tuple(a.shape)} and {tuple(b.shape)}")
    if b.shape[0] == 0:
        raise ValueError("nearest neighbours: empty reference set")
    if a.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=a.device), torch.zeros(b.shape[0], dtype=torch.long,
                                                                               device=a.device)
    b_sq = b.pow(2).sum(1)
    a_to_b = []
    col_best = torch.full((b.shape[0],), float("inf"), device=a.device, dtype=a.dtype)
    col_arg = torch.zeros(b.shape[0], dtype=torch.long, device=a.device)
    for start in range(0, a.shape[0], chunk):
        q = a[start:start + chunk]
        d2 = q.pow(2).sum(1, keepdim=True) + b_sq[None] - 2.0 * q @ b.T
        a_to_b.append(d2.argmin(1))
        val, arg = d2.min(0)
        better = val < col_best  # strict: an earlier chunk keeps a tie (lowest index)
        col_best = torch.where(better, val, col_best)
        col_arg = torch.where(better, arg + start, col_arg)
    return torch.cat(a_to_b), col_arg


def _grid_xy(idx: torch.Tensor, w: int) -> torch.Tensor:
    return torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], 1).to(torch.float32)


def _one_direction(a_cells: torch.Tensor, b_cells: torch.Tensor, a_to_b: torch.Tensor, b_to_a: torch.Tensor,
                   w_a: int, tolerance: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches a -> b of the cells ``a_cells`` (NN tables as positions in the cell lists):
    (a index, b index, consistent) as flat map indices."""
    fwd = a_to_b  # positions in b_cells
    returned = a_cells[b_to_a[fwd]]
    err = (_grid_xy(a_cells, w_a) - _grid_xy(returned, w_a)).abs().max(1).values
    return a_cells, b_cells[fwd], err <= tolerance


def consistency_sets(src_desc: torch.Tensor, trg_desc: torch.Tensor, src_mask: torch.Tensor,
                     trg_mask: torch.Tensor, tolerance_cells: float = CONSISTENCY_TOLERANCE_CELLS,
                     both_directions: bool = True, chunk: int = NN_CHUNK) -> ConsistencySets:
    """Forward-backward NN consistency of two descriptor maps restricted to two masks.

    src_desc: (L, h1, w1), trg_desc: (L, h2, w2); src_mask: (h1, w1) bool, trg_mask: (h2, w2) bool.
    Source cells in ``src_mask`` are matched to their nearest target cell in ``trg_mask`` and back;
    with ``both_directions`` (the paper runs "NN search twice") target cells are also matched to the
    source and back. A match is consistent when the back-match lands within ``tolerance_cells``
    (Chebyshev distance, in cells of the starting map) of its start. Returns unique (src, trg) flat
    index pairs: consistent ones as positives, inconsistent ones as negatives. Empty masks give
    empty sets.
    """
    if src_desc.ndim != 3 or trg_desc.ndim != 3 or src_desc.shape[0] != trg_desc.shape[0]:
        raise ValueError(f"consistency_sets: need (L, h1, w1) and (L, h2, w2), got {tuple(src_desc.shape)} and "
                         f"{tuple(trg_desc.shape)}")
    if src_mask.shape != src_desc.shape[1:] or trg_mask.shape != trg_desc.shape[1:]:
        raise ValueError(f"consistency_sets: masks {tuple(src_mask.shape)}, {tuple(trg_mask.shape)} must match the "
                         f"maps {tuple(src_desc.shape[1:])}, {tuple(trg_desc.shape[1:])}")
    if tolerance_cells < 0:
        raise ValueError(f"consistency_sets: tolerance_cells must be >= 0, got {tolerance_cells}")
    device = src_desc.device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    src_cells = torch.nonzero(src_mask.reshape(-1).to(device), as_tuple=True)[0]
    trg_cells = torch.nonzero(trg_mask.reshape(-1).to(device), as_tuple=True)[0]
    if src_cells.numel() == 0 or trg_cells.numel() == 0:
        return ConsistencySets(empty, empty, empty, empty)
    with torch.no_grad():
        a = src_desc.detach().reshape(src_desc.shape[0], -1).T.float()
        b = trg_desc.detach().reshape(trg_desc.shape[0], -1).T.float()
        s2t, t2s = mutual_nearest(a[src_cells], b[trg_cells], chunk)
        s, t, ok = _one_direction(src_cells, trg_cells, s2t, t2s, src_desc.shape[2], tolerance_cells)
        srcs, trgs, oks = [s], [t], [ok]
        if both_directions:
            t2, s2, ok2 = _one_direction(trg_cells, src_cells, t2s, s2t, trg_desc.shape[2], tolerance_cells)
            srcs.append(s2)
            trgs.append(t2)
            oks.append(ok2)
        s, t, ok = torch.cat(srcs), torch.cat(trgs), torch.cat(oks)
    n_trg = trg_desc.shape[1] * trg_desc.shape[2]

    def unique_pairs(sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = torch.unique(s[sel] * n_trg + t[sel])  # sorted, so the result is deterministic
        return torch.div(key, n_trg, rounding_mode="floor"), key % n_trg

    ps, pt = unique_pairs(ok)
    ns, nt = unique_pairs(~ok)
    return ConsistencySets(ps, pt, ns, nt)


def sample_pairs(sets: ConsistencySets, n_samples: int = N_SAMPLES, positive_fraction: float = POSITIVE_FRACTION,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random training samples (Kim et al.: "We randomly select the positive and negative samples").

    Takes up to ``round(n_samples * positive_fraction)`` positives and fills the rest with negatives
    (both drawn without replacement). Returns (src_idx, trg_idx, labels), each (M,), M <= n_samples.
    """
    if n_samples < 0 or not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"sample_pairs: need n_samples >= 0 and positive_fraction in [0, 1], got {n_samples}, "
                         f"{positive_fraction}")
    n_pos = min(sets.n_pos, int(round(n_samples * positive_fraction)))
    n_neg = min(sets.n_neg, n_samples - n_pos)

    def draw(n_avail: int, n: int) -> torch.Tensor:
        return torch.randperm(n_avail, generator=generator)[:n].to(sets.pos_src.device)

    ip, ineg = draw(sets.n_pos, n_pos), draw(sets.n_neg, n_neg)
    src = torch.cat([sets.pos_src[ip], sets.neg_src[ineg]])
    trg = torch.cat([sets.pos_trg[ip], sets.neg_trg[ineg]])
    labels = torch.cat([torch.ones(n_pos, dtype=torch.bool), torch.zeros(n_neg, dtype=torch.bool)]).to(src.device)
    return src, trg, labels
