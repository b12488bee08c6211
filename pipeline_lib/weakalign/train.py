"""WeakAlign training through the shared loop (:func:`pipeline_lib.training.fit`).

Weak supervision (Rocco et al. 2018 Sec. 3): only the fact that two images show the same category.
The training pairs are the dataset's pairs of the training split (same category by construction),
never their keypoints. Images are resized once to the model's square ``image_size`` and kept in
memory. Augmentation (Rocco et al. Sec. 4.1 "horizontal flipping, swapping the source and target
images, and random cropping"; the probabilities and crop size are our choice): both images
flipped together, source and target swapped, each image cropped to a random square of at least
``1 - crop_fraction`` of its side and resized back.

Typical use::

    images, pair_index = load_pair_images(index, training_pairs(index), cfg.image_size)
    fit(model, make_loss_fn(), make_batches(images, pair_index, batch_size), train_cfg, out_dir, device)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import to_tensor
from ..config import ConfigError, section
from ..datasets import DatasetIndex, Pair, load_rgb
from ..datasets import training_pairs as dataset_training_pairs
from ..training import TrainConfig, TrainResult, fit
from .losses import WeakAlignLossConfig, weakalign_loss
from .model import WeakAlignConfig

log = logging.getLogger(__name__)
PAPER_LR = 5e-8  # Rocco et al. 2018 Sec. 4.1 (fine-tuning a CNNGeometric model, backbone included)
PAPER_BATCH_SIZE = 16  # Rocco et al. 2018 Sec. 4.1


@dataclass(frozen=True)
class AugmentConfig:
    swap_prob: float = 0.5
    flip_prob: float = 0.5
    crop_fraction: float = 0.1

    def __post_init__(self):
        for k in ("swap_prob", "flip_prob"):
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"weakalign {k} must be in [0, 1], got {getattr(self, k)}")
        if not 0 <= self.crop_fraction < 1:
            raise ValueError(f"weakalign crop_fraction must be in [0, 1), got {self.crop_fraction}")


@dataclass
class PairBatch:
    """src, trg: (B, 3, S, S) float images in [0, 1]."""

    src: torch.Tensor
    trg: torch.Tensor

    def to(self, device) -> "PairBatch":
        return PairBatch(self.src.to(device), self.trg.to(device))


@dataclass(frozen=True)
class WeakAlignSettings:
    """Everything one config section ``weakalign`` sets (see :func:`settings_from_config`)."""

    model: WeakAlignConfig
    augment: AugmentConfig
    loss: WeakAlignLossConfig
    train: TrainConfig
    transfer: str = "swap"


TRAIN_KEYS = ("epochs", "lr", "batch_size", "weight_decay")
DEFAULT_LR = PAPER_LR  # fine-tuning from the CNNGeometric checkpoint (stage train_cnngeometric), as the paper


def settings_from_config(weakalign: Mapping[str, Any], seed: int = 0) -> WeakAlignSettings:
    """Split a flat config section into the dataclasses (unknown keys are an error).

    Keys: those of :class:`WeakAlignConfig`, :class:`AugmentConfig` and :class:`WeakAlignLossConfig`,
    ``transfer`` (``swap`` or ``invert``, see :mod:`.predict`) and the :class:`TrainConfig` keys
    ``epochs, lr, batch_size, weight_decay`` (defaults: the paper's lr 5e-8 and batch size 16).
    """
    names = {"model": {f.name for f in fields(WeakAlignConfig)}, "augment": {f.name for f in fields(AugmentConfig)},
             "loss": {f.name for f in fields(WeakAlignLossConfig)}, "train": set(TRAIN_KEYS)}
    groups: dict[str, dict] = {g: {} for g in names}
    for key, value in weakalign.items():
        if key == "transfer":
            continue
        group = next((g for g, n in names.items() if key in n), None)
        if group is None:
            raise ConfigError(f"unknown key weakalign.{key}; allowed: {sorted(set().union(*names.values()))} "
                              f"+ transfer")
        groups[group][key] = value
    transfer = weakalign.get("transfer", "swap")
    if transfer not in ("swap", "invert"):
        raise ConfigError(f"weakalign.transfer must be swap or invert, got '{transfer}'")
    train = {"lr": DEFAULT_LR, "batch_size": PAPER_BATCH_SIZE, **groups["train"], "seed": seed}
    return WeakAlignSettings(section(WeakAlignConfig, groups["model"]), section(AugmentConfig, groups["augment"]),
                             section(WeakAlignLossConfig, groups["loss"]), section(TrainConfig, train), transfer)


def training_pairs(index: DatasetIndex, splits: Sequence[str] = ("train",)) -> list[Pair]:
    """The dataset's pairs of ``splits`` (each of one category)."""
    return dataset_training_pairs(index, splits, "WeakAlign")


def load_pair_images(index: DatasetIndex, pairs: Sequence[Pair], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of the pairs, each loaded once -> ((N, 3, S, S) float in [0, 1], (P, 2) long indices
    of every pair's source and target into them)."""
    ids = sorted({k for p in pairs for k in (p.src, p.trg)})
    pos = {k: i for i, k in enumerate(ids)}
    images = torch.stack([
        F.interpolate(to_tensor(load_rgb(index.images[k].path))[None], size=(image_size, image_size),
                      mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1) for k in ids])
    return images, torch.tensor([[pos[p.src], pos[p.trg]] for p in pairs], dtype=torch.long)


def _random_crop(images: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    if fraction == 0:
        return images
    b = images.shape[0]
    side = 1 - fraction * torch.rand(b, generator=generator)
    shift = (1 - side)[:, None] * (2 * torch.rand(b, 2, generator=generator) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = side, side, shift
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(src: torch.Tensor, trg: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> PairBatch:
    """Flip both, swap, crop each (randomness from ``generator``, CPU)."""
    b = src.shape[0]
    flip = (torch.rand(b, generator=generator) < cfg.flip_prob).view(b, 1, 1, 1)
    src, trg = torch.where(flip, src.flip(-1), src), torch.where(flip, trg.flip(-1), trg)
    swap = (torch.rand(b, generator=generator) < cfg.swap_prob).view(b, 1, 1, 1)
    src, trg = torch.where(swap, trg, src), torch.where(swap, src, trg)
    return PairBatch(_random_crop(src, cfg.crop_fraction, generator), _random_crop(trg, cfg.crop_fraction, generator))


def make_batches(images: torch.Tensor, pair_index: torch.Tensor, batch_size: int,
                 aug: AugmentConfig = AugmentConfig()) -> Callable[[int, torch.Generator], Iterator[PairBatch]]:
    """Batches factory for :func:`training.fit`: every epoch, a shuffled pass over the pairs (CPU tensors)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(pair_index) == 0:
        raise ValueError("make_batches: no training pairs")

    def batches(epoch: int, generator: torch.Generator) -> Iterator[PairBatch]:
        order = torch.randperm(len(pair_index), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = pair_index[order[start:start + batch_size]]
            yield augment(images[idx[:, 0]], images[idx[:, 1]], aug, generator)

    return batches


def make_loss_fn(cfg: WeakAlignLossConfig = WeakAlignLossConfig()) -> Callable[[nn.Module, PairBatch], torch.Tensor]:
    """loss_fn(model, batch) for :func:`training.fit`: minus the soft-inlier counts; moves the batch."""

    def loss_fn(model: nn.Module, batch: PairBatch) -> torch.Tensor:
        batch = batch.to(next(model.parameters()).device)
        loss, parts = weakalign_loss(model(batch.src, batch.trg), cfg)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("weakalign loss %.5f (inliers affine %.5f, composed %.5f)", float(loss.detach()),
                      *map(float, parts.values()))
        return loss

    return loss_fn


def train_weakalign(model: nn.Module, images: torch.Tensor, pair_index: torch.Tensor, train_cfg: TrainConfig,
                    out_dir: str | Path, device: torch.device, aug: AugmentConfig = AugmentConfig(),
                    loss_cfg: WeakAlignLossConfig = WeakAlignLossConfig(),
                    extra_fingerprint: dict | None = None) -> TrainResult:
    """Convenience: :func:`training.fit` with this module's batches and loss."""
    extra = {"method": "weakalign", "augment": repr(aug), "loss": repr(loss_cfg), "n_pairs": len(pair_index),
             "image_hw": list(images.shape[-2:]), **(extra_fingerprint or {})}
    return fit(model, make_loss_fn(loss_cfg), make_batches(images, pair_index, train_cfg.batch_size, aug), train_cfg,
               out_dir, device, extra_fingerprint=extra, desc="weakalign")
