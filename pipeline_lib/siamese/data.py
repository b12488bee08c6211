"""Training pairs for the Siamese flow network: images, flow targets, augmentation, batches.

Image geometry: each image is read with ``datasets.load_rgb``, resized with
``features.resize_image`` so that its LONGER side is ``input_size`` (aspect kept, the same rule as
the feature cache), then zero-padded at the bottom/right to an ``input_size`` square. Padding (not
an anisotropic resize) keeps pixel coordinates of the resized image unchanged and the scale
isotropic, so flows need no rescaling; padded pixels are never confident (mask False).

Flow targets come from a provider ``flow_for(pair, src_hw, trg_hw) -> (flow, mask)``: flow
(src_h, src_w, 2) on the resized source image mapping resized-source pixels to resized-target
pixels, mask (src_h, src_w) bool, where src_hw / trg_hw are the resized (unpadded) sizes. The
provider is told the sizes because only this module knows ``input_size``. Providers given: exact
demo flow (``demo_flow_provider``, an oracle), pseudo ground truth computed from embeddings
(``pseudo_flow_provider`` + ``ManifoldEmbeddings``) or read from the make_pseudo_flow stage's stores
(``grid_flow_provider`` + ``PseudoFlowStores``).

Tensors stay on the CPU; ``siamese.loss.batch_loss`` moves a batch to the model's device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import DatasetIndex, Pair, demo, load_rgb
from ..features import resize_image
from ..geometry import resized_shape
from ..kernels.flow import rescale_flow, upsample_flow
from ..pseudo_flow import pseudo_flow
from .augment import AugmentConfig, augment_pair

log = logging.getLogger(__name__)

FlowProvider = Callable[[Pair, tuple[int, int], tuple[int, int]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FlowBatch:
    """src, trg: (B, 3, S, S) float in [0, 1]; flow: (B, S, S, 2) px; mask: (B, S, S) bool."""

    src: torch.Tensor
    trg: torch.Tensor
    flow: torch.Tensor
    mask: torch.Tensor
    pair_ids: tuple[str, ...]

    def to(self, device) -> "FlowBatch":
        return FlowBatch(self.src.to(device), self.trg.to(device), self.flow.to(device), self.mask.to(device),
                         self.pair_ids)


def pad_square(x: torch.Tensor, size: int, channels_last: bool = False) -> torch.Tensor:
    """Zero-pad (C, h, w) (or (h, w, C) / (h, w) with ``channels_last``) at the bottom/right to size x size."""
    h, w = (x.shape[0], x.shape[1]) if channels_last else (x.shape[-2], x.shape[-1])
    if h > size or w > size:
        raise ValueError(f"pad_square: {h}x{w} does not fit in {size}x{size}")
    if channels_last:
        out = x.new_zeros((size, size) + tuple(x.shape[2:]))
        out[:h, :w] = x
        return out
    return F.pad(x, (0, size - w, 0, size - h))


def load_square(path: Path, input_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Image file -> ((3, S, S) float in [0, 1], resized (h, w) before padding)."""
    img = resize_image(load_rgb(path), input_size)
    return pad_square(img, input_size), (int(img.shape[1]), int(img.shape[2]))


class SiamesePairData(torch.utils.data.Dataset):
    """Un-augmented training items of ``pairs``; ``batch_factory`` adds shuffling and augmentation.

    Item: dict(src (3, S, S), trg (3, S, S), flow (S, S, 2) float32, mask (S, S) bool, pair_id).
    ``cache_images`` keeps resized images (uint8) in memory, since pairs share images.
    """

    def __init__(self, index: DatasetIndex, pairs: Sequence[Pair], flow_for: FlowProvider, input_size: int,
                 cache_images: bool = True):
        if input_size <= 0:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.index = index
        self.pairs = list(pairs)
        self.flow_for = flow_for
        self.input_size = input_size
        self.cache_images = cache_images
        self._cache: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def image(self, image_id: str) -> tuple[torch.Tensor, tuple[int, int]]:
        """(3, S, S) float image and its resized (h, w)."""
        if image_id in self._cache:
            img, hw = self._cache[image_id]
            return img.float() / 255.0, hw
        img, hw = load_square(self.index.images[image_id].path, self.input_size)
        if self.cache_images:
            self._cache[image_id] = ((img * 255).round().to(torch.uint8), hw)
            return self._cache[image_id][0].float() / 255.0, hw
        return img, hw

    def __getitem__(self, i: int) -> dict:
        pair = self.pairs[i]
        src, src_hw = self.image(pair.src)
        trg, trg_hw = self.image(pair.trg)
        flow, mask = self.flow_for(pair, src_hw, trg_hw)
        flow = torch.as_tensor(np.asarray(flow), dtype=torch.float32)
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        if tuple(flow.shape) != (*src_hw, 2) or tuple(mask.shape) != tuple(src_hw):
            raise ValueError(f"flow provider returned flow {tuple(flow.shape)} / mask {tuple(mask.shape)} for pair "
                             f"{pair.pair_id}; expected ({src_hw[0]}, {src_hw[1]}, 2) on the resized source image")
        s = self.input_size
        return {"src": src, "trg": trg, "flow": pad_square(flow, s, True), "mask": pad_square(mask, s, True),
                "pair_id": pair.pair_id}


def collate(items: Sequence[dict]) -> FlowBatch:
    return FlowBatch(torch.stack([it["src"] for it in items]), torch.stack([it["trg"] for it in items]),
                     torch.stack([it["flow"] for it in items]), torch.stack([it["mask"] for it in items]),
                     tuple(it["pair_id"] for it in items))


BatchFactory = Callable[[int, torch.Generator], Iterator[FlowBatch]]


def batch_factory(data: SiamesePairData, batch_size: int, augment: AugmentConfig | None = None,
                  shuffle: bool = True, drop_last: bool = False) -> BatchFactory:
    """``batches(epoch, generator)`` for ``training.fit``: shuffled order and augmentation draws both
    come from ``generator`` (so a resumed run continues the same stream)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    def batches(epoch: int, generator: torch.Generator) -> Iterator[FlowBatch]:
        n = len(data)
        order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            items = []
            for i in idx:
                it = data[i]
                if augment is not None:
                    it["src"], it["trg"], it["flow"], it["mask"] = augment_pair(
                        it["src"], it["trg"], it["flow"], it["mask"], augment, generator)
                items.append(it)
            yield collate(items)

    return batches


def demo_flow_provider(index: DatasetIndex) -> FlowProvider:
    """Exact flow of the generated demo pairs (an oracle upper bound, and for testing)."""
    import zarr

    if index.flow_store is None:
        raise ValueError(f"dataset {index.name} has no flow store; exact flow exists only for the demo")
    ids = list(zarr.open_group(str(index.flow_store), mode="r").attrs["pair_ids"])
    pos = {p: i for i, p in enumerate(ids)}

    def flow_for(pair: Pair, src_hw, trg_hw):
        key = pair.pair_id if pair.pair_id in pos else f"{pair.src}->{pair.trg}"
        if key not in pos:
            raise KeyError(f"pair {pair.pair_id} has no exact flow in {index.flow_store}")
        flow, valid = demo.load_flow(index.flow_store, pos[key])
        s, t = index.images[pair.src], index.images[pair.trg]
        out, ok = rescale_flow(flow, valid, (s.height, s.width), (t.height, t.width), src_hw, trg_hw)
        return out.numpy(), ok.numpy()

    return flow_for


def pseudo_flow_provider(embeddings: Callable[[str], tuple[np.ndarray, np.ndarray | None]], mode: str = "mutual",
                         metric: str = "euclidean") -> FlowProvider:
    """Pseudo ground truth from embedded features (Gaur et al. Sec. 5).

    ``embeddings(image_id) -> (emb (h, w, d), labels (h, w) or None)`` on a grid covering the whole
    image; the grid flow of ``pseudo_flow`` is upsampled to the resized source image.
    """

    def flow_for(pair: Pair, src_hw, trg_hw):
        se, sl = embeddings(pair.src)
        te, tl = embeddings(pair.trg)
        flow, mask = pseudo_flow(se, te, src_hw, trg_hw, mode=mode, src_labels=sl, trg_labels=tl, metric=metric)
        up, ok = upsample_flow(flow, mask, src_hw)
        return up.numpy(), ok.numpy()

    return flow_for


GridFlowLookup = Callable[[Pair], tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]]


def grid_flow_provider(lookup: GridFlowLookup) -> FlowProvider:
    """Stored grid flows as training targets.

    ``lookup(pair) -> (flow (h, w, 2), mask (h, w), src_hw, trg_hw)``: a ``pseudo_flow`` result on
    a grid covering the source image of size ``src_hw`` with targets in pixels of a ``trg_hw``
    image (e.g. the original images, as the make_pseudo_flow stage stores them). Upsampled to that source
    size, then re-expressed in the resized frames (``rescale_flow``).
    """

    def flow_for(pair: Pair, src_hw, trg_hw):
        flow, mask, from_src, from_trg = lookup(pair)
        up, ok = upsample_flow(flow, mask, tuple(from_src))
        out, ok = rescale_flow(up, ok, tuple(from_src), tuple(from_trg), src_hw, trg_hw)
        return out.numpy(), ok.numpy()

    return flow_for


class PseudoFlowStores:
    """``lookup(pair)`` over the pseudo ground-truth Zarr stores of the make_pseudo_flow stage (one per
    category): groups with ``flow`` (h, w, 2), ``mask`` (h, w) and attrs ``pair_id``, ``src_hw``,
    ``trg_hw``. For :func:`grid_flow_provider`."""

    def __init__(self, stores: Sequence[str | Path]):
        import zarr

        self._where: dict[str, object] = {}
        self._manifold_images: dict[str, list[str]] = {}  # pair id -> the images its category's manifold learned from
        for path in stores:
            root = zarr.open_group(str(path), mode="r")
            images = list(root.attrs.get("manifold_image_ids", []))
            for key, group in root.groups():
                self._where[group.attrs["pair_id"]] = group
                self._manifold_images[group.attrs["pair_id"]] = images

    def manifold_images(self, pair_ids) -> set[str]:
        """Images the manifolds behind these pairs' pseudo flow learned from (recorded by the pseudo-flow stage)."""
        return {i for pid in pair_ids for i in self._manifold_images.get(pid, ())}

    def __contains__(self, pair_id: str) -> bool:
        return pair_id in self._where

    def __call__(self, pair: Pair):
        if pair.pair_id not in self._where:
            raise KeyError(f"pair '{pair.pair_id}' is in no pseudo ground-truth store; was it a training pair of "
                           f"the make_pseudo_flow stage?")
        g = self._where[pair.pair_id]
        return (np.asarray(g["flow"][:]), np.asarray(g["mask"][:]), tuple(g.attrs["src_hw"]),
                tuple(g.attrs["trg_hw"]))


class ManifoldEmbeddings:
    """``embeddings(image_id)`` over the ``manifold.zarr`` stores of the manifold stage (one per category):
    the final embedding (grid, grid, d) and final label map (grid, grid) of each image."""

    def __init__(self, stores: Sequence[str | Path]):
        import zarr

        self._where: dict[str, tuple[object, int]] = {}
        for path in stores:
            root = zarr.open_group(str(path), mode="r")
            for i, image_id in enumerate(root.attrs["image_ids"]):
                self._where[image_id] = (root, i)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._where

    def __call__(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        if image_id not in self._where:
            raise KeyError(f"image '{image_id}' is in no manifold store; was it among the manifold stage's images?")
        root, i = self._where[image_id]
        return np.asarray(root["embedding"][i]), np.asarray(root["label_maps"][-1, i])


def resized_hw(index: DatasetIndex, image_id: str, input_size: int) -> tuple[int, int]:
    """Resized (h, w) of an image under the module's rule (longer side = input_size)."""
    rec = index.images[image_id]
    return resized_shape(rec.height, rec.width, input_size)


__all__ = ["FlowBatch", "FlowProvider", "BatchFactory", "SiamesePairData", "batch_factory", "collate", "load_square",
           "pad_square", "demo_flow_provider", "grid_flow_provider", "PseudoFlowStores", "GridFlowLookup", "pseudo_flow_provider", "ManifoldEmbeddings", "resized_hw"]
