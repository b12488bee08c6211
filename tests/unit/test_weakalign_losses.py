"""Soft-inlier count (Rocco et al. 2018 Sec. 3.2): highest at the true transform."""

import pytest
import torch
import torch.nn.functional as F

from pipeline_lib.kernels.grids import normalised_cell_grid
from pipeline_lib.kernels.warps import affine_grid, affine_points, composed_grid, identity_affine, identity_tps
from pipeline_lib.weakalign import (INLIER_THRESHOLD_FRACTION, TPS_GRID_SIZE, WeakAlignLossConfig, WeakAlignOutput,
                                    identity_mask, soft_inlier_count, weakalign_loss)
from pipeline_lib.weakalign.losses import default_threshold

D = torch.float64
L = 15  # Rocco et al.: 15 x 15 grid at 240 px
TRUE_AFFINE = torch.tensor([[0.85, -0.1, 0.12, 0.08, 0.9, -0.1]], dtype=D)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def matches_of(theta_aff, hw=(L, L), width_cells=0.7):
    """A normalised correlation (1, h*w, h, w) whose score map for every target cell q peaks at the
    source position T(q) of the affine ``theta_aff`` (cell units, Gaussian of ``width_cells``)."""
    h, w = hw
    q = normalised_cell_grid(h, w, dtype=D).view(1, -1, 2)
    t_q = affine_points(theta_aff, q)[0]  # (h*w target, 2) normalised source xy
    t_cells = (t_q + 1) / 2 * torch.tensor([w, h], dtype=D) - 0.5
    ys, xs = torch.meshgrid(torch.arange(h, dtype=D), torch.arange(w, dtype=D), indexing="ij")
    src = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # (h*w source, 2), row-major as the channels
    s = torch.exp(-torch.cdist(src, t_cells) ** 2 / (2 * width_cells ** 2))  # (source, target)
    s = s / (s.norm(dim=0, keepdim=True) + 1e-12)
    return s.view(1, h * w, h, w)


def test_threshold_is_l_over_30():
    assert INLIER_THRESHOLD_FRACTION == pytest.approx(1 / 30)
    assert default_threshold((15, 15)) == pytest.approx(0.5)


def test_identity_mask_is_eq_10():
    m = identity_mask((4, 5), 0.5)
    assert m.shape == (20, 4, 5)
    assert torch.equal(m.view(20, 20), torch.eye(20))  # t < 1 cell: the diagonal
    m8 = identity_mask((4, 5), 1.5)  # t = 1.5: the 3 x 3 neighbourhood
    assert m8[1 * 5 + 2].sum() == 9 and m8[0].sum() == 4


def test_soft_inlier_count_is_highest_at_the_true_transform_and_falls_away():
    corr = matches_of(TRUE_AFFINE)
    for normalise in (True, False):
        def count(theta):
            return float(soft_inlier_count(corr, affine_grid(theta, (L, L)), (L, L), normalise=normalise)[0])

        best = count(TRUE_AFFINE)
        assert best > count(identity_affine(1, dtype=D))
        shifted = [count(TRUE_AFFINE + torch.tensor([[0, 0, d, 0, 0, 0]], dtype=D)) for d in (0.05, 0.1, 0.2, 0.4)]
        assert best > shifted[0] > shifted[1] > shifted[2] > shifted[3]
        zoomed = [count(TRUE_AFFINE * torch.tensor([[s, s, 1, s, s, 1]], dtype=D)) for s in (1.05, 1.1, 1.2)]
        assert best > zoomed[0] > zoomed[1] > zoomed[2]


def test_without_dilation_the_count_is_the_bilinear_score_at_the_mapped_position():
    # t < 1 keeps only the diagonal of the identity mask, so the warped mask is the bilinear weight
    # of each source cell at T(q): the unnormalised count is sum_q s_q(T(q)) read bilinearly.
    corr = torch.rand(1, 36, 6, 6, dtype=D)
    grid = affine_grid(TRUE_AFFINE, (6, 6))
    count = soft_inlier_count(corr, grid, (6, 6), threshold_cells=0.2, normalise=False)
    maps = corr[0].permute(1, 2, 0).reshape(36, 1, 6, 6)  # one source map per target cell
    read = F.grid_sample(maps, grid.reshape(36, 1, 1, 2), mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(count, read.sum().view(1))


def test_loss_is_lowest_at_the_true_transform_and_differentiable():
    corr = matches_of(TRUE_AFFINE)
    ident_tps = identity_tps(1, TPS_GRID_SIZE, dtype=D)

    def loss(theta_aff, theta_tps):
        return weakalign_loss(WeakAlignOutput(theta_aff, theta_tps, corr, corr))[0]

    true = float(loss(TRUE_AFFINE, ident_tps))
    bent = ident_tps + 0.08 * torch.linspace(-1, 1, 18, dtype=D)[None]
    assert true < float(loss(TRUE_AFFINE, bent)) and true < float(loss(identity_affine(1, dtype=D), ident_tps))
    theta = (TRUE_AFFINE + 0.05).clone().requires_grad_(True)
    loss(theta, ident_tps).backward()
    assert theta.grad is not None and theta.grad.abs().sum() > 0
    # composed term uses affine then TPS: an identity TPS gives the affine count twice
    c_aff = soft_inlier_count(corr, affine_grid(TRUE_AFFINE, (L, L)), (L, L))
    c_comp = soft_inlier_count(corr, composed_grid(TRUE_AFFINE, ident_tps, (L, L)), (L, L))
    torch.testing.assert_close(c_aff, c_comp)
    assert true == pytest.approx(-2 * float(c_aff))


def test_points_mapped_outside_the_source_count_nothing():
    corr = matches_of(identity_affine(1, dtype=D))
    far = torch.tensor([[1.0, 0, 5.0, 0, 1.0, 0]], dtype=D)  # everything lands right of the source
    assert float(soft_inlier_count(corr, affine_grid(far, (L, L)), (L, L), normalise=False)[0]) == 0.0


def test_config_and_shape_checks():
    with pytest.raises(ValueError, match="threshold"):
        WeakAlignLossConfig(threshold_cells=0)
    with pytest.raises(ValueError, match="soft_inlier_count"):
        soft_inlier_count(torch.zeros(1, 10, 4, 4), affine_grid(identity_affine(1), (4, 4)), (4, 4))
