"""Keypoint transfer with a trained Siamese flow network, and the paper's top-K retrieval protocol.

Images go through the same geometry as training (``siamese.data``): longer side resized to
``input_size``, zero-padded at the bottom/right to a square. Keypoints are mapped into that frame
with ``geometry.scale_points``, moved by the predicted flow (bilinear at the keypoint), and mapped
back to original target pixels. The loop over a dataset's pairs is
:func:`pipeline_lib.pair_prediction.predict_pairs` with :func:`siamese_keypoint_fn`.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..datasets import ImageRecord, Pair, load_rgb
from ..features import resize_image
from ..geometry import scale_points
from ..kernels.sampling import sample_at_pixels
from ..pair_prediction import ImageKeypointFn
from .data import pad_square

TOP_K = 25  # Gaur et al. Sec. 6: the query is matched against its K = 25 nearest training images


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_flow(model: torch.nn.Module, src_img: np.ndarray, trg_img: np.ndarray, input_size: int
                 ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """(H, W, 3) uint8 images -> flow (S, S, 2) on the padded resized source (CPU), and the resized
    (h, w) of source and target."""
    src = resize_image(src_img, input_size)
    trg = resize_image(trg_img, input_size)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        flow = model(pad_square(src, input_size)[None].to(device), pad_square(trg, input_size)[None].to(device))[0]
    finally:
        model.train(was_training)
    return flow.float().cpu(), tuple(src.shape[1:]), tuple(trg.shape[1:])


def predict_keypoints(model: torch.nn.Module, src_img: np.ndarray, trg_img: np.ndarray, src_kps: np.ndarray,
                      *, input_size: int) -> np.ndarray:
    """Transfer (K, 2) xy source keypoints (original source pixels) -> (K, 2) original target pixels.

    src_img, trg_img: (H, W, 3) uint8 as read by ``datasets.load_rgb``; input_size: the network's
    square input side (the training ``input_size``).
    """
    src_kps = np.asarray(src_kps, dtype=np.float64).reshape(-1, 2)
    if len(src_kps) == 0:
        return np.zeros((0, 2))
    flow, src_hw, trg_hw = predict_flow(model, src_img, trg_img, input_size)
    kps = scale_points(src_kps, tuple(src_img.shape[:2]), src_hw)
    flow = flow.double()
    moved = kps + sample_at_pixels(flow.permute(2, 0, 1), torch.from_numpy(kps), tuple(flow.shape[:2]),
                                   padding_mode="border").numpy()
    return scale_points(moved, trg_hw, tuple(trg_img.shape[:2]))


def siamese_keypoint_fn(model: torch.nn.Module, input_size: int) -> ImageKeypointFn:
    """The network's keypoint transfer on a pair of images (for ``pair_prediction.on_images``)."""
    return lambda src, trg, kps: predict_keypoints(model, src, trg, kps, input_size=input_size)


def global_descriptor(features: torch.Tensor) -> torch.Tensor:
    """Global average pooling: (C, h, w) -> (C,) or (N, C, h, w) -> (N, C); (.., C) passes through."""
    if features.ndim >= 3:
        return features.mean(dim=(-2, -1))
    return features


def retrieve_top_k(query_feat: torch.Tensor, gallery_feats: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Indices of the ``k`` gallery items nearest to the query, best first.

    query_feat: (C,) or (C, h, w); gallery_feats: (N, C) or (N, C, h, w) (spatial maps are average
    pooled). Ranking by cosine similarity equals ranking by the L2 distance of L2-normalised
    features, the paper's "normalized L2 distance" (||a - b||^2 = 2 - 2 cos). Returns (min(k, N),)
    int64; ties keep the lower index.
    """
    if len(gallery_feats) == 0:
        return torch.zeros(0, dtype=torch.int64)
    q = F.normalize(global_descriptor(query_feat).reshape(1, -1).float(), dim=1)
    g = F.normalize(global_descriptor(gallery_feats).reshape(len(gallery_feats), -1).float().to(q.device), dim=1)
    if g.shape[1] != q.shape[1]:
        raise ValueError(f"retrieve_top_k: query has {q.shape[1]} channels, gallery {g.shape[1]}")
    order = torch.sort(-(g @ q[0]).cpu(), stable=True).indices
    return order[:max(0, min(k, len(order)))]


def transfer_from_neighbours(model: torch.nn.Module, query_img: np.ndarray,
                             neighbours: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, input_size: int
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Gaur et al. Sec. 6 keypoint estimate: map the keypoints of each retrieved image onto the query
    and average the locations.

    neighbours: (image (H, W, 3) uint8, kps (K, 2), valid (K,) bool) per retrieved image, same K.
    Returns (K, 2) mean location in query pixels (NaN where no neighbour had the keypoint) and
    (K,) the number of neighbours that voted.
    """
    if not neighbours:
        raise ValueError("transfer_from_neighbours needs at least one neighbour")
    n_kps = len(neighbours[0][1])
    total, count = np.zeros((n_kps, 2)), np.zeros(n_kps, dtype=np.int64)
    for img, kps, valid in neighbours:
        valid = np.asarray(valid, dtype=bool)
        if len(kps) != n_kps:
            raise ValueError(f"every neighbour needs {n_kps} keypoints, got {len(kps)}")
        if valid.any():
            total[valid] += predict_keypoints(model, img, query_img, np.asarray(kps)[valid], input_size=input_size)
            count[valid] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], np.nan)
    return mean, count


def image_keypoints(pairs: Sequence[Pair]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Annotated keypoints (K, 2) and validity (K,) of every image that appears in ``pairs``."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for p in pairs:
        found.setdefault(p.src, (np.asarray(p.src_kps, dtype=np.float64), np.asarray(p.valid, dtype=bool)))
        found.setdefault(p.trg, (np.asarray(p.trg_kps, dtype=np.float64), np.asarray(p.valid, dtype=bool)))
    return found


@torch.no_grad()
def image_descriptor(model: torch.nn.Module, img: np.ndarray, input_size: int) -> torch.Tensor:
    """(C,) global descriptor: the encoder's deepest chosen layer, average pooled, at the network's input
    geometry (longer side ``input_size``, unpadded)."""
    x = resize_image(img, input_size)[None].to(_model_device(model))
    feats = model.backbone(x, upto=model.layers[-1])[model.layers[-1]]
    return global_descriptor(feats[0]).float().cpu()


def predict_by_retrieval(model: torch.nn.Module, pairs: Sequence[Pair], gallery_pairs: Sequence[Pair],
                         images: Mapping[str, ImageRecord], k: int, input_size: int, progress: bool = True
                         ) -> tuple[dict[str, np.ndarray], float]:
    """Gaur et al. Sec. 6 protocol for every pair: the target (query) image's keypoints are the mean of the
    keypoints of its ``k`` nearest gallery images of the same category (normalised L2 distance of global
    descriptors), each transferred onto the query by the network. The gallery is every image of
    ``gallery_pairs`` with its annotations, minus the query itself; the pair's source image plays no part.
    Returns predictions in original target pixels (NaN where no neighbour had the keypoint) and ms per pair.
    """
    if k <= 0:
        raise ValueError(f"retrieval needs k >= 1, got {k}")
    gallery_kps = image_keypoints(gallery_pairs)
    by_category: dict[str, list[str]] = {}
    for image_id in gallery_kps:
        by_category.setdefault(images[image_id].category, []).append(image_id)
    desc: dict[str, torch.Tensor] = {}

    def descriptor(image_id: str) -> torch.Tensor:
        if image_id not in desc:
            desc[image_id] = image_descriptor(model, load_rgb(images[image_id].path), input_size)
        return desc[image_id]

    estimates: dict[str, np.ndarray] = {}
    preds = {}
    t0 = time.perf_counter()
    for p in tqdm(pairs, desc="siamese top-k", unit="pair", disable=not progress):
        if p.trg not in estimates:
            gallery = [g for g in by_category.get(p.category, []) if g != p.trg]
            if not gallery:
                raise ValueError(f"pair {p.pair_id}: no gallery image of category '{p.category}' for the top-K "
                                 f"protocol; the training split has none.")
            order = retrieve_top_k(descriptor(p.trg), torch.stack([descriptor(g) for g in gallery]), k)
            query = load_rgb(images[p.trg].path)
            neighbours = [(load_rgb(images[gallery[i]].path), *gallery_kps[gallery[i]]) for i in order.tolist()]
            estimates[p.trg], _ = transfer_from_neighbours(model, query, neighbours, input_size=input_size)
        if len(estimates[p.trg]) != len(p.trg_kps):
            raise ValueError(f"pair {p.pair_id}: the gallery has {len(estimates[p.trg])} keypoints per image, the "
                             f"pair {len(p.trg_kps)}")
        preds[p.pair_id] = np.where(p.valid[:, None], estimates[p.trg], np.nan)
    return preds, 1000.0 * (time.perf_counter() - t0) / max(len(pairs), 1)


__all__ = ["predict_keypoints", "predict_by_retrieval", "image_keypoints", "image_descriptor", "predict_flow", "siamese_keypoint_fn", "retrieve_top_k", "global_descriptor",
           "transfer_from_neighbours", "TOP_K"]
