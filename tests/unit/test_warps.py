import numpy as np
import pytest

from pipeline_lib.warps import (AffineTPSWarp, ThinPlateSpline, affine_matrix, apply_affine, grid_points,
                                invert_affine, invert_map)


def test_tps_interpolates_its_control_values_and_reproduces_affine_fields():
    rng = np.random.default_rng(0)
    ctrl = rng.uniform(0, 100, (9, 2))
    vals = rng.normal(size=(9, 2))
    tps = ThinPlateSpline.fit(ctrl, vals)
    np.testing.assert_allclose(tps(ctrl), vals, atol=1e-8)
    a = np.array([[0.1, 0.2], [-0.3, 0.05]])
    new = rng.uniform(0, 100, (5, 2))
    affine_tps = ThinPlateSpline.fit(ctrl, ctrl @ a + 2.0)  # an affine field needs no bending
    np.testing.assert_allclose(affine_tps(new), new @ a + 2.0, atol=1e-8)


def test_affine_inverse_and_rotation_about_centre():
    m = affine_matrix(90, 1.0, (0, 0), (5, 5))
    np.testing.assert_allclose(apply_affine(m, np.array([[6.0, 5.0]])), [[5.0, 6.0]], atol=1e-12)
    pts = np.random.default_rng(1).uniform(0, 10, (4, 2))
    np.testing.assert_allclose(apply_affine(invert_affine(m), apply_affine(m, pts)), pts, atol=1e-12)


def test_newton_inverse_of_affine_tps_warp_is_exact():
    rng = np.random.default_rng(2)
    lin = np.linspace(0, 63, 4)
    ctrl = np.stack(np.meshgrid(lin, lin), -1).reshape(-1, 2)
    warp = AffineTPSWarp(affine_matrix(10, 1.2, (3, -2), (32, 32)), ThinPlateSpline.fit(ctrl, rng.uniform(-2, 2, ctrl.shape)))
    pts = grid_points(8, 8) * 8
    np.testing.assert_allclose(warp(warp.inverse(pts)), pts, atol=1e-5)


def test_non_invertible_map_raises():
    with pytest.raises(ArithmeticError, match="did not converge"):
        invert_map(lambda x: x ** 2 + 1.0, np.array([[0.0, 0.0]]), np.array([[0.3, 0.3]]))


def test_analytic_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    ctrl = rng.uniform(0, 50, (9, 2))
    warp = AffineTPSWarp(affine_matrix(-7, 0.9, (1, 2), (25, 25)), ThinPlateSpline.fit(ctrl, rng.uniform(-2, 2, (9, 2))))
    pts = rng.uniform(0, 50, (6, 2))
    _, jac = warp.value_and_jacobian(pts)
    e = 1e-5
    num = np.stack([(warp(pts + d) - warp(pts - d)) / (2 * e) for d in ([e, 0], [0, e])], axis=2)
    np.testing.assert_allclose(jac, num, atol=1e-6)
