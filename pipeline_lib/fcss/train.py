"""Weakly supervised FCSS training through the shared loop (:func:`pipeline_lib.training.fit`).

Kim et al. Sec. 3.4 train on image pairs of the same object class. Per pair: FCSS descriptors of
both images, forward-backward NN consistency inside the two object regions gives positive and
negative cell pairs, N of them are drawn at random, and the correspondence contrastive loss is
applied to their descriptors. The object region comes from the dataset: an exact object mask
(``ImageRecord.mask_path``, the demo), else the pair's object boxes (PF-PASCAL, SPair-71k), else
the tight box of the valid keypoints (PF-WILLOW's own box convention, ``keypoint_box``).
Keypoint *correspondences* are never used.

Randomness: the batch order comes from fit's generator, and every batch carries a seed drawn from
it for its sample selection, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets.base import DatasetIndex, ImageRecord, Pair, keypoint_box, load_mask, load_rgb
from ..features import resize_image
from ..geometry import scale_points
from ..kernels.grids import cell_centres
from ..training import TrainConfig, TrainResult, fit
from .loss import MARGIN, contrastive_loss
from .model import FCSS
from .supervision import (CONSISTENCY_TOLERANCE_CELLS, N_SAMPLES, POSITIVE_FRACTION, consistency_sets,
                          sample_pairs)

log = logging.getLogger(__name__)
REGION_SOURCES = ("auto", "mask", "box", "image")
SEED_HIGH = 2**62  # per-batch sample-selection seeds are drawn from [0, SEED_HIGH)
SHIFT_PARAM_SUFFIXES = (".src_offsets", ".trg_offsets")  # CSSLayer's W_s and W_t (Kim et al. Eq. 4)


@dataclass(frozen=True)
class FCSSTrainConfig:
    """Weak-supervision settings (schema section ``fcss.train``)."""

    longer_side: int = 128  # training image size (px); not given by Kim et al.
    split: str = "train"  # which pairs of the dataset to train on
    region: str = "auto"  # object prior: auto | mask | box | image (see module docstring)
    n_samples: int = N_SAMPLES  # Kim et al. Sec. 4.1: N = 1024 per image pair
    positive_fraction: float = POSITIVE_FRACTION  # ours: half positives, the rest negatives
    margin: float = MARGIN  # Kim et al. Sec. 4.1: C = 0.2
    tolerance_cells: float = CONSISTENCY_TOLERANCE_CELLS  # authors' release: 6 px (Kim et al.: exact)
    both_directions: bool = True  # Kim et al.: "running NN search twice"
    max_pairs: int = 0  # 0 = every pair of the split

    def __post_init__(self):
        if self.region not in REGION_SOURCES:
            raise ValueError(f"fcss.train.region must be one of {REGION_SOURCES}, got '{self.region}'")
        if self.longer_side < 16:
            raise ValueError(f"fcss.train.longer_side must be >= 16 px, got {self.longer_side}")
        if self.n_samples < 1 or not 0 <= self.positive_fraction <= 1 or self.margin < 0 or self.tolerance_cells < 0:
            raise ValueError(f"fcss.train: need n_samples >= 1, positive_fraction in [0, 1], margin >= 0 and "
                             f"tolerance_cells >= 0; got {self}")
        if self.max_pairs < 0:
            raise ValueError(f"fcss.train.max_pairs must be >= 0, got {self.max_pairs}")


@dataclass(frozen=True)
class TrainPair:
    """One training pair at training resolution: images (3, H, W) in [0, 1], regions (H, W) bool."""

    pair_id: str
    src_image: torch.Tensor
    trg_image: torch.Tensor
    src_region: torch.Tensor
    trg_region: torch.Tensor


@dataclass(frozen=True)
class TrainBatch:
    pairs: tuple[TrainPair, ...]
    seed: int


def box_region(box: np.ndarray, original_hw: tuple[int, int], resized_hw: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: pixels of the resized image whose centre lies in the xyxy ``box`` (original pixels)."""
    corners = scale_points(np.asarray(box, dtype=np.float64).reshape(2, 2), original_hw, resized_hw)
    (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
    ys = torch.arange(resized_hw[0], dtype=torch.float64)[:, None]
    xs = torch.arange(resized_hw[1], dtype=torch.float64)[None, :]
    return (xs >= x0 - 0.5) & (xs <= x1 + 0.5) & (ys >= y0 - 0.5) & (ys <= y1 + 0.5)


def mask_region(mask: np.ndarray, resized_hw: tuple[int, int]) -> torch.Tensor:
    """(H0, W0) bool object mask -> (H, W) bool at the resized resolution (nearest)."""
    t = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(resized_hw), mode="nearest")[0, 0] > 0.5


def cells_in_region(region: torch.Tensor, map_hw: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool image region -> (h, w) bool: the cells of an (h, w) map whose centre is in it."""
    h_img, w_img = region.shape
    xy = cell_centres(map_hw[0], map_hw[1], (h_img, w_img), device=region.device, dtype=torch.float32)
    col = xy[:, 0].round().long().clamp(0, w_img - 1)
    row = xy[:, 1].round().long().clamp(0, h_img - 1)
    return region[row, col].reshape(map_hw)


def _region(source: str, rec: ImageRecord, box: np.ndarray | None, kps: np.ndarray, valid: np.ndarray,
            resized_hw: tuple[int, int]) -> torch.Tensor:
    if source == "image":
        return torch.ones(resized_hw, dtype=torch.bool)
    if source == "mask":
        if rec.mask_path is None:
            raise ValueError(f"fcss.train.region = mask, but image '{rec.image_id}' has no object mask; "
                             f"use region: box or auto.")
        return mask_region(load_mask(rec.mask_path), resized_hw)
    if box is None:  # no object box in the layout: the tight keypoint box, PF-WILLOW's convention
        box = keypoint_box(kps, valid)
    return box_region(box, (rec.height, rec.width), resized_hw)


def build_training_pairs(index: DatasetIndex, cfg: FCSSTrainConfig) -> list[TrainPair]:
    """Load, resize and attach object regions to the pairs of ``cfg.split`` (each image read once)."""
    pairs: list[Pair] = [p for p in index.pairs if p.split == cfg.split]
    if cfg.max_pairs:
        pairs = pairs[:cfg.max_pairs]
    if not pairs:
        raise ValueError(f"FCSS training: dataset {index.name} has no pairs in split '{cfg.split}'; set "
                         f"dataset.split so that training pairs exist, or fcss.train.split.")
    images: dict[str, torch.Tensor] = {}

    def image(key: str) -> torch.Tensor:
        if key not in images:
            images[key] = resize_image(load_rgb(index.images[key].path), cfg.longer_side)
        return images[key]

    out = []
    for p in pairs:
        s_rec, t_rec = index.images[p.src], index.images[p.trg]
        source = cfg.region
        if source == "auto":
            source = "mask" if s_rec.mask_path is not None and t_rec.mask_path is not None else "box"
        s_img, t_img = image(p.src), image(p.trg)
        out.append(TrainPair(
            p.pair_id, s_img, t_img,
            _region(source, s_rec, p.src_box, p.src_kps, p.valid, tuple(s_img.shape[1:])),
            _region(source, t_rec, p.trg_box, p.trg_kps, p.valid, tuple(t_img.shape[1:]))))
    log.info("FCSS training: %d pairs of split '%s' from %s (%d images, region %s)", len(out), cfg.split,
             index.name, len(images), cfg.region)
    return out


def make_batches(pairs: Sequence[TrainPair], batch_size: int) -> Callable[[int, torch.Generator], Iterator[TrainBatch]]:
    """``batches(epoch, generator)`` for :func:`fit`: shuffled pairs in groups of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"make_batches: batch_size must be >= 1, got {batch_size}")
    pairs = tuple(pairs)

    def batches(epoch: int, gen: torch.Generator) -> Iterator[TrainBatch]:
        order = torch.randperm(len(pairs), generator=gen).tolist()
        for start in range(0, len(order), batch_size):
            seed = int(torch.randint(0, SEED_HIGH, (1,), generator=gen))
            yield TrainBatch(tuple(pairs[i] for i in order[start:start + batch_size]), seed)

    return batches


@dataclass(frozen=True)
class PairSamples:
    """What one pair's samples did: counts, and how many negatives were inside the margin (those are the
    only negatives with a gradient, Kim et al. Eq. 13) and the positives' mean squared distance."""

    n_pos: int
    n_neg: int
    n_active_neg: int
    pos_d2: float


def pair_loss(model: FCSS, pair: TrainPair, cfg: FCSSTrainConfig, generator: torch.Generator,
              device: torch.device) -> tuple[torch.Tensor, PairSamples]:
    """Loss of one pair and what its samples did."""
    src_img, trg_img = pair.src_image.to(device), pair.trg_image.to(device)
    if src_img.shape == trg_img.shape:
        desc = model(torch.stack([src_img, trg_img]))
        src_desc, trg_desc = desc[0], desc[1]
    else:
        src_desc, trg_desc = model(src_img[None])[0], model(trg_img[None])[0]
    src_cells = cells_in_region(pair.src_region.to(device), tuple(src_desc.shape[1:]))
    trg_cells = cells_in_region(pair.trg_region.to(device), tuple(trg_desc.shape[1:]))
    sets = consistency_sets(src_desc, trg_desc, src_cells, trg_cells, cfg.tolerance_cells, cfg.both_directions)
    s, t, labels = sample_pairs(sets, cfg.n_samples, cfg.positive_fraction, generator)
    dim = src_desc.shape[0]
    a = src_desc.reshape(dim, -1)[:, s].T
    b = trg_desc.reshape(dim, -1)[:, t].T
    with torch.no_grad():
        d2 = (a - b).pow(2).sum(1)
        pos = labels.to(torch.bool)
        samples = PairSamples(int(pos.sum()), int((~pos).sum()), int(((~pos) & (d2 < cfg.margin)).sum()),
                              float(d2[pos].mean()) if pos.any() else float("nan"))
    return contrastive_loss(a, b, labels, cfg.margin), samples


def shift_parameters(model: FCSS) -> dict[str, torch.Tensor]:
    """{parameter name: (P, 2) shifts in cells} of every CSS layer's two sampling streams (W_s, W_t)."""
    return {name: p for name, p in model.named_parameters() if name.endswith(SHIFT_PARAM_SUFFIXES)}


def shift_displacement(model: FCSS, initial: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean Euclidean distance (cells of each level's map) of every sampling shift from ``initial``."""
    now = shift_parameters(model)
    if set(now) != set(initial):
        raise ValueError(f"shift_displacement: initial shifts {sorted(initial)} do not match the model's {sorted(now)}")
    return torch.cat([(now[k].detach() - initial[k].to(now[k])).norm(dim=-1) for k in sorted(now)]).mean()


def make_loss_fn(cfg: FCSSTrainConfig, initial_shifts: dict[str, torch.Tensor] | None = None
                 ) -> Callable[[FCSS, TrainBatch], tuple[torch.Tensor, dict]]:
    """``loss_fn(model, batch) -> (loss, metrics)`` for :func:`fit`: the mean of Kim et al. Eq. 13 over the
    batch's pairs, and what tells whether the model can learn from them: ``positive_share`` (consistent
    matches among the samples), ``active_negative_share`` (negatives inside the margin: the only ones
    with a gradient), ``positive_d2`` (mean squared descriptor distance of the positives) and, with
    ``initial_shifts`` (:func:`shift_parameters` before training, cloned), ``shift_displacement_cells``:
    how far the sampling shifts moved (mean over patterns, cells)."""

    def loss_fn(model: FCSS, batch: TrainBatch):
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(batch.seed)
        losses, samples = [], []
        for pair in batch.pairs:
            loss, done = pair_loss(model, pair, cfg, gen, device)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("pair %s: %s, loss %.5f", pair.pair_id, done, loss.detach().item())
            losses.append(loss)
            samples.append(done)
        n_pos, n_neg = sum(x.n_pos for x in samples), sum(x.n_neg for x in samples)
        pos_d2 = [x.pos_d2 for x in samples if x.n_pos]
        metrics = {"positive_share": n_pos / max(1, n_pos + n_neg),
                   "active_negative_share": sum(x.n_active_neg for x in samples) / max(1, n_neg),
                   "positive_d2": float(np.mean(pos_d2)) if pos_d2 else float("nan")}
        if initial_shifts is not None:
            metrics["shift_displacement_cells"] = shift_displacement(model, initial_shifts)
        return torch.stack(losses).mean(), metrics

    return loss_fn


def train_fcss(model: FCSS, pairs: Sequence[TrainPair], train_cfg: TrainConfig, cfg: FCSSTrainConfig,
               out_dir: str | Path, device: torch.device, extra_fingerprint: dict | None = None) -> TrainResult:
    """Train ``model`` with :func:`fit` (checkpoints, resume, CSV log and loss curve in ``out_dir``)."""
    fingerprint = {"fcss_train": asdict(cfg), "layers": list(model.layers), "backbone": model.backbone.name,
                   "n_pairs": len(pairs), **(extra_fingerprint or {})}
    initial = {k: v.detach().clone() for k, v in shift_parameters(model).items()}  # the seeded start, also on resume
    return fit(model, make_loss_fn(cfg, initial), make_batches(pairs, train_cfg.batch_size), train_cfg, out_dir,
               device, extra_fingerprint=fingerprint, desc="fcss")


def with_shift_lr(train_cfg: TrainConfig, model: FCSS, shift_lr: float | None) -> TrainConfig:
    """``train_cfg`` with the sampling shifts of every CSS layer in their own learning-rate group
    (``TrainConfig.lr_groups``); ``None`` leaves them at the base rate."""
    if shift_lr is None:
        return train_cfg
    if shift_lr < 0:
        raise ValueError(f"fcss.shift_lr must be >= 0, got {shift_lr}")
    groups = tuple((name, float(shift_lr)) for name in shift_parameters(model))
    return replace(train_cfg, lr_groups=groups + tuple(train_cfg.lr_groups))
