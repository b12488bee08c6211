"""CNNGeometric: the affine and TPS regression networks trained on synthetic warps (Rocco et al. 2017),
the stage WeakAlign starts from (Rocco et al. 2018 Sec. 4.1: "The network is initialized with the
pre-trained weights from [26] ... trained in a self-supervised way from synthetic data").

Self-supervision: any image (no label) is warped by a random transform whose parameters are known;
the pair (image, warped image) is fed to the network and the known parameters are the target. The
loss is CNNGeometric's grid loss: the mean squared distance between a virtual grid of points mapped
by the predicted and by the true transform (authors' ``TransformedGridLoss``, 20 x 20 points on
[-1, 1]^2, squared distance summed over x and y, averaged over points and the batch). It is zero
exactly when the two maps agree on the grid.

Random transforms (the authors' release ``ignacio-rocco/cnngeometric_pytorch``,
``data/synth_dataset.py`` with ``random_sample=True``; the CNNGeometric paper itself is not in
``../shared/papers``, so the release's defaults are the reference values here):

- affine, backward map T(q) = A q + t: a rotation alpha ~ U(-pi/6, pi/6); each of the four entries of
  the rotation matrix multiplied by its own factor 1 + U(-0.5, 0.5); t ~ U(-0.5, 0.5)^2 (normalised
  image units, i.e. up to a quarter of the image side);
- thin-plate spline: the 3 x 3 control points of the identity moved by U(-0.4, 0.4) each, x and y.

The pair is made as in the release (``SynthPairTnf``): source = the central ``crop_factor`` part of
the image (9/16), target = the image sampled at crop_factor * T(q) for every target point q, with
reflection outside the image (the release pads symmetrically). Both live in the same cropped
coordinates, so the backward map target -> source is exactly T, the convention of
:class:`pipeline_lib.weakalign.model.WeakAlign`.

Fixed synthetic set (``fixed_warps`` > 0): the release trains on a fixed list of random transforms
(``training_pairs`` CSVs, ``random_sample=False``, its default), 10 epochs over 40k pairs. With a frozen
backbone the features of a fixed set never change, so :func:`fixed_synthetic_features` computes them once
(``fixed_warps`` affine and TPS warps per image, one feature map of each image's source crop) and every epoch
trains the regression heads on them: an epoch is one pass over the image x warp pairs and costs no backbone
forward, so hundreds of steps fit a CPU budget.

Training the two heads (the release trains two separate networks, one per transform): the affine
head regresses the affine of (source, affine-warped target); the TPS head regresses the TPS of
(source, TPS-warped target) from their correlation directly. At inference the TPS head sees the
affine-warped source (the two-stage model), as in Rocco et al. 2018.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..kernels.warps import affine_points, identity_affine, identity_tps, tps_points
from ..training import TrainConfig, TrainResult, fit
from .model import TPS_GRID_SIZE, WeakAlign, normalised_correlation

log = logging.getLogger(__name__)

# Authors' release (cnngeometric_pytorch data/synth_dataset.py, random_sample=True defaults):
AFFINE_ROTATION_MAX_DEG = 30.0  # random_alpha = 1/6: alpha ~ U(-pi/6, pi/6)
AFFINE_SCALE_JITTER = 0.5  # random_s: every matrix entry scaled by 1 + U(-0.5, 0.5)
AFFINE_TRANSLATION_MAX = 0.5  # random_t: t ~ U(-0.5, 0.5) in normalised units
TPS_JITTER = 0.4  # random_t_tps: control points moved by U(-0.4, 0.4)
CROP_FACTOR = 9.0 / 16.0  # SynthPairTnf crop_factor: both images show the central 9/16 of the padded image
GRID_LOSS_POINTS = 20  # TransformedGridLoss grid_size: 20 x 20 points on [-1, 1]^2
PAPER_LR = 1e-3  # cnngeometric_pytorch train.py default (Adam)
PAPER_BATCH_SIZE = 16  # cnngeometric_pytorch train.py default


@dataclass(frozen=True)
class WarpRanges:
    """Ranges of the random transforms (defaults: the authors' release, see module docstring)."""

    affine_rotation_deg: float = AFFINE_ROTATION_MAX_DEG
    affine_scale: float = AFFINE_SCALE_JITTER
    affine_translation: float = AFFINE_TRANSLATION_MAX
    tps_jitter: float = TPS_JITTER
    crop_factor: float = CROP_FACTOR

    def __post_init__(self):
        if not 0 <= self.affine_rotation_deg <= 180:
            raise ValueError(f"cnngeometric.affine_rotation_deg must be in [0, 180], got {self.affine_rotation_deg}")
        if not 0 <= self.affine_scale < 1:
            raise ValueError(f"cnngeometric.affine_scale must be in [0, 1) (a factor 1 - scale must stay > 0), "
                             f"got {self.affine_scale}")
        if self.affine_translation < 0 or self.tps_jitter < 0:
            raise ValueError(f"cnngeometric.affine_translation and tps_jitter must be >= 0, got "
                             f"{self.affine_translation}, {self.tps_jitter}")
        if not 0 < self.crop_factor <= 1:
            raise ValueError(f"cnngeometric.crop_factor must be in (0, 1], got {self.crop_factor}")


# --------------------------------------------------------------------------- random transforms


def _uniform(shape, half_width: float, generator: torch.Generator) -> torch.Tensor:
    """U(-half_width, half_width) of ``shape`` (CPU)."""
    return (2 * torch.rand(shape, generator=generator) - 1) * half_width


def random_affine(batch: int, ranges: WarpRanges, generator: torch.Generator) -> torch.Tensor:
    """(B, 6) random affine parameters [a11 a12 tx a21 a22 ty] (authors' release sampling)."""
    alpha = _uniform((batch,), math.radians(ranges.affine_rotation_deg), generator)
    scale = 1 + _uniform((batch, 4), ranges.affine_scale, generator)
    t = _uniform((batch, 2), ranges.affine_translation, generator)
    c, s = torch.cos(alpha), torch.sin(alpha)
    return torch.stack([scale[:, 0] * c, -scale[:, 1] * s, t[:, 0], scale[:, 2] * s, scale[:, 3] * c, t[:, 1]], 1)


def random_tps(batch: int, ranges: WarpRanges, generator: torch.Generator,
               grid_size: int = TPS_GRID_SIZE) -> torch.Tensor:
    """(B, 2 g^2) random TPS parameters: identity control points + U(-jitter, jitter)."""
    ident = identity_tps(batch, grid_size)
    return ident + _uniform(tuple(ident.shape), ranges.tps_jitter, generator)


# --------------------------------------------------------------------------- synthetic pairs


def _points_grid(hw: tuple[int, int], dtype, device) -> torch.Tensor:
    """(H*W, 2) normalised xy of the pixel centres of an (H, W) image (align_corners=False)."""
    h, w = hw
    ys = (torch.arange(h, dtype=dtype, device=device) + 0.5) * (2.0 / h) - 1
    xs = (torch.arange(w, dtype=dtype, device=device) + 0.5) * (2.0 / w) - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def warp_points(kind: str, theta: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """The backward map of an ``affine`` or ``tps`` transform at (B, M, 2) normalised points."""
    if kind == "affine":
        return affine_points(theta, pts)
    if kind == "tps":
        return tps_points(theta, pts)
    raise ValueError(f"transform kind must be 'affine' or 'tps', got '{kind}'")


def synthetic_pair(images: torch.Tensor, kind: str, theta: torch.Tensor,
                   crop_factor: float = CROP_FACTOR) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) of (B, 3, H, W) images warped by known (B, K) parameters.

    source(q) = image(crop * q); target(q) = image(crop * T(q)) (reflection outside the image), so the
    backward map target -> source in the cropped coordinates is T.
    """
    if images.ndim != 4 or images.shape[0] != theta.shape[0]:
        raise ValueError(f"synthetic_pair: images (B, 3, H, W) and theta (B, K) with the same B, got "
                         f"{tuple(images.shape)} and {tuple(theta.shape)}")
    b, _, h, w = images.shape
    q = _points_grid((h, w), images.dtype, images.device)[None].expand(b, -1, -1)
    trg_grid = (crop_factor * warp_points(kind, theta.to(images), q)).view(b, h, w, 2)
    return source_crop(images, crop_factor), F.grid_sample(images, trg_grid, **_SAMPLE)


_SAMPLE = dict(mode="bilinear", padding_mode="reflection", align_corners=False)  # the release pads symmetrically


def source_crop(images: torch.Tensor, crop_factor: float = CROP_FACTOR) -> torch.Tensor:
    """The source of every synthetic pair of (B, 3, H, W) images: image(crop * q), their central part."""
    b, _, h, w = images.shape
    q = _points_grid((h, w), images.dtype, images.device)[None].expand(b, -1, -1)
    return F.grid_sample(images, (crop_factor * q).view(b, h, w, 2), **_SAMPLE)


# --------------------------------------------------------------------------- loss


def loss_grid(grid_size: int = GRID_LOSS_POINTS, device=None, dtype=None) -> torch.Tensor:
    """(g*g, 2) virtual grid of the grid loss: g points per side on [-1, 1] (authors' release)."""
    axis = torch.linspace(-1, 1, grid_size, device=device, dtype=dtype or torch.get_default_dtype())
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


def grid_loss(kind: str, theta_pred: torch.Tensor, theta_true: torch.Tensor,
              grid_size: int = GRID_LOSS_POINTS) -> torch.Tensor:
    """CNNGeometric's transformed-grid loss: mean over grid points and batch of |T_pred(p) - T_true(p)|^2."""
    if theta_pred.shape != theta_true.shape:
        raise ValueError(f"grid_loss: predicted {tuple(theta_pred.shape)} and true {tuple(theta_true.shape)} "
                         f"parameters differ in shape")
    p = loss_grid(grid_size, theta_pred.device, theta_pred.dtype)[None].expand(theta_pred.shape[0], -1, -1)
    d = warp_points(kind, theta_pred, p) - warp_points(kind, theta_true.to(theta_pred), p)
    return d.pow(2).sum(-1).mean()


# --------------------------------------------------------------------------- the two heads on a pair


def regress_features(model: WeakAlign, f_src: torch.Tensor, f_trg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta_aff, theta_tps) that each head regresses from the correlation of (B, C, h, w) normalised features
    (``model.features``) of a source and a target, *directly* (no affine pre-warp)."""
    b = f_src.shape[0]
    corr = normalised_correlation(f_src, f_trg)
    theta_aff = identity_affine(b, f_src.device, f_src.dtype) + model.regress_affine(corr)
    theta_tps = identity_tps(b, model.tps_grid_size, f_src.device, f_src.dtype) + model.regress_tps(corr)
    return theta_aff, theta_tps


def regress_pair(model: WeakAlign, src: torch.Tensor, trg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta_aff, theta_tps) that each head regresses from the correlation of images (src, trg) *directly*
    (no affine pre-warp): how CNNGeometric trains each network on its own synthetic pairs."""
    b = src.shape[0]
    feats = model.features(torch.cat([model.resize(src), model.resize(trg)]))
    return regress_features(model, feats[:b], feats[b:])


# --------------------------------------------------------------------------- training through fit


@dataclass
class SyntheticBatch:
    """Images warped by known transforms: affine pairs (src_aff, trg_aff, theta_aff) and TPS pairs."""

    src_aff: torch.Tensor
    trg_aff: torch.Tensor
    theta_aff: torch.Tensor
    src_tps: torch.Tensor
    trg_tps: torch.Tensor
    theta_tps: torch.Tensor

    def to(self, device) -> "SyntheticBatch":
        return SyntheticBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def make_batches(images: torch.Tensor, batch_size: int, ranges: WarpRanges = WarpRanges(),
                 tps_grid_size: int = TPS_GRID_SIZE) -> Callable[[int, torch.Generator], Iterator[SyntheticBatch]]:
    """Batches factory for :func:`training.fit`: every epoch each image once (shuffled), each giving one
    affine and one TPS pair with fresh random parameters (CPU tensors)."""
    if batch_size < 1:
        raise ValueError(f"cnngeometric batch_size must be >= 1, got {batch_size}")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"cnngeometric: need (N >= 1, 3, S, S) training images, got {tuple(images.shape)}")

    def batches(epoch: int, generator: torch.Generator) -> Iterator[SyntheticBatch]:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), batch_size):
            img = images[order[start:start + batch_size]]
            th_aff = random_affine(len(img), ranges, generator)
            th_tps = random_tps(len(img), ranges, generator, tps_grid_size)
            yield SyntheticBatch(*synthetic_pair(img, "affine", th_aff, ranges.crop_factor), th_aff,
                                 *synthetic_pair(img, "tps", th_tps, ranges.crop_factor), th_tps)

    return batches


def make_loss_fn(grid_size: int = GRID_LOSS_POINTS) -> Callable[[nn.Module, SyntheticBatch], tuple]:
    """loss_fn(model, batch) for :func:`training.fit`: grid loss of the affine head on the affine pairs
    plus grid loss of the TPS head on the TPS pairs; logs both parts per epoch."""

    def loss_fn(model: nn.Module, batch: SyntheticBatch):
        batch = batch.to(next(model.parameters()).device)
        theta_aff, _ = regress_pair(model, batch.src_aff, batch.trg_aff)
        _, theta_tps = regress_pair(model, batch.src_tps, batch.trg_tps)
        l_aff = grid_loss("affine", theta_aff, batch.theta_aff, grid_size)
        l_tps = grid_loss("tps", theta_tps, batch.theta_tps, grid_size)
        return l_aff + l_tps, {"grid_loss_affine": l_aff.detach(), "grid_loss_tps": l_tps.detach()}

    return loss_fn


@dataclass
class SyntheticFeatures:
    """Features of a fixed synthetic set: ``src`` (N, C, h, w) of each image's source crop; ``trg_aff`` and
    ``trg_tps`` (N * R, C, h, w) of its R warps of each kind (warp r of image i at row r * N + i), with their
    parameters ``theta_aff`` (N * R, 6) and ``theta_tps`` (N * R, 2 g^2). All on the CPU."""

    src: torch.Tensor
    trg_aff: torch.Tensor
    theta_aff: torch.Tensor
    trg_tps: torch.Tensor
    theta_tps: torch.Tensor

    def __len__(self) -> int:
        return len(self.trg_aff)


@torch.no_grad()
def fixed_synthetic_features(model: WeakAlign, images: torch.Tensor, warps_per_image: int, ranges: WarpRanges,
                             seed: int, batch_size: int, device: torch.device) -> SyntheticFeatures:
    """The features of ``warps_per_image`` random affine and TPS warps of every image (a fixed set drawn from
    ``seed``), through the model's frozen backbone in batches of ``batch_size`` images."""
    if model.train_backbone:
        raise ValueError("cnngeometric.fixed_warps needs a frozen backbone (weakalign.train_backbone: false): the "
                         "features of a fixed set are computed once")
    if warps_per_image < 1:
        raise ValueError(f"cnngeometric.fixed_warps must be >= 1 for a fixed set, got {warps_per_image}")
    model.eval()
    g = torch.Generator().manual_seed(seed)
    n = len(images)

    def feats(x: torch.Tensor) -> torch.Tensor:
        return model.features(model.resize(x.to(device))).float().cpu()

    src = torch.cat([feats(source_crop(images[i:i + batch_size], ranges.crop_factor)) for i in range(0, n, batch_size)])
    th_aff = torch.cat([random_affine(n, ranges, g) for _ in range(warps_per_image)])
    th_tps = torch.cat([random_tps(n, ranges, g, model.tps_grid_size) for _ in range(warps_per_image)])
    trg_aff, trg_tps = [], []
    for r in tqdm(range(warps_per_image), desc="cnngeometric fixed warps", unit="round"):
        for i in range(0, n, batch_size):
            img, rows = images[i:i + batch_size], slice(r * n + i, r * n + i + min(batch_size, n - i))
            trg_aff.append(feats(synthetic_pair(img, "affine", th_aff[rows], ranges.crop_factor)[1]))
            trg_tps.append(feats(synthetic_pair(img, "tps", th_tps[rows], ranges.crop_factor)[1]))
    return SyntheticFeatures(src, torch.cat(trg_aff), th_aff, torch.cat(trg_tps), th_tps)


def make_feature_batches(fixed: SyntheticFeatures, batch_size: int) -> Callable[[int, torch.Generator], Iterator[tuple]]:
    """Batches factory for :func:`training.fit` over a fixed set: every epoch each (image, warp) once, shuffled;
    a batch is (source features, affine-target features, affine theta, TPS-target features, TPS theta)."""
    if batch_size < 1:
        raise ValueError(f"cnngeometric batch_size must be >= 1, got {batch_size}")
    n = len(fixed.src)

    def batches(epoch: int, generator: torch.Generator) -> Iterator[tuple]:
        order = torch.randperm(len(fixed), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield (fixed.src[rows % n], fixed.trg_aff[rows], fixed.theta_aff[rows], fixed.trg_tps[rows],
                   fixed.theta_tps[rows])

    return batches


def make_feature_loss_fn(grid_size: int = GRID_LOSS_POINTS) -> Callable[[nn.Module, tuple], tuple]:
    """loss_fn(model, batch) for :func:`training.fit` on :func:`make_feature_batches`: the same grid losses as
    :func:`make_loss_fn`, from the cached features."""

    def loss_fn(model: nn.Module, batch: tuple):
        device = next(model.parameters()).device
        f_src, f_aff, th_aff, f_tps, th_tps = (t.to(device) for t in batch)
        theta_aff, _ = regress_features(model, f_src, f_aff)
        _, theta_tps = regress_features(model, f_src, f_tps)
        l_aff = grid_loss("affine", theta_aff, th_aff, grid_size)
        l_tps = grid_loss("tps", theta_tps, th_tps, grid_size)
        return l_aff + l_tps, {"grid_loss_affine": l_aff.detach(), "grid_loss_tps": l_tps.detach()}

    return loss_fn


def identity_grid_loss(images: torch.Tensor, ranges: WarpRanges, seed: int = 0, tps_grid_size: int = TPS_GRID_SIZE,
                       grid_size: int = GRID_LOSS_POINTS) -> dict[str, float]:
    """Grid loss of always predicting the identity on random transforms (the floor a trained model
    must beat): {"affine": ..., "tps": ...}."""
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    th_aff, th_tps = random_affine(n, ranges, g), random_tps(n, ranges, g, tps_grid_size)
    return {"affine": float(grid_loss("affine", identity_affine(n), th_aff, grid_size)),
            "tps": float(grid_loss("tps", identity_tps(n, tps_grid_size), th_tps, grid_size))}


def train_cnngeometric(model: WeakAlign, images: torch.Tensor, train_cfg: TrainConfig, out_dir: str | Path,
                       device: torch.device, ranges: WarpRanges = WarpRanges(), grid_size: int = GRID_LOSS_POINTS,
                       extra_fingerprint: dict | None = None, fixed_warps: int = 0) -> TrainResult:
    """:func:`training.fit` with this module's grid loss: on fresh random warps of ``images`` every epoch
    (``fixed_warps`` 0), or on the cached features of a fixed set of ``fixed_warps`` warps per image."""
    extra = {"method": "cnngeometric", "ranges": repr(ranges), "grid_size": grid_size, "n_images": len(images),
             "image_hw": list(images.shape[-2:]), "fixed_warps": fixed_warps, **(extra_fingerprint or {})}
    if fixed_warps:
        model.to(device)
        t0 = time.perf_counter()
        fixed = fixed_synthetic_features(model, images, fixed_warps, ranges, train_cfg.seed, train_cfg.batch_size,
                                         device)
        log.info("CNNGeometric fixed set: %d images x %d warps of each kind, features %s computed in %.1f s (%.0f MB)",
                 len(images), fixed_warps, tuple(fixed.src.shape[1:]), time.perf_counter() - t0,
                 sum(t.numel() * t.element_size() for t in (fixed.src, fixed.trg_aff, fixed.trg_tps)) / 2 ** 20)
        loss_fn, batches = make_feature_loss_fn(grid_size), make_feature_batches(fixed, train_cfg.batch_size)
    else:
        loss_fn = make_loss_fn(grid_size)
        batches = make_batches(images, train_cfg.batch_size, ranges, model.tps_grid_size)
    return fit(model, loss_fn, batches, train_cfg, out_dir, device, extra_fingerprint=extra, desc="cnngeometric")
