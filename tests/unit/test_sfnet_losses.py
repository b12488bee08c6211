"""SFNet losses (Lee et al. Eqs. 4-10): zero in their ideal case, growing away from it."""

import pytest
import torch

from pipeline_lib.sfnet import LAMBDA_FLOW, LAMBDA_MASK, LAMBDA_SMOOTH, SFNetLossConfig, SFNetOutput, sfnet_loss
from pipeline_lib.sfnet.losses import flow_consistency, mask_consistency, smoothness
from pipeline_lib.sfnet.model import normalised_cell_grid

H, W = 10, 12
SHIFT_CELLS = 2.0  # the target is the source moved 2 cells to the right


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def cells_to_norm(dx_cells, w=W):
    return 2.0 * dx_cells / w


def disk_mask(cx, cy, r=2.6):
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    return (((xs - cx) ** 2 + (ys - cy) ** 2) < r * r).to(torch.float64)[None, None]


def translation(dx_s2t_cells, dx_t2s_cells):
    """Grids and flows of constant horizontal displacements (normalised units), batch of 1."""
    grid = normalised_cell_grid(H, W, dtype=torch.float64)[None]
    f_s = torch.zeros_like(grid)
    f_s[..., 0] = cells_to_norm(dx_s2t_cells)
    f_t = torch.zeros_like(grid)
    f_t[..., 0] = cells_to_norm(dx_t2s_cells)
    return grid + f_s, grid + f_t, f_s, f_t


@pytest.fixture
def masks():
    return disk_mask(4.0, 5.0), disk_mask(4.0 + SHIFT_CELLS, 5.0)


def test_paper_weights():
    cfg = SFNetLossConfig()
    assert (cfg.lambda_mask, cfg.lambda_flow, cfg.lambda_smooth) == (LAMBDA_MASK, LAMBDA_FLOW, LAMBDA_SMOOTH)
    assert (LAMBDA_MASK, LAMBDA_FLOW, LAMBDA_SMOOTH) == (3, 16, 0.5)  # Lee et al. Sec. 4.1


def test_mask_consistency_is_zero_for_perfect_masks_and_grows_with_the_error(masks):
    src_m, trg_m = masks
    gs, gt, _, _ = translation(SHIFT_CELLS, -SHIFT_CELLS)
    assert float(mask_consistency(gs, gt, src_m, trg_m)) == pytest.approx(0.0, abs=1e-12)
    losses = []
    for err in (0.5, 1.0, 2.0, 3.0):
        gs, gt, _, _ = translation(SHIFT_CELLS + err, -SHIFT_CELLS - err)
        losses.append(float(mask_consistency(gs, gt, src_m, trg_m)))
    assert 0 < losses[0] < losses[1] < losses[2] < losses[3]


def test_flow_consistency_is_zero_for_consistent_flows_and_grows_away(masks):
    src_m, trg_m = masks
    gs, gt, fs, ft = translation(SHIFT_CELLS, -SHIFT_CELLS)
    assert float(flow_consistency(fs, ft, gs, gt, src_m, trg_m)) == pytest.approx(0.0, abs=1e-12)
    losses = []
    for err in (0.25, 0.5, 1.0, 2.0):
        gs, gt, fs, ft = translation(SHIFT_CELLS, -SHIFT_CELLS + err)  # backward flow no longer undoes the forward
        losses.append(float(flow_consistency(fs, ft, gs, gt, src_m, trg_m)))
    assert 0 < losses[0] < losses[1] < losses[2] < losses[3]
    # Eq. 8 per image: squared error sum over the mask / foreground count; both halves see err
    expect = 2 * cells_to_norm(2.0) ** 2
    assert losses[3] == pytest.approx(expect, rel=1e-6)


def test_flow_consistency_ignores_background():
    zeros = torch.zeros(1, 1, H, W, dtype=torch.float64)
    gs, gt, fs, ft = translation(SHIFT_CELLS, 0.0)  # inconsistent, but no foreground
    assert float(flow_consistency(fs, ft, gs, gt, zeros, zeros)) == 0.0


def test_smoothness_of_a_constant_flow_is_zero_and_grows_with_the_gradient(masks):
    src_m, trg_m = masks
    _, _, fs, ft = translation(SHIFT_CELLS, -SHIFT_CELLS)
    assert float(smoothness(fs, ft, src_m, trg_m)) == 0.0
    ones = torch.ones_like(src_m)
    grid = normalised_cell_grid(H, W, dtype=torch.float64)[None]
    losses = [float(smoothness(a * grid, a * grid, ones, ones)) for a in (0.1, 0.2, 0.4)]
    assert 0 < losses[0] < losses[1] < losses[2]
    # linear flow a * (x, y): |dFx/dx| = a * 2 / W per cell, |dFy/dy| = a * 2 / H, halved on the two
    # border cells of each line (replicated border); mean over all (foreground) cells; two images
    expect = 2 * 0.1 * ((W - 1) / W * 2 / W + (H - 1) / H * 2 / H)
    assert losses[0] == pytest.approx(expect, rel=1e-9)


def test_total_loss_is_zero_in_the_ideal_case_and_positive_otherwise(masks):
    src_m, trg_m = masks
    gs, gt, fs, ft = translation(SHIFT_CELLS, -SHIFT_CELLS)
    corr = torch.zeros(1, H, W, H, W, dtype=torch.float64)
    ideal, parts = sfnet_loss(SFNetOutput(gs, gt, fs, ft, corr), src_m, trg_m)
    assert float(ideal) == pytest.approx(0.0, abs=1e-12) and set(parts) == {"mask", "flow", "smooth"}
    gs, gt, fs, ft = translation(SHIFT_CELLS + 1.0, -SHIFT_CELLS)
    worse, _ = sfnet_loss(SFNetOutput(gs, gt, fs, ft, corr), src_m, trg_m)
    assert float(worse) > 0.01


def test_masks_at_image_resolution_are_downsampled_to_the_grid(masks):
    src_m, trg_m = masks
    up = lambda m: m.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # noqa: E731
    gs, gt, fs, ft = translation(SHIFT_CELLS, -SHIFT_CELLS)
    loss, _ = sfnet_loss(SFNetOutput(gs, gt, fs, ft, torch.zeros(1)), up(src_m), up(trg_m))
    assert float(loss) == pytest.approx(0.0, abs=1e-12)


def test_mismatched_mask_shape_is_a_clear_error(masks):
    src_m, trg_m = masks
    gs, gt, _, _ = translation(SHIFT_CELLS, -SHIFT_CELLS)
    with pytest.raises(ValueError, match="downsample_mask"):
        mask_consistency(gs, gt, src_m[..., :5, :], trg_m)
