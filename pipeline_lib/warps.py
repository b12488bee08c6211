"""Geometric warps with exact inverses: affine maps and thin-plate splines (pure numpy).

A warp here is a *backward* map: it sends a pixel of the output image to the point of the input
image it samples. Forward positions (where an input point lands) come from :func:`invert_map`,
which solves the backward map by Newton's method to sub-micropixel residuals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

NEWTON_STEPS = 30
NEWTON_TOL_PX = 1e-6
JACOBIAN_EPS_PX = 1e-3


def affine_matrix(rotation_deg: float, scale: float, shift_xy: tuple[float, float],
                  centre_xy: tuple[float, float]) -> np.ndarray:
    """2x3 matrix of a rotation and isotropic scale about ``centre_xy``, followed by a shift."""
    t = np.deg2rad(rotation_deg)
    r = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = np.asarray(centre_xy, dtype=np.float64)
    return np.hstack([r, (c - r @ c + np.asarray(shift_xy, dtype=np.float64))[:, None]])


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine ``m`` to (N, 2) points."""
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    a_inv = np.linalg.inv(m[:, :2])
    return np.hstack([a_inv, (-a_inv @ m[:, 2])[:, None]])


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    # U(r) = r^2 log r^2 (Bookstein 1989), 0 at r = 0.
    return r2 * np.log(np.maximum(r2, np.finfo(np.float64).tiny))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) squared distances, via |a|^2 + |b|^2 - 2ab (clipped at 0)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


@dataclass(frozen=True)
class ThinPlateSpline:
    """A 2D thin-plate spline interpolating ``values`` (N, 2) at ``ctrl`` (N, 2)."""

    ctrl: np.ndarray
    weights: np.ndarray  # (N, 2) radial weights
    affine: np.ndarray  # (3, 2): constant, x and y terms

    @classmethod
    def fit(cls, ctrl: np.ndarray, values: np.ndarray) -> "ThinPlateSpline":
        n = len(ctrl)
        k = _tps_kernel(_sq_dists(ctrl, ctrl))
        p = np.hstack([np.ones((n, 1)), ctrl])
        lhs = np.zeros((n + 3, n + 3))
        lhs[:n, :n], lhs[:n, n:], lhs[n:, :n] = k, p, p.T
        rhs = np.vstack([values, np.zeros((3, 2))])
        sol = np.linalg.solve(lhs, rhs)
        return cls(ctrl.copy(), sol[:n], sol[n:])

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        u = _tps_kernel(_sq_dists(pts, self.ctrl))
        return u @ self.weights + self.affine[0] + pts @ self.affine[1:]

    def value_and_jacobian(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (N, 2) and Jacobians (N, 2, 2) [d out_i / d in_j], analytically (U'(s) = log s + 1)."""
        r2 = _sq_dists(pts, self.ctrl)
        logr2 = np.log(np.maximum(r2, np.finfo(np.float64).tiny))
        value = (r2 * logr2) @ self.weights + self.affine[0] + pts @ self.affine[1:]
        du = np.where(r2 > 0, logr2 + 1.0, 0.0)  # (N, M)
        # sum_m du[n,m] w[m,i] (p[n,j] - c[m,j]), as two matrix products
        a = du @ self.weights  # (N, 2): i
        b = (du @ (self.weights[:, :, None] * self.ctrl[:, None, :]).reshape(len(self.ctrl), 4)).reshape(-1, 2, 2)
        jac = 2.0 * (a[:, :, None] * pts[:, None, :] - b) + self.affine[1:].T[None]
        return value, jac


@dataclass(frozen=True)
class AffineTPSWarp:
    """Backward map q -> A(q + d(q)): a TPS displacement field d followed by an affine A."""

    affine: np.ndarray
    displacement: ThinPlateSpline

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return apply_affine(self.affine, pts + self.displacement(pts))

    def value_and_jacobian(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d, jd = self.displacement.value_and_jacobian(pts)
        lin = self.affine[:, :2]
        return apply_affine(self.affine, pts + d), lin[None] @ (np.eye(2)[None] + jd)

    def inverse(self, targets: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """Points q with self(q) = targets (Newton's method from ``init``, default the affine inverse)."""
        if init is None:
            init = apply_affine(invert_affine(self.affine), targets)
        return invert_map(self, targets, init, self.value_and_jacobian)


def invert_map(fn: Callable[[np.ndarray], np.ndarray], targets: np.ndarray, init: np.ndarray,
               value_and_jacobian: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Solve fn(x) = targets for (N, 2) x by Newton's method.

    The Jacobian is analytic when ``value_and_jacobian`` is given, else central differences. Raises
    ArithmeticError when the residual stays above NEWTON_TOL_PX (the map is not invertible there,
    e.g. a fold): callers must use milder warps rather than trust such points.
    """
    if value_and_jacobian is None:
        value_and_jacobian = _numeric_jacobian(fn)
    x = np.array(init, dtype=np.float64)
    for _ in range(NEWTON_STEPS):
        value, jac = value_and_jacobian(x)
        r = value - targets
        if np.abs(r).max(initial=0.0) < NEWTON_TOL_PX:
            return x
        x -= np.linalg.solve(jac, r[..., None])[..., 0]
    worst = np.abs(fn(x) - targets).max(initial=0.0)
    if worst >= NEWTON_TOL_PX:
        raise ArithmeticError(f"warp inversion did not converge (residual {worst:.2e} px); use a milder warp.")
    return x


def _numeric_jacobian(fn):
    e = JACOBIAN_EPS_PX

    def value_and_jacobian(x: np.ndarray):
        jx = (fn(x + [e, 0]) - fn(x - [e, 0])) / (2 * e)
        jy = (fn(x + [0, e]) - fn(x - [0, e])) / (2 * e)
        return fn(x), np.stack([jx, jy], axis=2)

    return value_and_jacobian


def grid_points(h: int, w: int) -> np.ndarray:
    """(h*w, 2) xy pixel centres in row-major order."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
