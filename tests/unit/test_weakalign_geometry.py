"""WeakAlign geometry with known answers: affine, 3x3 TPS, their composition and inverses."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.warps import ThinPlateSpline
from pipeline_lib.weakalign.geometry import (affine_grid, affine_points, composed_grid, composed_points,
                                             identity_affine, identity_tps, inverse_composed_points, invert_affine,
                                             invert_tps_points, normalised_grid, normalised_to_pixels,
                                             pixels_to_normalised, tps_control_points, tps_grid, tps_points)

D = torch.float64
HW = (24, 32)
AFFINE = torch.tensor([[0.9, -0.15, 0.1, 0.2, 1.05, -0.05]], dtype=D)  # rotation/shear/zoom + shift
TPS_OFFSETS = torch.tensor([[0.05, -0.08, 0.0, 0.1, -0.05, 0.07, -0.06, 0.04, 0.02,
                             -0.04, 0.06, 0.03, 0.0, 0.08, -0.07, 0.05, -0.02, 0.04]], dtype=D)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def known_tps():
    return identity_tps(1, dtype=D) + TPS_OFFSETS


def pixel_centres(hw=HW):
    return normalised_grid(*hw, dtype=D)  # (H, W, 2) normalised centres of the pixels


def reference_tps(theta):
    """The same spline from the independent numpy implementation in ``pipeline_lib.warps``."""
    p = tps_control_points(3, dtype=D).numpy()
    q = np.stack([theta[0, :9].numpy(), theta[0, 9:].numpy()], 1)
    return ThinPlateSpline.fit(p, q)


def test_control_points_and_identity_parameters():
    p = tps_control_points(3)
    assert p.shape == (9, 2) and identity_tps(2).shape == (2, 18)
    assert torch.equal(p[:3, 0], torch.tensor([-1.0, 0.0, 1.0])) and torch.equal(p[:3, 1], torch.full((3,), -1.0))
    assert identity_affine(1).tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]


def test_identity_parameters_give_the_identity_warp():
    q = pixel_centres()
    torch.testing.assert_close(affine_grid(identity_affine(1, dtype=D), HW)[0], q)
    torch.testing.assert_close(tps_grid(identity_tps(1, dtype=D), HW)[0], q)
    torch.testing.assert_close(composed_grid(identity_affine(1, dtype=D), identity_tps(1, dtype=D), HW)[0], q)
    img = torch.rand(1, 3, *HW, dtype=D)
    grid = composed_grid(identity_affine(1, dtype=D), identity_tps(1, dtype=D), HW)
    torch.testing.assert_close(F.grid_sample(img, grid, align_corners=False), img)


def test_affine_grid_reproduces_the_known_affine():
    q = pixel_centres().reshape(-1, 2).numpy()
    m = AFFINE.view(2, 3).numpy()
    expect = q @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(affine_grid(AFFINE, HW)[0].reshape(-1, 2).numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(affine_points(AFFINE, torch.from_numpy(q)[None])[0].numpy(), expect, atol=1e-12)


def test_affine_inverse_round_trip():
    pts = torch.rand(1, 20, 2, dtype=D) * 2 - 1
    back = affine_points(invert_affine(AFFINE), affine_points(AFFINE, pts))
    torch.testing.assert_close(back, pts)


def test_tps_reproduces_the_known_spline_at_control_points_and_everywhere():
    theta = known_tps()
    p = tps_control_points(3, dtype=D)[None]
    q_expect = torch.stack([theta[0, :9], theta[0, 9:]], 1)
    torch.testing.assert_close(tps_points(theta, p)[0], q_expect)  # interpolates P_i -> Q_i
    ref = reference_tps(theta)
    pts = pixel_centres().reshape(-1, 2)
    np.testing.assert_allclose(tps_grid(theta, HW)[0].reshape(-1, 2).numpy(), ref(pts.numpy()), atol=1e-12)


def test_tps_of_affinely_moved_control_points_is_that_affine():
    p = tps_control_points(3, dtype=D)
    q = affine_points(AFFINE, p[None])[0]
    theta = torch.cat([q[:, 0], q[:, 1]])[None]
    pts = pixel_centres().reshape(1, -1, 2)
    torch.testing.assert_close(tps_points(theta, pts), affine_points(AFFINE, pts), atol=1e-10, rtol=0)


def test_composition_is_affine_after_tps_analytically():
    theta = known_tps()
    q = pixel_centres().reshape(-1, 2).numpy()
    m = AFFINE.view(2, 3).numpy()
    expect = reference_tps(theta)(q) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(composed_grid(AFFINE, theta, HW)[0].reshape(-1, 2).numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(composed_points(AFFINE, theta, torch.from_numpy(q)[None])[0].numpy(), expect,
                               atol=1e-12)


def test_forward_map_inverts_the_warp_that_the_grid_performs():
    # A source image whose pixels hold their own normalised xy: after warping with the composed grid,
    # the target pixel q holds T(q). The forward map sends a source point p to the q with T(q) = p,
    # so sampling the warped image at q must give back p.
    hw = (48, 64)
    theta = known_tps()
    ramp = normalised_grid(*hw, dtype=D).permute(2, 0, 1)[None]  # linear: bilinear sampling is exact
    warped = F.grid_sample(ramp, composed_grid(AFFINE, theta, hw), mode="bilinear", align_corners=False)
    src = torch.tensor([[[0.1, 0.2], [-0.3, 0.25], [0.35, -0.2], [-0.1, -0.3]]], dtype=D)
    q, residual = inverse_composed_points(AFFINE, theta, src)
    assert residual.max() < 1e-9
    sample = lambda pts: F.grid_sample(warped, pts.view(1, 1, -1, 2), align_corners=False)[0, :, 0].T  # noqa: E731
    # bilinear reading of the warped image between pixel centres errs by ~(pixel size)^2 x curvature
    torch.testing.assert_close(sample(q), src[0], atol=2e-4, rtol=0)
    wrong = composed_points(AFFINE, theta, src)  # the backward map used the wrong way round
    assert (sample(wrong) - src[0]).abs().max() > 0.02


def test_tps_inverse_round_trip_and_residuals():
    theta = known_tps()
    q = torch.rand(1, 100, 2, dtype=D) * 1.6 - 0.8
    est, residual = invert_tps_points(theta, tps_points(theta, q))
    torch.testing.assert_close(est, q, atol=1e-8, rtol=0)
    assert residual.max() < 1e-9
    torch.testing.assert_close(composed_points(AFFINE, theta, inverse_composed_points(AFFINE, theta, q)[0]), q)


def test_pixel_normalised_conversions_round_trip():
    pts = torch.tensor([[0.0, 0.0], [31.0, 23.0], [10.5, 4.25]], dtype=D)
    n = pixels_to_normalised(pts, HW)
    assert n[0].tolist() == [-1 + 1 / 32, -1 + 1 / 24]
    torch.testing.assert_close(normalised_to_pixels(n, HW), pts)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="theta_aff"):
        affine_points(torch.zeros(1, 4), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="2 g"):
        tps_points(torch.zeros(1, 17), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="points"):
        tps_points(identity_tps(2), torch.zeros(1, 3, 2))
