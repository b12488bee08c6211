"""Synthetic SFNet training pairs (Lee et al. Sec. 4.2): an image and its random affine warp.

"We generate pairs of source and target images synthetically from single images by applying random
affine transformations ... Corresponding foreground masks are also transformed with the same
transformation parameters" and the data are augmented "by horizontal flipping and color jittering".
The paper gives no ranges for the affine parameters or the jitter; the defaults below are our
choice (moderate, so most of the object stays in view) and are config values.

Conventions: images (B, 3, H, W) in [0, 1], masks (B, 1, H, W) in {0, 1}. The affine ``theta``
(B, 2, 3) is the *backward* map of ``F.affine_grid(align_corners=False)``: it sends a normalised
target point q to the normalised source point ``A q + t`` that the target pixel shows. The exact
flow is returned in pixels, as the package convention (H, W, 2): source pixel p corresponds to
target pixel ``p + flow(p)``; ``valid`` marks source pixels whose match lies inside the target.
All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kernels.grids import normalised_to_pixels, pixel_grid, pixels_to_normalised


@dataclass(frozen=True)
class SyntheticConfig:
    """Ranges of the random affine warp and the augmentation (our choices; Lee et al. give none)."""

    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)  # isotropic zoom of the backward map
    max_shear: float = 0.1
    max_shift_fraction: float = 0.1  # of the image side (normalised units: 2 * fraction)
    flip_prob: float = 0.5  # Lee et al. Sec. 4.2: horizontal flipping
    color_jitter: float = 0.1  # Lee et al. Sec. 4.2: colour jittering (per-channel gain and bias)

    def __post_init__(self):
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"sfnet synthetic scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"sfnet synthetic flip_prob must be in [0, 1], got {self.flip_prob}")
        for k in ("max_rotation_deg", "max_shear", "max_shift_fraction", "color_jitter"):
            if getattr(self, k) < 0:
                raise ValueError(f"sfnet synthetic {k} must be >= 0, got {getattr(self, k)}")


@dataclass
class SyntheticBatch:
    """A batch of synthetic pairs. src/trg: (B, 3, H, W); src_mask/trg_mask: (B, 1, H, W);
    theta: (B, 2, 3) backward affine (target -> source, normalised); flow_s2t: (B, H, W, 2) exact
    source->target flow in pixels; valid_s2t: (B, H, W) bool."""

    src: torch.Tensor
    trg: torch.Tensor
    src_mask: torch.Tensor
    trg_mask: torch.Tensor
    theta: torch.Tensor
    flow_s2t: torch.Tensor
    valid_s2t: torch.Tensor

    def to(self, device) -> "SyntheticBatch":
        return SyntheticBatch(*(getattr(self, k).to(device) for k in
                                ("src", "trg", "src_mask", "trg_mask", "theta", "flow_s2t", "valid_s2t")))


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def random_affine(n: int, cfg: SyntheticConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) float32 random backward affines: rotation * zoom * shear, plus a shift."""
    rot = torch.deg2rad(_uniform(n, -cfg.max_rotation_deg, cfg.max_rotation_deg, generator))
    zoom = _uniform(n, cfg.scale_range[0], cfg.scale_range[1], generator)
    shear = _uniform(n, -cfg.max_shear, cfg.max_shear, generator)
    shift = _uniform(2 * n, -2 * cfg.max_shift_fraction, 2 * cfg.max_shift_fraction, generator).view(n, 2)
    c, s = torch.cos(rot), torch.sin(rot)
    r = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (n, 2, 2)
    sh = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    sh[:, 0, 1] = shear
    a = r @ sh * zoom.view(n, 1, 1)
    return torch.cat([a, shift[..., None]], dim=2).float()


def exact_flow(theta: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Source->target flow of a backward affine warp.

    theta: (B, 2, 3) backward affine (normalised target -> normalised source), hw: (H, W) of both
    images -> (flow (B, H, W, 2) in pixels, valid (B, H, W) bool: the match lies inside the target).
    """
    p = pixel_grid(hw, device=theta.device, dtype=torch.float64)
    a, t = theta[:, :, :2].double(), theta[:, :, 2].double()
    q_n = torch.einsum("bij,bhwj->bhwi", torch.linalg.inv(a), pixels_to_normalised(p, hw)[None] - t[:, None, None, :])
    q = normalised_to_pixels(q_n, hw)
    valid = ((q >= -0.5) & (q <= q.new_tensor([hw[1], hw[0]]) - 0.5)).all(-1)
    return (q - p).float(), valid


def jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Colour jitter (Lee et al. Sec. 4.2): a random per-channel gain and a brightness bias, clamped to [0, 1]."""
    if strength == 0:
        return images
    b = images.shape[0]
    gain = 1 + strength * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)
    bias = strength / 2 * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
    return (images * gain.to(images) + bias.to(images)).clamp(0, 1)


def make_pairs(images: torch.Tensor, masks: torch.Tensor, cfg: SyntheticConfig,
               generator: torch.Generator) -> SyntheticBatch:
    """Turn (B, 3, H, W) images and (B, 1, H, W) masks into synthetic pairs (CPU randomness).

    Source = the (maybe flipped, jittered) image; target = its random affine warp, separately
    jittered; outside the source image the target is black and background.
    """
    if images.ndim != 4 or images.shape[1] != 3 or masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"make_pairs: need images (B, 3, H, W) and masks (B, 1, H, W), got {tuple(images.shape)} "
                         f"and {tuple(masks.shape)}")
    b, _, h, w = images.shape
    flip = (torch.rand(b, generator=generator) < cfg.flip_prob).to(images.device)
    src = torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)
    src_mask = torch.where(flip.view(b, 1, 1, 1), masks.flip(-1), masks).float()
    theta = random_affine(b, cfg, generator).to(images.device)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    trg = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    trg_mask = (F.grid_sample(src_mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
    flow, valid = exact_flow(theta, (h, w))
    return SyntheticBatch(jitter(src, cfg.color_jitter, generator), jitter(trg, cfg.color_jitter, generator),
                          src_mask, trg_mask, theta, flow, valid)

