"""Synthetic SFNet pairs: the returned flow is the exact correspondence of the warp."""

import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.sfnet import SyntheticConfig, exact_flow, make_pairs, random_affine
from pipeline_lib.kernels.grids import pixels_to_normalised

S = 64
NO_AUG = dict(flip_prob=0.0, color_jitter=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def smooth_images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(S, S), mode="bicubic", align_corners=False)
    ys, xs = torch.meshgrid(torch.arange(S).float(), torch.arange(S).float(), indexing="ij")
    masks = (((xs - 30) ** 2 + (ys - 34) ** 2) < 18 ** 2).float().expand(n, 1, S, S).clone()
    return imgs.clamp(0, 1), masks


def sample_at(images, pts_px):
    """Bilinear sample (B, C, H, W) at (B, H, W, 2) pixel positions."""
    grid = pixels_to_normalised(pts_px, images.shape[-2:])
    return F.grid_sample(images, grid, mode="bilinear", align_corners=False)


def pixel_grid(b):
    ys, xs = torch.meshgrid(torch.arange(S).float(), torch.arange(S).float(), indexing="ij")
    return torch.stack([xs, ys], -1).expand(b, S, S, 2)


def test_same_seed_same_pairs_other_seed_other_pairs():
    imgs, masks = smooth_images(3)
    cfg = SyntheticConfig()
    a = make_pairs(imgs, masks, cfg, torch.Generator().manual_seed(5))
    b = make_pairs(imgs, masks, cfg, torch.Generator().manual_seed(5))
    c = make_pairs(imgs, masks, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a.trg, b.trg) and torch.equal(a.flow_s2t, b.flow_s2t)
    assert not torch.equal(a.theta, c.theta)


def test_flow_is_the_exact_correspondence_of_the_warp():
    imgs, masks = smooth_images(4)
    batch = make_pairs(imgs, masks, SyntheticConfig(**NO_AUG), torch.Generator().manual_seed(1))
    q = pixel_grid(4) + batch.flow_s2t
    trg_at_match = sample_at(batch.trg, q)
    # away from both images' borders, where bilinear sampling mixes in the zero padding
    inner = batch.valid_s2t & ((q >= 0) & (q <= S - 1)).all(-1)
    inner[:, :2], inner[:, -2:], inner[:, :, :2], inner[:, :, -2:] = False, False, False, False
    err = (trg_at_match - batch.src).abs().amax(1)[inner]
    assert inner.float().mean() > 0.5
    assert err.max() < 0.02  # only bilinear resampling of a smooth image separates them


def test_warped_mask_agrees_with_the_flow():
    imgs, masks = smooth_images(4)
    batch = make_pairs(imgs, masks, SyntheticConfig(**NO_AUG), torch.Generator().manual_seed(2))
    m = sample_at(batch.trg_mask, pixel_grid(4) + batch.flow_s2t)[:, 0] > 0.5
    agree = (m == (batch.src_mask[:, 0] > 0.5))[batch.valid_s2t]
    assert agree.float().mean() > 0.98  # disagreements only on the resampled mask boundary
    assert set(batch.trg_mask.unique().tolist()) <= {0.0, 1.0}


def test_identity_config_gives_identity_pairs():
    imgs, masks = smooth_images(2)
    cfg = SyntheticConfig(max_rotation_deg=0, scale_range=(1.0, 1.0), max_shear=0, max_shift_fraction=0, **NO_AUG)
    batch = make_pairs(imgs, masks, cfg, torch.Generator().manual_seed(0))
    assert batch.flow_s2t.abs().max() < 1e-4 and batch.valid_s2t.all()
    torch.testing.assert_close(batch.trg, batch.src, atol=1e-5, rtol=0)


def test_pure_shift_gives_a_constant_flow():
    # backward map q -> q + t (normalised): content moves by -t, i.e. -t * S / 2 pixels
    theta = torch.tensor([[[1.0, 0.0, 0.25], [0.0, 1.0, -0.5]]])
    flow, valid = exact_flow(theta, (S, S))
    torch.testing.assert_close(flow[0], torch.tensor([-0.25 * S / 2, 0.5 * S / 2]).expand(S, S, 2))
    assert not valid[0, 0, :].any() or valid[0].float().mean() < 1.0


def test_random_affine_respects_the_ranges():
    cfg = SyntheticConfig(max_rotation_deg=10, scale_range=(0.9, 1.1), max_shear=0.0, max_shift_fraction=0.05)
    theta = random_affine(500, cfg, torch.Generator().manual_seed(0))
    a = theta[:, :, :2].double()
    zoom = torch.linalg.det(a).sqrt()
    angle = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert zoom.min() >= 0.9 - 1e-6 and zoom.max() <= 1.1 + 1e-6
    assert angle.abs().max() <= 10 + 1e-4
    assert theta[:, :, 2].abs().max() <= 0.1 + 1e-6


def test_bad_config_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="scale_range"):
        SyntheticConfig(scale_range=(1.2, 0.8))
    imgs, masks = smooth_images(2)
    with pytest.raises(ValueError, match="make_pairs"):
        make_pairs(imgs, masks[:1], SyntheticConfig(), torch.Generator())
