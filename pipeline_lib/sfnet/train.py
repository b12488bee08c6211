"""SFNet training through the shared loop (:func:`pipeline_lib.training.fit`).

Data (Lee et al. Sec. 4.2): single images with binary foreground masks, each turned into a source
and its random affine warp every time it is drawn (:mod:`pipeline_lib.sfnet.synthetic`). Images are
those of the training split's pairs only (never a test image); they are resized to a square
``image_size`` (Lee et al. Sec. 4.1: 320 x 320) once and kept in memory.

Masks come from ``ImageRecord.mask_path`` (the demo has exact object masks). Layouts without masks
(PF-PASCAL, PF-WILLOW) can fall back to the filled object box of the image's pairs
(``mask_source="auto"`` or ``"box"``): a coarser object prior than the paper's segmentation masks.

Typical use::

    images, masks = load_images(index, training_image_ids(index), cfg.image_size)
    fit(model, make_loss_fn(), make_batches(images, masks, batch_size, SyntheticConfig()), train_cfg,
        out_dir, device)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import to_tensor
from ..config import ConfigError, schema_default, section
from ..datasets import DatasetError, DatasetIndex, Pair, load_mask, load_rgb
from ..datasets import training_image_ids as dataset_training_image_ids
from ..training import TrainConfig, TrainResult, fit
from .losses import SFNetLossConfig, sfnet_loss
from .model import SFNetConfig
from .synthetic import SyntheticBatch, SyntheticConfig, jitter, make_pairs

log = logging.getLogger(__name__)
MASK_SOURCES = ("auto", "file", "box")
PAPER_LR = 3e-5  # Lee et al. Sec. 4.2: Adam, learning rate 3e-5 (divided by 5 after 30 of 40 epochs)
PAPER_BATCH_SIZE = 16  # Lee et al. Sec. 4.2
Batches = Callable[[int, torch.Generator], Iterator[SyntheticBatch]]  # the ``batches`` argument of training.fit


@dataclass(frozen=True)
class SFNetSettings:
    """Everything one config section ``sfnet`` sets (see :func:`settings_from_config`)."""

    model: SFNetConfig
    synthetic: SyntheticConfig
    loss: SFNetLossConfig
    train: TrainConfig
    mask_source: str = "auto"
    synthetic_fraction: float = schema_default("sfnet", "synthetic_fraction")  # Lee et al. Sec. 4.2: 1.0


TRAIN_KEYS = ("epochs", "lr", "batch_size", "weight_decay")


def settings_from_config(sfnet: Mapping[str, Any], seed: int = 0) -> SFNetSettings:
    """Split a flat config section into the dataclasses (unknown keys are an error).

    Keys: those of :class:`SFNetConfig` and :class:`SFNetLossConfig`, ``mask_source``, the
    :class:`TrainConfig` keys ``epochs, lr, batch_size, weight_decay`` (defaults: the paper's lr
    and batch size, Lee et al. Sec. 4.2) and a nested ``synthetic`` mapping (:class:`SyntheticConfig`).
    """
    groups: dict[str, dict] = {"model": {}, "loss": {}, "train": {}}
    names = {"model": {f.name for f in fields(SFNetConfig)}, "loss": {f.name for f in fields(SFNetLossConfig)},
             "train": set(TRAIN_KEYS)}
    mask_source = "auto"
    for key, value in sfnet.items():
        if key in ("synthetic", "mask_source", "synthetic_fraction"):
            continue
        group = next((g for g, n in names.items() if key in n), None)
        if group is None:
            raise ConfigError(f"unknown key sfnet.{key}; allowed: {sorted(set().union(*names.values()))} "
                              f"+ mask_source, synthetic, synthetic_fraction")
        groups[group][key] = value
    if "mask_source" in sfnet:
        mask_source = sfnet["mask_source"]
        if mask_source not in MASK_SOURCES:
            raise ConfigError(f"sfnet.mask_source must be one of {MASK_SOURCES}, got '{mask_source}'")
    fraction = float(sfnet.get("synthetic_fraction", schema_default("sfnet", "synthetic_fraction")))
    if not 0 <= fraction <= 1:
        raise ConfigError(f"sfnet.synthetic_fraction must be in [0, 1], got {fraction}")
    train = {"lr": PAPER_LR, "batch_size": PAPER_BATCH_SIZE, **groups["train"], "seed": seed}
    return SFNetSettings(section(SFNetConfig, groups["model"]), section(SyntheticConfig, sfnet.get("synthetic", {})),
                         section(SFNetLossConfig, groups["loss"]), section(TrainConfig, train), mask_source, fraction)


def training_image_ids(index: DatasetIndex, splits: Sequence[str] = ("train",)) -> list[str]:
    """Sorted ids of the images that appear in pairs of ``splits``."""
    return dataset_training_image_ids(index, splits, "SFNet")


def pair_index(image_ids: Sequence[str], pairs: Sequence[Pair]) -> torch.Tensor:
    """(P, 2) long positions of every pair's source and target in ``image_ids``."""
    pos = {k: i for i, k in enumerate(image_ids)}
    return torch.tensor([[pos[p.src], pos[p.trg]] for p in pairs], dtype=torch.long).view(-1, 2)


def _resize(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t[None], size=(size, size), mode=mode, **kw)[0]


def _box_mask(index: DatasetIndex, image_id: str) -> np.ndarray | None:
    rec = index.images[image_id]
    mask = np.zeros((rec.height, rec.width), dtype=bool)
    found = False
    for p in index.pairs:
        for key, box in ((p.src, p.src_box), (p.trg, p.trg_box)):
            if key == image_id and box is not None:
                x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
                rows = slice(max(0, int(np.floor(y0))), int(np.ceil(y1)) + 1)
                cols = slice(max(0, int(np.floor(x0))), int(np.ceil(x1)) + 1)
                mask[rows, cols] = True
                found = True
    return mask if found else None


def image_mask(index: DatasetIndex, image_id: str, mask_source: str = "auto") -> np.ndarray:
    """(H, W) bool foreground mask of an image: its mask file, or its filled object box (see module doc)."""
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got '{mask_source}'")
    rec = index.images[image_id]
    if mask_source in ("auto", "file") and rec.mask_path is not None and Path(rec.mask_path).is_file():
        return load_mask(rec.mask_path)
    if mask_source == "file":
        raise DatasetError(f"image {image_id}: no mask file ({rec.mask_path}); SFNet training needs foreground "
                           f"masks. Use sfnet.mask_source: box to fall back to object boxes.")
    box = _box_mask(index, image_id)
    if box is None:
        raise DatasetError(f"image {image_id}: neither a mask file nor an object box; SFNet cannot train on it.")
    return box


def load_images(index: DatasetIndex, image_ids: Sequence[str], image_size: int,
                mask_source: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) float images in [0, 1] and (N, 1, S, S) {0, 1} masks, resized to a square S."""
    imgs, masks, n_box = [], [], 0
    for key in image_ids:
        rec = index.images[key]
        imgs.append(_resize(to_tensor(load_rgb(rec.path)), image_size, "bilinear").clamp(0, 1))
        if mask_source == "auto" and not (rec.mask_path is not None and Path(rec.mask_path).is_file()):
            n_box += 1
        m = torch.from_numpy(image_mask(index, key, mask_source)).float()[None]
        masks.append((_resize(m, image_size, "area") > 0.5).float())
    if n_box:
        log.warning("SFNet: %d of %d training images have no mask file; using their object boxes as masks",
                    n_box, len(image_ids))
    return torch.stack(imgs), torch.stack(masks)


@dataclass
class MaskedPairs:
    """A batch of image pairs with foreground masks: src/trg (B, 3, S, S), src_mask/trg_mask (B, 1, S, S)."""

    src: torch.Tensor
    trg: torch.Tensor
    src_mask: torch.Tensor
    trg_mask: torch.Tensor

    def to(self, device) -> "MaskedPairs":
        return MaskedPairs(self.src.to(device), self.trg.to(device), self.src_mask.to(device), self.trg_mask.to(device))


def real_pairs(images: torch.Tensor, masks: torch.Tensor, index: torch.Tensor, synth: SyntheticConfig,
               generator: torch.Generator) -> MaskedPairs:
    """Pairs of two images of one category (``index``: (B, 2) positions), augmented as Lee et al. Sec. 4.2
    augment theirs: both images flipped together (``synth.flip_prob``) and each colour-jittered; source and
    target swapped with probability 1/2 (the loss is symmetric in the two, so this only varies the batches)."""
    b = len(index)
    swap = torch.rand(b, generator=generator) < 0.5
    index = torch.where(swap[:, None], index.flip(1), index)
    flip = (torch.rand(b, generator=generator) < synth.flip_prob).view(b, 1, 1, 1)
    parts = [images[index[:, 0]], images[index[:, 1]], masks[index[:, 0]], masks[index[:, 1]]]
    src, trg, sm, tm = (torch.where(flip, t.flip(-1), t) for t in parts)
    return MaskedPairs(jitter(src, synth.color_jitter, generator), jitter(trg, synth.color_jitter, generator), sm, tm)


def _cat(a: MaskedPairs | SyntheticBatch, b: MaskedPairs) -> MaskedPairs:
    return MaskedPairs(*(torch.cat([getattr(a, k), getattr(b, k)]) for k in ("src", "trg", "src_mask", "trg_mask")))


def make_batches(images: torch.Tensor, masks: torch.Tensor, batch_size: int,
                 synth: SyntheticConfig = SyntheticConfig(), pairs: torch.Tensor | None = None,
                 synthetic_fraction: float = 1.0) -> Batches:
    """Batches factory for :func:`training.fit` (CPU tensors, the loop's generator).

    ``synthetic_fraction`` 1 (Lee et al. Sec. 4.2): every epoch a shuffled pass over the images, each batch
    turned into fresh synthetic pairs (an image and its random affine warp). Below 1, ``pairs`` ((P, 2)
    positions of two images of one category) are the epoch: a shuffled pass over them, each batch holding
    ``round(batch_size * synthetic_fraction)`` synthetic pairs of random images and real pairs for the rest
    (:func:`real_pairs`). Lee et al. state that their loss wants pairs of *different instances* of a category
    and fall back on synthetic warps only for lack of masks; on warps of one image the loss is near zero from
    the start (README "Trained methods")."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("make_batches: no training images")
    if not 0 <= synthetic_fraction <= 1:
        raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}")
    n_synth = round(batch_size * synthetic_fraction)
    if n_synth < batch_size and (pairs is None or len(pairs) == 0):
        raise ValueError(f"make_batches: synthetic_fraction {synthetic_fraction} asks for real pairs, but none given")

    def synthetic_only(epoch: int, generator: torch.Generator) -> Iterator[SyntheticBatch]:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield make_pairs(images[idx], masks[idx], synth, generator)

    def mixed(epoch: int, generator: torch.Generator) -> Iterator[MaskedPairs]:
        order = torch.randperm(len(pairs), generator=generator)
        step = batch_size - n_synth
        for start in range(0, len(order), step):
            batch = real_pairs(images, masks, pairs[order[start:start + step]], synth, generator)
            if n_synth:
                idx = torch.randint(len(images), (n_synth,), generator=generator)
                batch = _cat(make_pairs(images[idx], masks[idx], synth, generator), batch)
            yield batch

    return synthetic_only if n_synth == batch_size else mixed


def make_loss_fn(cfg: SFNetLossConfig = SFNetLossConfig()) -> Callable[[nn.Module, SyntheticBatch | MaskedPairs],
                                                                      tuple[torch.Tensor, dict]]:
    """loss_fn(model, batch) for :func:`training.fit` (Lee et al. Eq. 4) -> (loss, its three unweighted terms);
    moves the batch to the model."""

    def loss_fn(model: nn.Module, batch: SyntheticBatch) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = batch.to(device)
        loss, parts = sfnet_loss(model(batch.src, batch.trg), batch.src_mask, batch.trg_mask, cfg)
        return loss, {f"loss_{k}": v for k, v in parts.items()}  # each term per epoch in train_log.csv

    return loss_fn


def train_sfnet(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, train_cfg: TrainConfig,
                out_dir: str | Path, device: torch.device, synth: SyntheticConfig = SyntheticConfig(),
                loss_cfg: SFNetLossConfig = SFNetLossConfig(), extra_fingerprint: dict | None = None,
                pairs: torch.Tensor | None = None, synthetic_fraction: float = 1.0) -> TrainResult:
    """Convenience: :func:`training.fit` with this module's batches and loss."""
    extra = {"method": "sfnet", "synthetic": repr(synth), "loss": repr(loss_cfg), "n_images": len(images),
             "image_hw": list(images.shape[-2:]), "synthetic_fraction": synthetic_fraction,
             "n_pairs": 0 if pairs is None else len(pairs), **(extra_fingerprint or {})}
    batches = make_batches(images, masks, train_cfg.batch_size, synth, pairs, synthetic_fraction)
    return fit(model, make_loss_fn(loss_cfg), batches, train_cfg, out_dir, device, extra_fingerprint=extra,
               desc="sfnet")
