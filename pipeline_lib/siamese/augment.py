"""Geometric augmentation of training pairs with consistent flow targets (Gaur et al. Sec. 6).

"During the training epochs, we randomly apply rotations sampled from [-16, 16] degrees and scaling
from [0.9, 2.0] to all the image pairs in the mini-batch, as well as their corresponding
ground-truth data." Each transform is a similarity about the image centre, written as a (3, 3)
matrix M acting on xy pixel coordinates (pixel centres at integers) of the ORIGINAL image and
giving coordinates in the NEW image: new_image(M p) = image(p).

Flow convention: source pixel p corresponds to target point p + F(p). With source transform S and
target transform T the new flow at new-source pixel q is

    F'(q) = T( S^-1 q + F(S^-1 q) ) - q,

where F at the non-integer point S^-1 q is bilinear over valid pixels only (the displacement is
interpolated, so a locally constant flow stays exact next to invalid pixels), and the new mask is
the old mask at the nearest pixel to S^-1 q (False outside the source image), optionally also False
where the new target point T(.) falls outside the target image.

Draws (``AugmentConfig.draw``; the paper does not say): ``same`` transforms both images of a pair with
ONE drawn rotation and scale (each about its own centre), so the flow is rotated and scaled with the
pair; ``independent`` draws one per image, which adds a random relative similarity to every target
(with the paper's ranges up to 32 degrees and a 2.2x relative zoom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.grids import pixel_grid, pixels_to_normalised
from ..kernels.sampling import masked_bilinear

ROTATION_RANGE_DEG = (-16.0, 16.0)  # Gaur et al. Sec. 6
SCALE_RANGE = (0.9, 2.0)  # Gaur et al. Sec. 6
APPLY_TO = ("source", "target", "both")
DRAWS = ("same", "independent")  # one transform per pair, or one per image (apply_to: both)


@dataclass(frozen=True)
class AugmentConfig:
    """Random similarity transforms of training pairs.

    rotation_deg: (min, max) uniform angle in degrees; scale: (min, max) uniform zoom factor (> 1
    enlarges the content); apply_to: which image(s) get a transform (the paper does not
    say; we transform both); draw: with ``both``, ``same`` = one
    rotation and scale for the pair, ``independent`` = one per image; drop_outside: mark flow invalid
    where the new target point leaves the target image (half-pixel border as in the demo's exact flow).
    """

    rotation_deg: tuple[float, float] = ROTATION_RANGE_DEG
    scale: tuple[float, float] = SCALE_RANGE
    apply_to: str = "both"
    drop_outside: bool = True
    draw: str = "independent"

    def __post_init__(self):
        if self.apply_to not in APPLY_TO:
            raise ValueError(f"augment apply_to must be one of {APPLY_TO}, got '{self.apply_to}'")
        if self.draw not in DRAWS:
            raise ValueError(f"augment draw must be one of {DRAWS}, got '{self.draw}'")
        if self.rotation_deg[0] > self.rotation_deg[1] or self.scale[0] > self.scale[1]:
            raise ValueError(f"augment ranges must be (min, max), got rotation {self.rotation_deg}, scale {self.scale}")
        if self.scale[0] <= 0:
            raise ValueError(f"augment scale must be positive, got {self.scale}")


def similarity_matrix(angle_deg: float, scale: float, hw: tuple[int, int], dtype=torch.float64) -> torch.Tensor:
    """(3, 3) map p -> scale * R(angle) (p - c) + c about the centre c = ((W-1)/2, (H-1)/2), xy pixels.

    Positive angles rotate counter-clockwise as displayed (y axis pointing down).
    """
    a = math.radians(angle_deg)
    cos, sin = scale * math.cos(a), scale * math.sin(a)
    cx, cy = (hw[1] - 1) / 2, (hw[0] - 1) / 2
    lin = torch.tensor([[cos, sin], [-sin, cos]], dtype=dtype)
    centre = torch.tensor([cx, cy], dtype=dtype)
    m = torch.eye(3, dtype=dtype)
    m[:2, :2] = lin
    m[:2, 2] = centre - lin @ centre
    return m


def apply_matrix(m: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Apply a (3, 3) affine matrix to (..., 2) xy points."""
    m = m.to(xy)
    return xy @ m[:2, :2].T + m[:2, 2]


def sample_similarity(cfg: AugmentConfig, generator: torch.Generator) -> tuple[float, float]:
    """(angle in degrees ~ U(rotation_deg), scale ~ U(scale)), drawn from ``generator``."""
    u = torch.rand(2, generator=generator, dtype=torch.float64)
    angle = cfg.rotation_deg[0] + float(u[0]) * (cfg.rotation_deg[1] - cfg.rotation_deg[0])
    scale = cfg.scale[0] + float(u[1]) * (cfg.scale[1] - cfg.scale[0])
    return angle, scale


def sample_transform(hw: tuple[int, int], cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A random (3, 3) similarity about the centre of an ``hw`` image (``sample_similarity``)."""
    return similarity_matrix(*sample_similarity(cfg, generator), hw)


def warp_image(image: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(C, H, W) image -> new image with new(m p) = image(p) (bilinear, zeros outside)."""
    if image.ndim != 3:
        raise ValueError(f"warp_image: expected (C, H, W), got {tuple(image.shape)}")
    hw = tuple(image.shape[1:])
    dtype = image.dtype if image.is_floating_point() else torch.float32
    src_xy = apply_matrix(torch.linalg.inv(m.double()), pixel_grid(hw, image.device, torch.float64))
    grid = pixels_to_normalised(src_xy, hw).to(dtype)[None]
    return F.grid_sample(image.to(dtype)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def transform_flow(flow: torch.Tensor, mask: torch.Tensor, src_m: torch.Tensor | None = None,
                   trg_m: torch.Tensor | None = None, trg_hw: tuple[int, int] | None = None,
                   drop_outside: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """New flow and mask after the source is transformed by ``src_m`` and the target by ``trg_m``.

    flow: (H, W, 2) source -> target displacement; mask: (H, W) bool; src_m / trg_m: (3, 3) or
    None (identity). trg_hw: target image size for ``drop_outside`` (default: the source size).
    Returns (H, W, 2) flow and (H, W) mask on the same source grid.
    """
    if flow.ndim != 3 or flow.shape[2] != 2 or tuple(mask.shape) != tuple(flow.shape[:2]):
        raise ValueError(f"transform_flow: expected flow (H, W, 2) and mask (H, W), got {tuple(flow.shape)} "
                         f"and {tuple(mask.shape)}")
    hw = tuple(flow.shape[:2])
    trg_hw = tuple(trg_hw or hw)
    out_dtype = flow.dtype
    work = torch.float64  # exact to ~1e-12 px; these are small per-image tensors
    q = pixel_grid(hw, flow.device, work)
    if src_m is None:
        pos, ok = q + flow.to(work), mask.bool()
    else:
        p = apply_matrix(torch.linalg.inv(src_m.double()), q)  # where new pixel q was in the old source
        # Interpolate the displacement, not the target position: a constant flow stays exact next
        # to invalid pixels (normalised convolution of a linear field would be biased there).
        disp, ok = masked_bilinear(flow.to(work), mask.bool(), pixels_to_normalised(p, hw))
        pos = p + disp
    if trg_m is not None:
        pos = apply_matrix(trg_m.double(), pos)
    if drop_outside:
        ok = ok & (pos[..., 0] >= -0.5) & (pos[..., 0] <= trg_hw[1] - 0.5) & (pos[..., 1] >= -0.5) & \
            (pos[..., 1] <= trg_hw[0] - 0.5)
    new = torch.where(ok[..., None], pos - q, torch.zeros_like(pos))
    return new.to(out_dtype), ok


def augment_pair(src: torch.Tensor, trg: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomly transform one training pair and its flow target consistently.

    src, trg: (3, H, W) float images; flow: (H, W, 2); mask: (H, W) bool. Returns the same four,
    transformed. The draws (source first, then target; one for both with ``cfg.draw == "same"``) come
    from ``generator`` only.
    """
    hw_s, hw_t = tuple(src.shape[1:]), tuple(trg.shape[1:])
    if cfg.apply_to == "both" and cfg.draw == "same":
        angle, scale = sample_similarity(cfg, generator)
        src_m, trg_m = similarity_matrix(angle, scale, hw_s), similarity_matrix(angle, scale, hw_t)
    else:
        src_m = sample_transform(hw_s, cfg, generator) if cfg.apply_to in ("source", "both") else None
        trg_m = sample_transform(hw_t, cfg, generator) if cfg.apply_to in ("target", "both") else None
    new_flow, new_mask = transform_flow(flow, mask, src_m, trg_m, hw_t, cfg.drop_outside)
    if src_m is not None:
        src = warp_image(src, src_m)
    if trg_m is not None:
        trg = warp_image(trg, trg_m)
    return src, trg, new_flow, new_mask


__all__ = ["AugmentConfig", "ROTATION_RANGE_DEG", "SCALE_RANGE", "DRAWS", "similarity_matrix", "sample_similarity", "apply_matrix",
           "sample_transform", "warp_image", "transform_flow", "augment_pair"]
