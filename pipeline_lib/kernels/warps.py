"""Affine maps and thin-plate splines (TPS) in torch: points, sampling grids, composition, inverses.

Every transform is a *backward* map, as for a spatial transformer: it sends a point q of the output
(target) image to the point T(q) of the input (source) image that q shows. Points are (B, M, 2) xy;
WeakAlign works in normalised coordinates (``grids.pixels_to_normalised``), so the same parameters hold
at any resolution; the demo generator works in pixels.

- affine: ``theta_aff`` (B, 6) = the row-major 2x3 matrix [a11 a12 tx a21 a22 ty] of
  ``F.affine_grid``: T(q) = A q + t. Identity: (1, 0, 0, 0, 1, 0).
- thin-plate spline through control points P (N, 2): T interpolates P_i -> Q_i with
  U(r) = r^2 log r^2 (Bookstein 1989); :func:`tps_fit` solves for its radial weights and affine part.
  CNNGeometric's parametrisation (Rocco et al. 2017, ``TpsGridGen``): ``theta_tps`` (B, 2N) =
  (x_1..x_N, y_1..y_N), the positions Q_i of the N = g x g control points of a regular grid on
  [-1, 1]^2 (row-major, x fastest). Identity: Q = P.
- affine then TPS (Rocco et al. 2018, two-stage model): the TPS is estimated between the
  affine-warped source and the target, so the composed backward map is T(q) = A(TPS(q)) + t.

Forward maps (source point -> target point) invert the affine exactly and the TPS by Newton's method
(:func:`newton_solve`), from a given start or from the best point of a dense search grid.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .grids import normalised_cell_grid

AFFINE_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
NEWTON_STEPS = 30
NEWTON_TOL = 1e-9  # normalised units (~1e-7 px on a 240 px image)
SEARCH_GRID = 41  # points per side of the dense initialisation grid of the TPS inversion
SEARCH_EXTENT = 2.0  # the search grid spans [-2, 2]^2 normalised (points may lie outside the image)
MIN_DET = 1e-12  # Jacobian determinants below this are clamped (a fold: the residual then says so)

# (B, M, 2) points -> values (B, M, 2) and Jacobians (B, M, 2, 2) [d out_i / d in_j]
ValueAndJacobian = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _check_points(pts: torch.Tensor, batch: int, name: str) -> None:
    if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[0] != batch:
        raise ValueError(f"{name}: points must be (B={batch}, M, 2), got {tuple(pts.shape)}")


# --------------------------------------------------------------------------- affine


def identity_affine(batch: int, device=None, dtype=None) -> torch.Tensor:
    """(B, 6) identity affine parameters."""
    return torch.tensor(AFFINE_IDENTITY, device=device, dtype=dtype or torch.get_default_dtype()).repeat(batch, 1)


def _affine_matrix(theta_aff: torch.Tensor) -> torch.Tensor:
    if theta_aff.ndim != 2 or theta_aff.shape[1] != 6:
        raise ValueError(f"theta_aff must be (B, 6), got {tuple(theta_aff.shape)}")
    return theta_aff.view(-1, 2, 3)


def affine_points(theta_aff: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """T(q) = A q + t for (B, M, 2) points -> (B, M, 2)."""
    m = _affine_matrix(theta_aff)
    _check_points(pts, m.shape[0], "affine_points")
    return pts @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def invert_affine(theta_aff: torch.Tensor) -> torch.Tensor:
    """(B, 6) parameters of the inverse affine map."""
    m = _affine_matrix(theta_aff)
    a_inv = torch.linalg.inv(m[:, :, :2])
    return torch.cat([a_inv, -(a_inv @ m[:, :, 2:])], dim=2).reshape(-1, 6)


def affine_grid(theta_aff: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, 2) sampling grid of an affine map for an (H, W) output (``F.affine_grid``)."""
    m = _affine_matrix(theta_aff)
    return F.affine_grid(m, [m.shape[0], 1, *hw], align_corners=False)


# --------------------------------------------------------------------------- thin-plate spline


def tps_radial(r2: torch.Tensor) -> torch.Tensor:
    """U = r^2 log r^2 of squared distances, 0 at r = 0."""
    return r2 * torch.log(r2.clamp_min(torch.finfo(r2.dtype).tiny))


def tps_fit(ctrl: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The TPS through (N, 2) control points taking (B, N, 2) ``values`` there -> (radial weights
    W (B, N, 2), affine part A (B, 3, 2) for the terms [1, x, y])."""
    n = ctrl.shape[0]
    lhs = ctrl.new_zeros((n + 3, n + 3))
    lhs[:n, :n] = tps_radial(((ctrl[:, None] - ctrl[None]) ** 2).sum(-1))
    ones_p = torch.cat([ctrl.new_ones((n, 1)), ctrl], dim=1)
    lhs[:n, n:], lhs[n:, :n] = ones_p, ones_p.T
    sol = torch.linalg.inv(lhs)[None, :, :n] @ values  # (B, N + 3, 2)
    return sol[:, :n], sol[:, n:]


def tps_values(ctrl: torch.Tensor, weights: torch.Tensor, affine: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """A fitted TPS (:func:`tps_fit`) at (B, M, 2) points -> (B, M, 2)."""
    _check_points(pts, weights.shape[0], "tps_values")
    u = tps_radial(((pts[:, :, None] - ctrl[None, None]) ** 2).sum(-1))  # (B, M, N)
    return affine[:, None, 0] + pts[..., :1] * affine[:, None, 1] + pts[..., 1:] * affine[:, None, 2] + u @ weights


def tps_values_and_jacobians(ctrl: torch.Tensor, weights: torch.Tensor, affine: torch.Tensor,
                             pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fitted TPS and its Jacobians [d out_i / d in_j] at (B, M, 2) points -> ((B, M, 2), (B, M, 2, 2))."""
    d = pts[:, :, None] - ctrl[None, None]  # (B, M, N, 2)
    r2 = (d ** 2).sum(-1)
    logr2 = torch.log(r2.clamp_min(torch.finfo(r2.dtype).tiny))
    value = affine[:, None, 0] + pts[..., :1] * affine[:, None, 1] + pts[..., 1:] * affine[:, None, 2] + \
        (r2 * logr2) @ weights
    du = torch.where(r2 > 0, 2.0 * (logr2 + 1.0), torch.zeros_like(r2))  # dU/dr2 * 2, (B, M, N)
    jac = torch.einsum("bmn,bni,bmnj->bmij", du, weights, d) + affine[:, None, 1:].transpose(2, 3)
    return value, jac


def tps_control_points(grid_size: int, device=None, dtype=None) -> torch.Tensor:
    """(g*g, 2) control points P: a regular g x g grid on [-1, 1]^2, row-major (x fastest)."""
    if grid_size < 2:
        raise ValueError(f"tps grid_size must be >= 2, got {grid_size}")
    axis = torch.linspace(-1, 1, grid_size, device=device, dtype=dtype or torch.get_default_dtype())
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def identity_tps(batch: int, grid_size: int, device=None, dtype=None) -> torch.Tensor:
    """(B, 2 g^2) identity TPS parameters (Q = P)."""
    p = tps_control_points(grid_size, device, dtype)
    return torch.cat([p[:, 0], p[:, 1]]).repeat(batch, 1)


def _grid_size(theta_tps: torch.Tensor) -> int:
    if theta_tps.ndim != 2:
        raise ValueError(f"theta_tps must be (B, 2 g^2), got {tuple(theta_tps.shape)}")
    g = int(round((theta_tps.shape[1] / 2) ** 0.5))
    if 2 * g * g != theta_tps.shape[1] or g < 2:
        raise ValueError(f"theta_tps must hold 2 g^2 values (g >= 2), got {theta_tps.shape[1]}")
    return g


def tps_coefficients(theta_tps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 2N) grid parameters -> (control points P (N, 2), radial weights W (B, N, 2), affine part
    A (B, 3, 2))."""
    p = tps_control_points(_grid_size(theta_tps), theta_tps.device, theta_tps.dtype)
    n = p.shape[0]
    return (p, *tps_fit(p, torch.stack([theta_tps[:, :n], theta_tps[:, n:]], dim=2)))


def tps_points(theta_tps: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """TPS backward map (grid parameters) of (B, M, 2) points -> (B, M, 2)."""
    return tps_values(*tps_coefficients(theta_tps), pts)


def tps_jacobian(theta_tps: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TPS values (B, M, 2) and Jacobians (B, M, 2, 2) [d out_i / d in_j] at (B, M, 2) points."""
    return tps_values_and_jacobians(*tps_coefficients(theta_tps), pts)


def tps_grid(theta_tps: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, 2) sampling grid of a TPS map for an (H, W) output."""
    b = theta_tps.shape[0]
    q = normalised_cell_grid(*hw, device=theta_tps.device, dtype=theta_tps.dtype).view(1, -1, 2).expand(b, -1, -1)
    return tps_points(theta_tps, q).view(b, *hw, 2)


# --------------------------------------------------------------------------- composition


def composed_points(theta_aff: torch.Tensor, theta_tps: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Backward map of affine-then-TPS alignment, A(TPS(q)) + t, of (B, M, 2) target points ->
    (B, M, 2) source points."""
    return affine_points(theta_aff, tps_points(theta_tps, pts))


def composed_grid(theta_aff: torch.Tensor, theta_tps: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, 2) sampling grid of the composed map for an (H, W) output."""
    b = theta_aff.shape[0]
    return affine_points(theta_aff, tps_grid(theta_tps, hw).view(b, -1, 2)).view(b, *hw, 2)


# --------------------------------------------------------------------------- inverses


def newton_solve(value_and_jacobian: ValueAndJacobian, targets: torch.Tensor, init: torch.Tensor,
                 tol: float = NEWTON_TOL, steps: int = NEWTON_STEPS) -> torch.Tensor:
    """Points q with f(q) = targets by Newton's method from ``init``, all (B, M, 2); stops once every
    residual component is below ``tol`` or after ``steps`` steps (check the residual: a fold or an
    unreachable target leaves it large)."""
    q = init
    for _ in range(steps):
        val, jac = value_and_jacobian(q)
        r = val - targets
        if r.numel() == 0 or r.abs().max() < tol:
            break
        det = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
        det = torch.where(det.abs() < MIN_DET, torch.full_like(det, MIN_DET), det)
        dx = (jac[..., 1, 1] * r[..., 0] - jac[..., 0, 1] * r[..., 1]) / det
        dy = (-jac[..., 1, 0] * r[..., 0] + jac[..., 0, 0] * r[..., 1]) / det
        q = q - torch.stack([dx, dy], -1)
    return q


def invert_tps_points(theta_tps: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points q with TPS(q) = targets (grid parameters, normalised coordinates), for (B, M, 2) targets
    -> (q (B, M, 2), residual (B, M)).

    Starts from the nearest point of a dense search grid (robust to mild folds) and refines by
    Newton's method in float64. ``residual`` is |TPS(q) - target| in normalised units: large
    values mark targets the TPS does not reach (a fold or outside its image).
    """
    _check_points(targets, theta_tps.shape[0], "invert_tps_points")
    dtype = targets.dtype
    th, tg = theta_tps.double(), targets.double()
    b = th.shape[0]
    axis = torch.linspace(-SEARCH_EXTENT, SEARCH_EXTENT, SEARCH_GRID, device=th.device, dtype=th.dtype)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    cand = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)[None].expand(b, -1, -1)
    cand_val = tps_points(th, cand)
    init = torch.gather(cand, 1, torch.cdist(tg, cand_val).argmin(2)[..., None].expand(-1, -1, 2)).clone()
    q = newton_solve(lambda x: tps_jacobian(th, x), tg, init)
    residual = (tps_points(th, q) - tg).norm(dim=-1)
    return q.to(dtype), residual.to(dtype)


def inverse_composed_points(theta_aff: torch.Tensor, theta_tps: torch.Tensor,
                            src_pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward map of affine-then-TPS alignment: (B, M, 2) source points -> (target points (B, M, 2),
    residual (B, M)); the inverse of :func:`composed_points`."""
    return invert_tps_points(theta_tps, affine_points(invert_affine(theta_aff), src_pts))
