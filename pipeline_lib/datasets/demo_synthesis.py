"""Synthesis of the embedded demo (:func:`generate`): real photos shipped with scikit-image, warped into
categories with exact truth; :mod:`pipeline_lib.datasets.demo` reads it back.

Each photo becomes one category. Every image of a category is the photo seen through a random
backward warp (thin-plate-spline jitter, then rotation, scale and shift; Gaur et al. train with
rotations of +-16 degrees and scales 0.9-2.0, we stay milder so keypoints remain visible) on a
textured background, with photometric jitter. Because every warp is known and invertible, the
keypoints of every image and the dense flow of every pair are exact: warps and their Newton inverses
are :mod:`pipeline_lib.kernels.warps` in float64, in pixel coordinates. The layout it writes: the
docstring of :mod:`pipeline_lib.datasets.demo`. A module of its own because scikit-image costs half a
second of every workflow job's start and only the generating job needs it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from skimage import feature, transform
from skimage.color import rgb2gray

from ..atomic import atomic_path
from ..kernels.grids import pixel_grid
from ..kernels.warps import (affine_points, invert_affine, newton_solve, tps_fit, tps_values,
                             tps_values_and_jacobians)
from ..provenance import provenance
from ..settings import DemoSection
from .base import DatasetError

BACKGROUND_TEXTURES = ("gravel", "grass", "brick")
KEYPOINT_MARGIN_PX = 3.0  # keypoints keep this distance from the canvas border in every image
NEWTON_TOL_PX = 1e-6  # warp inverses are solved to this residual (pixels), or the demo stops


def _square_photo(name: str, size: int) -> np.ndarray:
    img = getattr(skdata, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return transform.resize(crop, (size, size), anti_aliasing=True, preserve_range=False).astype(np.float64)


def _rotation_about(rotation_deg: float, scale: float, shift_xy: np.ndarray, centre_xy: tuple[float, float]
                    ) -> np.ndarray:
    """2x3 matrix of a rotation and isotropic scale about ``centre_xy``, followed by a shift."""
    t = np.deg2rad(rotation_deg)
    r = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.asarray(centre_xy, dtype=np.float64)
    return np.hstack([r, (c - r @ c + np.asarray(shift_xy, dtype=np.float64))[:, None]])


@dataclass(frozen=True)
class Warp:
    """Backward map canvas -> photo, q -> A(q + d(q)): a thin-plate-spline displacement d through jittered
    control points, then an affine A; (N, 2) float64 pixel arrays in and out."""

    theta_aff: torch.Tensor  # (1, 6) affine A
    ctrl: torch.Tensor  # (N, 2) control points of d
    weights: torch.Tensor  # (1, N, 2) radial weights of d, and
    affine: torch.Tensor  # (1, 3, 2) its affine part (kernels.warps.tps_fit)

    def value_and_jacobian(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d, jd = tps_values_and_jacobians(self.ctrl, self.weights, self.affine, q)
        lin = self.theta_aff.view(2, 3)[:, :2]
        return affine_points(self.theta_aff, q + d), lin @ (torch.eye(2, dtype=q.dtype) + jd)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        q = torch.from_numpy(pts)[None]
        return affine_points(self.theta_aff, q + tps_values(self.ctrl, self.weights, self.affine, q))[0].numpy()

    def inverse(self, targets: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Points q with self(q) = targets, by Newton's method from ``init`` (default: the affine's inverse);
        ArithmeticError when a residual stays above NEWTON_TOL_PX (a fold: use milder warps)."""
        tg = torch.from_numpy(targets)[None]
        start = affine_points(invert_affine(self.theta_aff), tg) if init is None else torch.from_numpy(init)[None]
        q = newton_solve(self.value_and_jacobian, tg, start, tol=NEWTON_TOL_PX)
        worst = float((self.value_and_jacobian(q)[0] - tg).abs().max()) if len(targets) else 0.0
        if worst >= NEWTON_TOL_PX:
            raise ArithmeticError(f"warp inversion did not converge (residual {worst:.2e} px); use a milder warp.")
        return q[0].numpy()


def _grid_points(s: int) -> np.ndarray:
    """(s*s, 2) xy pixel centres of an s x s image, row-major."""
    return pixel_grid((s, s), dtype=torch.float64).reshape(-1, 2).numpy()


def _random_warp(cfg: DemoSection, rng: np.random.Generator) -> Warp:
    s = cfg.image_size
    g = cfg.tps_control_points
    lin = np.linspace(0, s - 1, g)
    ctrl = torch.from_numpy(np.stack(np.meshgrid(lin, lin), -1).reshape(-1, 2))
    disp = rng.uniform(-1, 1, tuple(ctrl.shape)) * cfg.tps_jitter_fraction * s
    weights, affine = tps_fit(ctrl, torch.from_numpy(disp)[None])
    # Backward map: canvas -> photo. A scale < 1 on the *output* means the photo looks larger,
    # so we invert the sampled zoom: the photo appears at scale z inside the canvas.
    zoom = rng.uniform(*cfg.scale_range)
    rot = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    shift = rng.uniform(-1, 1, 2) * cfg.max_shift_fraction * s
    centre = ((s - 1) / 2, (s - 1) / 2)
    theta = torch.from_numpy(_rotation_about(rot, 1.0 / zoom, shift, centre).reshape(1, 6))
    return Warp(theta, ctrl, weights, affine)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    tex = getattr(skdata, BACKGROUND_TEXTURES[rng.integers(len(BACKGROUND_TEXTURES))])().astype(np.float64) / 255
    y, x = rng.integers(0, tex.shape[0] - size), rng.integers(0, tex.shape[1] - size)
    patch = tex[y:y + size, x:x + size]
    tint = rng.uniform(0.3, 1.0, 3)
    return patch[..., None] * tint


def _render(photo: np.ndarray, warp: Warp, bg: np.ndarray, gain: np.ndarray, bias: float):
    s = photo.shape[0]
    src = warp(_grid_points(s))  # photo xy sampled by every canvas pixel
    inside = ((src >= 0) & (src <= s - 1)).all(1).reshape(s, s)
    coords = [src[:, 1].reshape(s, s), src[:, 0].reshape(s, s)]
    rgb = np.stack([ndimage.map_coordinates(photo[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
    rgb = np.clip(rgb * gain + bias, 0, 1)
    out = np.where(inside[..., None], rgb, bg)
    return (out * 255).round().astype(np.uint8), inside


def _choose_keypoints(photo: np.ndarray, warps: list[Warp], n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` distinctive photo points (Harris corners) that stay visible in every image."""
    s = photo.shape[0]
    resp = feature.corner_harris(rgb2gray(photo))
    cand = feature.corner_peaks(resp, min_distance=max(2, s // 16), exclude_border=int(KEYPOINT_MARGIN_PX))
    cand = cand[np.argsort(-resp[cand[:, 0], cand[:, 1]])][:, ::-1].astype(np.float64)  # xy, strongest first
    extra = rng.uniform(0.2 * s, 0.8 * s, (8 * n, 2))  # fallback points if corners are too few
    cand = np.vstack([cand, extra])
    ok = np.ones(len(cand), dtype=bool)
    for w in warps:
        fwd = w.inverse(cand)
        ok &= ((fwd >= KEYPOINT_MARGIN_PX) & (fwd <= s - 1 - KEYPOINT_MARGIN_PX)).all(1)
    return cand[ok][:n]


def generate(out_dir: str | Path, cfg: DemoSection, seed: int, progress=None) -> None:
    """Write the demo dataset to ``out_dir`` atomically (deterministic for a given cfg and seed)."""
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        kp_rows, pair_rows = [], []
        flow_root = zarr.open_group(str(tmp / "flow.zarr"), mode="w")
        n_pair = 0
        for cat in cfg.photos:
            photo = _square_photo(cat, s)
            warps = [_random_warp(cfg, rng) for _ in range(cfg.images_per_category)]
            base_kps = _choose_keypoints(photo, warps, cfg.n_keypoints, rng)
            if len(base_kps) == 0:
                raise DatasetError(f"demo category {cat}: no keypoint stays visible; use milder warps.")
            (tmp / cat).mkdir()
            ids = []
            for i, w in enumerate(warps):
                gain = 1 + rng.uniform(-1, 1, 3) * cfg.photometric_jitter
                img, mask = _render(photo, w, _background(rng, s), gain, rng.uniform(-1, 1) * cfg.photometric_jitter / 2)
                image_id = f"{cat}/{cat}_{i}"
                Image.fromarray(img).save(tmp / f"{image_id}.png")
                Image.fromarray((mask * 255).astype(np.uint8)).save(tmp / f"{image_id}_mask.png")
                for k, (x, y) in enumerate(w.inverse(base_kps)):
                    kp_rows.append((image_id, k, f"{x:.6f}", f"{y:.6f}"))
                ids.append(image_id)
            ordered = [(a, b) for a in range(len(ids)) for b in range(len(ids)) if a != b]
            order = rng.permutation(len(ordered))
            n_train = int(round(cfg.split[0] * len(ordered) / sum(cfg.split)))
            n_val = int(round(cfg.split[1] * len(ordered) / sum(cfg.split)))
            grid = _grid_points(s)
            # Each image's inverse on the photo grid, once: interpolated, it starts Newton next to the
            # root, so every pair's exact flow costs one or two Newton steps.
            inv_grid = [w.inverse(grid).reshape(s, s, 2) for w in warps]
            for rank, j in enumerate(order):
                a, b = ordered[j]
                split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
                pair_id = f"{ids[a]}->{ids[b]}"
                pair_rows.append((pair_id, cat, ids[a], ids[b], split))
                photo_xy = warps[a](grid)  # where each source pixel samples the photo
                seen = ((photo_xy >= 0) & (photo_xy <= s - 1)).all(1)
                trg_xy = grid.copy()  # zero flow where the source pixel shows background
                trg_xy[seen] = warps[b].inverse(photo_xy[seen], init=_bilinear(inv_grid[b], photo_xy[seen]))
                valid = seen & ((trg_xy >= -0.5) & (trg_xy <= s - 0.5)).all(1)
                g = flow_root.create_group(f"p{n_pair:05d}")
                g.attrs["pair_id"] = pair_id
                g.create_array("flow", data=(trg_xy - grid).reshape(s, s, 2).astype(np.float32))
                g.create_array("valid", data=valid.reshape(s, s))
                n_pair += 1
                if progress:
                    progress(1)
        _write_csv(tmp / "keypoints.csv", ("image_id", "kp", "x", "y"), kp_rows)
        _write_csv(tmp / "pairs.csv", ("pair_id", "category", "src", "trg", "split"), pair_rows)
        flow_root.attrs["pair_ids"] = [r[0] for r in pair_rows]
        (tmp / "meta.json").write_text(json.dumps(provenance(asdict(cfg), seed), indent=2, default=list))


def _bilinear(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample an (H, W, 2) field at (N, 2) xy points (clamped to the grid)."""
    coords = [np.clip(xy[:, 1], 0, field.shape[0] - 1), np.clip(xy[:, 0], 0, field.shape[1] - 1)]
    return np.stack([ndimage.map_coordinates(field[..., c], coords, order=1) for c in range(2)], 1)


def _write_csv(path: Path, header, rows) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
