"""Pseudo ground-truth flow from embedded features (Gaur et al. Sec. 2.1 / 5) and flow utilities.

"After the manifold has been refined, Euclidean distances between embedded features are used to
compute dense correspondence to train a Siamese network" (Gaur et al. Sec. 2.1): every source cell
is matched to its nearest target cell in the learned embedding; a confidence mask (mutual nearest
neighbours and/or agreement of the SOP labels, methods.md Sec. 1) lets training ignore unreliable
vectors.

Conventions (``pipeline_lib/__init__.py``): flow is (..., 2) xy displacement in pixels, so a
source point p corresponds to the target point p + F(p); source positions are in source-image
pixels and target positions in target-image pixels; validity is a boolean mask. All functions are
pure; device and dtype follow the inputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import cell_centres

METRICS = ("euclidean", "cosine")
CONFIDENCE_MODES = ("mutual", "labels", "both", "none")
# What the nearest neighbours are searched in: the learned KFD embedding (Gaur et al. Sec. 2.1), the raw
# hyperpixel features the manifold was learned from, or both, each L2-normalised per cell and concatenated.
FEATURE_SOURCES = ("embedding", "raw", "concat")


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def l2_normalise_cells(x: np.ndarray) -> np.ndarray:
    """(..., d) -> unit L2 norm along the last axis (all-zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.finfo(np.float32).tiny)


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
    return np.concatenate([l2_normalise_cells(raw), l2_normalise_cells(embedding)], axis=-1)


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
        source cell centre (source-image pixels); cell centres as in ``geometry.cell_centres``.
    mask : (h, w) bool tensor, True where the match is confident.
    """
    if mode not in CONFIDENCE_MODES:
        raise ValueError(f"mode must be one of {CONFIDENCE_MODES}, got '{mode}'")
    src_emb, trg_emb = _as_tensor(src_emb), _as_tensor(trg_emb)
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
        sl, tl = _as_tensor(src_labels).to(device), _as_tensor(trg_labels).to(device)
        if tuple(sl.shape) != (h, w) or tuple(tl.shape) != (h2, w2):
            raise ValueError(f"labels must be (h, w)={h, w} and (h2, w2)={h2, w2}, got {tuple(sl.shape)} and "
                             f"{tuple(tl.shape)}")
        mask &= sl.reshape(-1) == tl.reshape(-1)[s2t]
    return flow, mask.reshape(h, w)


def _label_vectors(src_labels, trg_labels, src_hw_cells, trg_hw_cells, device) -> tuple[torch.Tensor, torch.Tensor]:
    sl, tl = _as_tensor(src_labels).to(device), _as_tensor(trg_labels).to(device)
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
    src_feat, trg_feat = _as_tensor(src_feat), _as_tensor(trg_feat)
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
    sl_map, tl_map = _as_tensor(src_labels), _as_tensor(trg_labels)
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


def masked_bilinear(values: torch.Tensor, mask: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a (h, w, C) field at normalised ``grid`` points, averaging confident cells only.

    values: (h, w, C); mask: (h, w) bool; grid: (H, W, 2) in [-1, 1] (``align_corners=False``).
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


def pixel_grid(hw: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """(H, W, 2) xy pixel-centre coordinates of an (H, W) image."""
    dtype = dtype or torch.get_default_dtype()
    ys = torch.arange(hw[0], device=device, dtype=dtype)
    xs = torch.arange(hw[1], device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def to_normalised(xy: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(..., 2) xy pixels of an (H, W) image -> [-1, 1] coordinates for ``grid_sample(align_corners=False)``."""
    size = torch.tensor([hw[1], hw[0]], device=xy.device, dtype=xy.dtype)
    return (xy + 0.5) / size * 2 - 1


def upsample_flow(flow_grid, mask, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid flow (h, w, 2) and mask (h, w) -> image flow (H, W, 2) and mask (H, W).

    Flow: bilinear between cell centres (``align_corners=False``, matching ``geometry.cell_centres``),
    over confident cells only (normalised convolution; see ``masked_bilinear``); displacement
    values are kept (they are already in image pixels). Mask: nearest cell.
    """
    flow_grid, mask = _as_tensor(flow_grid), _as_tensor(mask).bool()
    if flow_grid.ndim != 3 or flow_grid.shape[2] != 2 or tuple(mask.shape) != tuple(flow_grid.shape[:2]):
        raise ValueError(f"upsample_flow: expected flow (h, w, 2) and mask (h, w), got {tuple(flow_grid.shape)} "
                         f"and {tuple(mask.shape)}")
    dtype = flow_grid.dtype if flow_grid.is_floating_point() else torch.float32
    flow_grid = flow_grid.to(dtype)
    H, W = out_hw
    if H * W == 0 or flow_grid.shape[0] * flow_grid.shape[1] == 0:
        return (torch.zeros(H, W, 2, dtype=dtype, device=flow_grid.device),
                torch.zeros(H, W, dtype=torch.bool, device=flow_grid.device))
    grid = to_normalised(pixel_grid(out_hw, flow_grid.device, dtype), out_hw)
    return masked_bilinear(flow_grid, mask.to(flow_grid.device), grid)


def rescale_flow(flow, mask, from_src_hw: tuple[int, int], from_trg_hw: tuple[int, int],
                 to_src_hw: tuple[int, int], to_trg_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-express a dense flow between resolutions of the same two images.

    flow: (Hs, Ws, 2) on the ``from_src_hw`` source grid mapping into ``from_trg_hw`` target pixels
    -> (H's, W's, 2) on ``to_src_hw`` mapping into ``to_trg_hw`` pixels, and the mask. Target
    positions are rescaled exactly; the displacement is bilinear over valid pixels.
    """
    flow, mask = _as_tensor(flow), _as_tensor(mask).bool()
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
    disp, ok = masked_bilinear(flow, mask, to_normalised(p, from_src_hw))
    pos = (p + disp + 0.5) * s_trg - 0.5
    return torch.where(ok[..., None], pos - q, torch.zeros_like(pos)), ok


def flow_quality(pred_flow, pred_mask, true_flow, true_valid, alpha_px_list: Sequence[float]) -> dict[str, float]:
    """How good a (pseudo) flow is against the true flow, all (H, W, 2) / (H, W) on one grid.

    Returns ``epe``: mean end-point error (pixels) over pixels confident in ``pred_mask`` and valid
    in ``true_valid`` (NaN when none); ``pck@<a>``: fraction of those pixels with error <= a pixels,
    for each a in ``alpha_px_list``; ``coverage``: fraction of true-valid pixels that have a
    confident prediction; ``n_pixels``: number of pixels scored.
    """
    pf, tf = np.asarray(pred_flow, dtype=np.float64), np.asarray(true_flow, dtype=np.float64)
    pm, tv = np.asarray(pred_mask, dtype=bool), np.asarray(true_valid, dtype=bool)
    if pf.shape != tf.shape or pf.ndim != 3 or pf.shape[2] != 2 or pm.shape != pf.shape[:2] or tv.shape != pm.shape:
        raise ValueError(f"flow_quality: expected (H, W, 2) flows and (H, W) masks of one size, got {pf.shape}, "
                         f"{pm.shape}, {tf.shape}, {tv.shape}")
    both = pm & tv
    err = np.linalg.norm(pf - tf, axis=-1)[both]
    n = int(both.sum())
    out = {"epe": float(err.mean()) if n else float("nan"), "n_pixels": n,
           "coverage": float(both.sum() / tv.sum()) if tv.any() else float("nan")}
    for a in alpha_px_list:
        out[f"pck@{a:g}"] = float((err <= a).mean()) if n else float("nan")
    return out


__all__ = ["pseudo_flow", "same_label_flow", "part_chance_flow", "nearest_neighbours", "matching_features", "l2_normalise_cells", "FEATURE_SOURCES", "upsample_flow", "rescale_flow", "flow_quality", "masked_bilinear",
           "pixel_grid", "to_normalised", "METRICS", "CONFIDENCE_MODES"]
