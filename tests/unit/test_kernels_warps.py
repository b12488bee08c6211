"""Warp kernels with known answers: affine, TPS (any control points; WeakAlign's 3x3 grid), their
composition and inverses (Newton); the demo generator's warps in pixels."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.datasets.demo_synthesis import Warp
from pipeline_lib.kernels.grids import normalised_cell_grid, normalised_to_pixels, pixels_to_normalised
from pipeline_lib.kernels.warps import (affine_grid, affine_points, composed_grid, composed_points, identity_affine,
                                        identity_tps, inverse_composed_points, invert_affine, invert_tps_points,
                                        newton_solve, tps_control_points, tps_fit, tps_grid, tps_points, tps_values,
                                        tps_values_and_jacobians)

D = torch.float64
HW = (24, 32)
AFFINE = torch.tensor([[0.9, -0.15, 0.1, 0.2, 1.05, -0.05]], dtype=D)  # rotation/shear/zoom + shift
TPS_OFFSETS = torch.tensor([[0.05, -0.08, 0.0, 0.1, -0.05, 0.07, -0.06, 0.04, 0.02,
                             -0.04, 0.06, 0.03, 0.0, 0.08, -0.07, 0.05, -0.02, 0.04]], dtype=D)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def known_tps():
    return identity_tps(1, 3, dtype=D) + TPS_OFFSETS


def pixel_centres(hw=HW):
    return normalised_cell_grid(*hw, dtype=D)  # (H, W, 2) normalised centres of the pixels


def reference_tps(ctrl, values):
    """The same spline solved independently in numpy (Bookstein's system, U = r^2 log r^2): a function of
    (M, 2) points."""
    n = len(ctrl)

    def u(a, b):
        r2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return np.where(r2 > 0, r2 * np.log(np.where(r2 > 0, r2, 1.0)), 0.0)

    ones_p = np.hstack([np.ones((n, 1)), ctrl])
    lhs = np.block([[u(ctrl, ctrl), ones_p], [ones_p.T, np.zeros((3, 3))]])
    sol = np.linalg.solve(lhs, np.vstack([values, np.zeros((3, 2))]))
    return lambda pts: u(pts, ctrl) @ sol[:n] + np.hstack([np.ones((len(pts), 1)), pts]) @ sol[n:]


def reference_grid_tps(theta):
    return reference_tps(tps_control_points(3, dtype=D).numpy(), np.stack([theta[0, :9].numpy(),
                                                                            theta[0, 9:].numpy()], 1))


def test_control_points_and_identity_parameters():
    p = tps_control_points(3)
    assert p.shape == (9, 2) and identity_tps(2, 3).shape == (2, 18)
    assert torch.equal(p[:3, 0], torch.tensor([-1.0, 0.0, 1.0])) and torch.equal(p[:3, 1], torch.full((3,), -1.0))
    assert identity_affine(1).tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]


def test_identity_parameters_give_the_identity_warp():
    q = pixel_centres()
    torch.testing.assert_close(affine_grid(identity_affine(1, dtype=D), HW)[0], q)
    torch.testing.assert_close(tps_grid(identity_tps(1, 3, dtype=D), HW)[0], q)
    torch.testing.assert_close(composed_grid(identity_affine(1, dtype=D), identity_tps(1, 3, dtype=D), HW)[0], q)
    img = torch.rand(1, 3, *HW, dtype=D)
    grid = composed_grid(identity_affine(1, dtype=D), identity_tps(1, 3, dtype=D), HW)
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
    ref = reference_grid_tps(theta)
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
    expect = reference_grid_tps(theta)(q) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(composed_grid(AFFINE, theta, HW)[0].reshape(-1, 2).numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(composed_points(AFFINE, theta, torch.from_numpy(q)[None])[0].numpy(), expect,
                               atol=1e-12)


def test_forward_map_inverts_the_warp_that_the_grid_performs():
    # A source image whose pixels hold their own normalised xy: after warping with the composed grid,
    # the target pixel q holds T(q). The forward map sends a source point p to the q with T(q) = p,
    # so sampling the warped image at q must give back p.
    hw = (48, 64)
    theta = known_tps()
    ramp = normalised_cell_grid(*hw, dtype=D).permute(2, 0, 1)[None]  # linear: bilinear sampling is exact
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
        tps_points(identity_tps(2, 3), torch.zeros(1, 3, 2))


# --------------------------------------------------------------------------- any control points, Newton


def test_tps_through_scattered_control_points_interpolates_them_and_reproduces_affine_fields():
    rng = np.random.default_rng(0)
    ctrl = torch.from_numpy(rng.uniform(0, 100, (9, 2)))
    vals = torch.from_numpy(rng.normal(size=(1, 9, 2)))
    torch.testing.assert_close(tps_values(ctrl, *tps_fit(ctrl, vals), ctrl[None]), vals, atol=1e-8, rtol=0)
    new = rng.uniform(0, 100, (5, 2))
    np.testing.assert_allclose(tps_values(ctrl, *tps_fit(ctrl, vals), torch.from_numpy(new)[None])[0].numpy(),
                               reference_tps(ctrl.numpy(), vals[0].numpy())(new), atol=1e-8)
    a = torch.tensor([[0.1, 0.2], [-0.3, 0.05]], dtype=D)
    affine_field = tps_fit(ctrl, (ctrl @ a + 2.0)[None])  # an affine field needs no bending
    torch.testing.assert_close(tps_values(ctrl, *affine_field, torch.from_numpy(new)[None])[0],
                               torch.from_numpy(new) @ a + 2.0, atol=1e-8, rtol=0)


def test_analytic_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    ctrl = torch.from_numpy(rng.uniform(0, 50, (9, 2)))
    w, a = tps_fit(ctrl, torch.from_numpy(rng.uniform(-2, 2, (1, 9, 2))))
    pts = torch.from_numpy(rng.uniform(0, 50, (1, 6, 2)))
    _, jac = tps_values_and_jacobians(ctrl, w, a, pts)
    e = 1e-5
    num = torch.stack([(tps_values(ctrl, w, a, pts + d) - tps_values(ctrl, w, a, pts - d)) / (2 * e)
                       for d in (torch.tensor([e, 0.0], dtype=D), torch.tensor([0.0, e], dtype=D))], dim=3)
    torch.testing.assert_close(jac, num, atol=1e-6, rtol=0)


def test_newton_stops_at_the_root_and_leaves_an_unreachable_target_with_its_residual():
    def square(x):  # f(x, y) = (x^2, y^2) + 1, never 0
        jac = torch.zeros(*x.shape, 2, dtype=x.dtype)
        jac[..., 0, 0], jac[..., 1, 1] = 2 * x[..., 0], 2 * x[..., 1]
        return x ** 2 + 1.0, jac

    root = newton_solve(square, torch.full((1, 1, 2), 5.0, dtype=D), torch.full((1, 1, 2), 1.0, dtype=D))
    torch.testing.assert_close(root, torch.full((1, 1, 2), 2.0, dtype=D))
    stuck = newton_solve(square, torch.zeros(1, 1, 2, dtype=D), torch.full((1, 1, 2), 0.3, dtype=D))
    assert (square(stuck)[0] - 0).abs().max() >= 1.0


def demo_warp(rotation_deg=10.0, scale=1.2, side=64, seed=2):
    """A demo warp as the generator builds it: jittered 4 x 4 TPS displacement, rotation about the centre."""
    rng = np.random.default_rng(seed)
    lin = np.linspace(0, side - 1, 4)
    ctrl = torch.from_numpy(np.stack(np.meshgrid(lin, lin), -1).reshape(-1, 2))
    w, a = tps_fit(ctrl, torch.from_numpy(rng.uniform(-2, 2, (1, 16, 2))))
    t, c = np.deg2rad(rotation_deg), (side - 1) / 2
    r = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    m = np.hstack([r, (np.array([c, c]) - r @ np.array([c, c]) + np.array([3.0, -2.0]))[:, None]])
    return Warp(torch.from_numpy(m.reshape(1, 6)), ctrl, w, a)


def test_demo_warp_newton_inverse_is_exact_and_a_fold_is_an_error():
    warp = demo_warp()
    pts = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0)), -1).reshape(-1, 2) * 8
    np.testing.assert_allclose(warp(warp.inverse(pts)), pts, atol=1e-6)
    np.testing.assert_allclose(warp.inverse(pts, init=warp.inverse(pts) + 0.3), warp.inverse(pts), atol=1e-6)
    collapse = tps_fit(warp.ctrl, -warp.ctrl[None])  # d(q) = -q: every point goes to A(0), a total fold
    folded = Warp(warp.theta_aff, warp.ctrl, *collapse)
    with pytest.raises(ArithmeticError, match="did not converge"):
        folded.inverse(np.array([[30.0, 30.0], [5.0, 60.0]]))
