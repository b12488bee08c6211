"""Pseudo ground-truth flow from embedded features (Gaur et al. Sec. 2.1 / 5), and the references it is
scored against (``same_label_flow``, ``part_chance_flow``).

"After the manifold has been refined, Euclidean distances between embedded features are used to
compute dense correspondence to train a Siamese network" (Gaur et al. Sec. 2.1): every source cell
is matched to its nearest target cell in the learned embedding; a confidence mask (mutual nearest
neighbours and/or agreement of the SOP labels, methods.md Sec. 1) lets training ignore unreliable
vectors.

Conventions (``pipeline_lib/__init__.py``): flow is (..., 2) xy displacement in pixels, so a
source point p corresponds to the target point p + F(p); source positions are in source-image
pixels and target positions in target-image pixels; validity is a boolean mask. All functions are
pure; device and dtype follow the inputs. Resampling a flow (to its image, between resolutions) is
:mod:`pipeline_lib.kernels.flow`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.flow import as_tensor
from ..kernels.grids import cell_centres

METRICS = ("euclidean", "cosine")
CONFIDENCE_MODES = ("mutual", "labels", "both", "none")
# What the nearest neighbours are searched in: the learned KFD embedding (Gaur et al. Sec. 2.1), the raw
# hyperpixel features the manifold was learned from, or both, each L2-normalised per cell and concatenated.
FEATURE_SOURCES = ("embedding", "raw", "concat")


def matching_features(embedding: np.ndarray, raw: np.ndarray | None, source: str) -> np.ndarray:
    """The features pseudo ground truth is matched in, (..., h, w, d).

    ``embedding``: the KFD embedding as is (Gaur et al. Sec. 2.1); ``raw``: the raw hyperpixels;
    ``concat``: both, each L2-normalised per cell, concatenated (equal weight: a cell's squared
    distance is the sum of the two parts' squared chordal distances).
    """
    if source not in FEATURE_SOURCES:
        raise ValueError(f"features must be one of {FEATURE_SOURCES}, got '{source}'")
    if source == "embedding":
        return np.asarray(embedding)
    if raw is None:
        raise ValueError(f"features '{source}' needs the raw features")
    if source == "raw":
        return np.asarray(raw)
    embedding, raw = np.asarray(embedding), np.asarray(raw)
    if embedding.shape[:-1] != raw.shape[:-1]:
        raise ValueError(f"embedding {embedding.shape} and raw {raw.shape} must share the grid")
    parts = [F.normalize(torch.from_numpy(x.astype(np.float32)), dim=-1, eps=np.finfo(np.float32).tiny)
             for x in (raw, embedding)]
    return torch.cat(parts, dim=-1).numpy()


def nearest_neighbours(src: torch.Tensor, trg: torch.Tensor,
                       metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest target row of every source row and vice versa.

    src: (N_src, D), trg: (N_trg, D) -> (src_to_trg (N_src,), trg_to_src (N_trg,)) int64 indices.
    ``euclidean`` ranks by ||a - b|| (Gaur et al. Sec. 2.1); ``cosine`` by a.b / (|a| |b|).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got '{metric}'")
    if metric == "cosine":
        sim = F.normalize(src, dim=1) @ F.normalize(trg, dim=1).T
        return sim.argmax(1), sim.argmax(0)
    dist = torch.cdist(src[None], trg[None])[0]
    return dist.argmin(1), dist.argmin(0)


def pseudo_flow(src_emb, trg_emb, src_hw: tuple[int, int], trg_hw: tuple[int, int], mode: str = "mutual",
                src_labels=None, trg_labels=None, metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour flow on the source feature grid, with a confidence mask.

    Parameters
    ----------
    src_emb : (h, w, d) embedded features of the source image (numpy or torch).
    trg_emb : (h2, w2, d) embedded features of the target image.
    src_hw, trg_hw : (H, W) of the source / target image the grids cover (pixels).
    mode : confidence rule. ``mutual``: the source cell is its match's nearest neighbour too;
        ``labels``: source cell and matched target cell share the SOP label; ``both``; ``none``.
    src_labels, trg_labels : (h, w) and (h2, w2) integer SOP labels (needed for labels/both).
    metric : ``euclidean`` (default, Gaur et al. Sec. 2.1) or ``cosine``.

    Returns
    -------
    flow : (h, w, 2) float tensor: matched target cell centre (target-image pixels) minus the
        source cell centre (source-image pixels); cell centres as in ``kernels.grids.cell_centres``.
    mask : (h, w) bool tensor, True where the match is confident.
    """
    if mode not in CONFIDENCE_MODES:
        raise ValueError(f"mode must be one of {CONFIDENCE_MODES}, got '{mode}'")
    src_emb, trg_emb = as_tensor(src_emb), as_tensor(trg_emb)
    if src_emb.ndim != 3 or trg_emb.ndim != 3 or src_emb.shape[2] != trg_emb.shape[2]:
        raise ValueError(f"pseudo_flow: expected src_emb (h, w, d) and trg_emb (h2, w2, d), got "
                         f"{tuple(src_emb.shape)} and {tuple(trg_emb.shape)}")
    dtype = src_emb.dtype if src_emb.is_floating_point() else torch.float32
    src_emb, trg_emb = src_emb.to(dtype), trg_emb.to(device=src_emb.device, dtype=dtype)
    h, w, d = src_emb.shape
    h2, w2, _ = trg_emb.shape
    device = src_emb.device
    if h * w == 0 or h2 * w2 == 0:
        return torch.zeros(h, w, 2, dtype=dtype, device=device), torch.zeros(h, w, dtype=torch.bool, device=device)
    s2t, t2s = nearest_neighbours(src_emb.reshape(h * w, d), trg_emb.reshape(h2 * w2, d), metric)
    src_xy = cell_centres(h, w, src_hw, device=device, dtype=dtype)
    trg_xy = cell_centres(h2, w2, trg_hw, device=device, dtype=dtype)
    flow = (trg_xy[s2t] - src_xy).reshape(h, w, 2)
    mask = torch.ones(h * w, dtype=torch.bool, device=device)
    if mode in ("mutual", "both"):
        mask &= t2s[s2t] == torch.arange(h * w, device=device)
    if mode in ("labels", "both"):
        if src_labels is None or trg_labels is None:
            raise ValueError(f"mode '{mode}' needs src_labels and trg_labels")
        sl, tl = as_tensor(src_labels).to(device), as_tensor(trg_labels).to(device)
        if tuple(sl.shape) != (h, w) or tuple(tl.shape) != (h2, w2):
            raise ValueError(f"labels must be (h, w)={h, w} and (h2, w2)={h2, w2}, got {tuple(sl.shape)} and "
                             f"{tuple(tl.shape)}")
        mask &= sl.reshape(-1) == tl.reshape(-1)[s2t]
    return flow, mask.reshape(h, w)


def _label_vectors(src_labels, trg_labels, src_hw_cells, trg_hw_cells, device) -> tuple[torch.Tensor, torch.Tensor]:
    sl, tl = as_tensor(src_labels).to(device), as_tensor(trg_labels).to(device)
    if tuple(sl.shape) != tuple(src_hw_cells) or tuple(tl.shape) != tuple(trg_hw_cells):
        raise ValueError(f"labels must be (h, w)={tuple(src_hw_cells)} and (h2, w2)={tuple(trg_hw_cells)}, got "
                         f"{tuple(sl.shape)} and {tuple(tl.shape)}")
    if sl.is_floating_point() or tl.is_floating_point():
        raise ValueError(f"labels must be integer maps, got {sl.dtype} and {tl.dtype}")
    return sl.reshape(-1).long(), tl.reshape(-1).long()


def same_label_flow(src_feat, trg_feat, src_hw: tuple[int, int], trg_hw: tuple[int, int], src_labels, trg_labels,
                    metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour flow restricted to target cells of the source cell's SOP label.

    A reference for the pseudo flow (``raw_same_label`` in the quality table): how well the raw
    features place a point *inside* its part once the manifold's labels have found the part.
    Source cells whose label no target cell carries fall back to the unrestricted nearest
    neighbour and are False in the mask (mask = the label exists in the target).

    Shapes as in :func:`pseudo_flow`; labels (h, w) and (h2, w2) integer.
    """
    src_feat, trg_feat = as_tensor(src_feat), as_tensor(trg_feat)
    if src_feat.ndim != 3 or trg_feat.ndim != 3 or src_feat.shape[2] != trg_feat.shape[2]:
        raise ValueError(f"same_label_flow: expected (h, w, d) and (h2, w2, d), got {tuple(src_feat.shape)} and "
                         f"{tuple(trg_feat.shape)}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got '{metric}'")
    dtype = src_feat.dtype if src_feat.is_floating_point() else torch.float32
    src_feat, trg_feat = src_feat.to(dtype), trg_feat.to(device=src_feat.device, dtype=dtype)
    (h, w, d), (h2, w2, _) = src_feat.shape, trg_feat.shape
    device = src_feat.device
    sl, tl = _label_vectors(src_labels, trg_labels, (h, w), (h2, w2), device)
    a, b = src_feat.reshape(h * w, d), trg_feat.reshape(h2 * w2, d)
    if metric == "cosine":
        cost = -(F.normalize(a, dim=1) @ F.normalize(b, dim=1).T)
    else:
        cost = torch.cdist(a[None], b[None])[0]
    same = sl[:, None] == tl[None, :]
    present = same.any(1)
    # restricted where the label exists in the target, unrestricted otherwise
    cost = torch.where(same | ~present[:, None], cost, torch.full_like(cost, float("inf")))
    s2t = cost.argmin(1)
    src_xy = cell_centres(h, w, src_hw, device=device, dtype=dtype)
    trg_xy = cell_centres(h2, w2, trg_hw, device=device, dtype=dtype)
    return (trg_xy[s2t] - src_xy).reshape(h, w, 2), present.reshape(h, w)


def part_chance_flow(src_labels, trg_labels, src_hw: tuple[int, int], trg_hw: tuple[int, int],
                     generator: torch.Generator, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Part-level chance: every source cell goes to a uniformly random target cell of its SOP label.

    The reference a pseudo flow must beat to know more than the part a point is in (``part_chance``
    in the quality table). Source cells whose label no target cell carries go to a uniformly random
    target cell (any label) and are False in the mask. ``generator`` seeds the draw.

    src_labels (h, w), trg_labels (h2, w2) integer -> flow (h, w, 2) (target cell centre in target
    pixels minus source cell centre in source pixels) and mask (h, w).
    """
    sl_map, tl_map = as_tensor(src_labels), as_tensor(trg_labels)
    if sl_map.ndim != 2 or tl_map.ndim != 2:
        raise ValueError(f"part_chance_flow: labels must be (h, w) and (h2, w2), got {tuple(sl_map.shape)} and "
                         f"{tuple(tl_map.shape)}")
    (h, w), (h2, w2) = sl_map.shape, tl_map.shape
    sl, tl = _label_vectors(sl_map, tl_map, (h, w), (h2, w2), "cpu")
    u = torch.rand(h * w, generator=generator, dtype=torch.float64)
    s2t = torch.empty(h * w, dtype=torch.long)
    present = torch.zeros(h * w, dtype=torch.bool)
    for lab in torch.unique(sl).tolist():
        rows = torch.nonzero(sl == lab).flatten()
        cells = torch.nonzero(tl == lab).flatten()
        if cells.numel():
            present[rows] = True
        else:
            cells = torch.arange(h2 * w2)
        pick = (u[rows] * cells.numel()).long().clamp_max(cells.numel() - 1)
        s2t[rows] = cells[pick]
    src_xy = cell_centres(h, w, src_hw, dtype=dtype)
    trg_xy = cell_centres(h2, w2, trg_hw, dtype=dtype)
    return (trg_xy[s2t] - src_xy).reshape(h, w, 2), present.reshape(h, w)
