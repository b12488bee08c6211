"""SFNet's kernels (pipeline_lib.kernels) with known answers: kernel soft argmax, correlation, matches; and
the SFNet model's layers and shapes."""

import pytest
import torch

from pipeline_lib.backbones import build_backbone, layers_by_stride, measure_strides
from pipeline_lib.kernels.correlation import correlation
from pipeline_lib.kernels.grids import cell_to_normalised, normalised_cell_grid
from pipeline_lib.kernels.soft_argmax import BETA, KERNEL_SIGMA_CELLS, kernel_soft_argmax, match_positions
from pipeline_lib.sfnet import SFNetConfig, build_sfnet


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def gaussian_peak(hw, centre_xy, sigma, dtype=torch.float64):
    ys, xs = torch.meshgrid(torch.arange(hw[0], dtype=dtype), torch.arange(hw[1], dtype=dtype), indexing="ij")
    s = torch.exp(-((xs - centre_xy[0]) ** 2 + (ys - centre_xy[1]) ** 2) / (2 * sigma ** 2))
    return s / s.norm()  # the L2-normalised score map n_p of Lee et al.


def test_paper_constants():
    assert BETA == 50.0 and KERNEL_SIGMA_CELLS == 5.0


@pytest.mark.parametrize("centre", [(3.3, 4.6), (7.45, 2.5), (6.0, 5.0), (1.8, 7.25)])
def test_kernel_soft_argmax_recovers_a_planted_peak_between_cells(centre):
    # A peak between grid cells, 2 cells wide; the estimate is within 0.1 cell (paper's beta, sigma).
    scores = gaussian_peak((10, 12), centre, sigma=2.0)[None, None]
    est = kernel_soft_argmax(scores, BETA, KERNEL_SIGMA_CELLS)[0, 0]
    assert (est - torch.tensor(centre, dtype=torch.float64)).abs().max() < 0.1


def test_kernel_soft_argmax_sub_cell_accuracy_over_all_offsets_on_the_paper_grid():
    # Lee et al. use a 20 x 20 grid: every sub-cell offset of the peak is recovered within 0.1 cell.
    worst = 0.0
    for ox in torch.linspace(-0.45, 0.45, 7):
        for oy in torch.linspace(-0.45, 0.45, 7):
            c = (9.0 + float(ox), 10.0 + float(oy))
            est = kernel_soft_argmax(gaussian_peak((20, 20), c, 2.0)[None, None])[0, 0]
            worst = max(worst, float((est - torch.tensor(c, dtype=torch.float64)).abs().max()))
    assert worst < 0.1


def test_kernel_suppresses_a_distant_second_mode_that_pulls_the_plain_soft_argmax():
    main = gaussian_peak((20, 20), (4.0, 5.0), 1.5)
    distractor = gaussian_peak((20, 20), (16.0, 15.0), 1.5)
    scores = (main + 0.9 * distractor)[None, None]
    kernel = kernel_soft_argmax(scores, BETA, KERNEL_SIGMA_CELLS)[0, 0]
    plain = kernel_soft_argmax(scores, BETA, None)[0, 0]
    assert (kernel - torch.tensor([4.0, 5.0], dtype=torch.float64)).abs().max() < 0.1
    assert (plain - torch.tensor([4.0, 5.0], dtype=torch.float64)).abs().max() > 1.0


def test_kernel_soft_argmax_is_differentiable():
    scores = gaussian_peak((5, 6), (2.3, 1.7), 1.5)[None, None].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: kernel_soft_argmax(s, 5.0, KERNEL_SIGMA_CELLS), (scores,))


def test_kernel_soft_argmax_rejects_bad_shapes():
    with pytest.raises(ValueError, match="kernel_soft_argmax"):
        kernel_soft_argmax(torch.zeros(3, 4, 5))


def test_one_hot_features_match_themselves_and_a_shift_gives_the_shift():
    h, w = 4, 5
    feats = torch.eye(h * w).view(h * w, h, w)[None]  # every cell its own one-hot descriptor
    gs, gt = match_positions(correlation(feats, feats))
    grid = normalised_cell_grid(h, w, dtype=feats.dtype)
    torch.testing.assert_close(gs[0], grid, atol=1e-5, rtol=0)
    torch.testing.assert_close(gt[0], grid, atol=1e-5, rtol=0)
    shifted = torch.roll(feats, shifts=1, dims=3)  # target content moves one cell right
    gs, _ = match_positions(correlation(feats, shifted))
    expect = cell_to_normalised(torch.tensor([2.0, 1.0]), (h, w))  # source cell (x=1, y=1) -> target x=2
    torch.testing.assert_close(gs[0, 1, 1], expect, atol=1e-5, rtol=0)


def test_cell_coordinates_follow_the_package_convention():
    # cell j of a w-wide grid is centred at (j + 0.5) / w of the image width
    grid = normalised_cell_grid(2, 4)
    assert torch.allclose(grid[0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.allclose(grid[:, 0, 1], torch.tensor([-0.5, 0.5]))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # seeds the random-init backbone and the adaptation layers
    return build_sfnet(SFNetConfig(), build_backbone("efficientnet_lite0", pretrained=False)).eval()


def test_layers_are_the_last_stride_16_and_stride_32_blocks(model):
    assert model.layers == ("block10", "block15")
    assert layers_by_stride(measure_strides(model.backbone), (16, 32)) == ("block10", "block15")


@pytest.mark.parametrize("hw, grid", [((64, 64), (4, 4)), ((72, 96), (5, 6))])
def test_forward_shapes(model, hw, grid):
    # documented: grid (ceil(H / 16), ceil(W / 16)); flows and matches (B, h, w, 2)
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw), torch.rand(2, 3, *hw))
    assert out.grid_s2t.shape == out.flow_s2t.shape == (2, *grid, 2)
    assert out.grid_t2s.shape == out.flow_t2s.shape == (2, *grid, 2)
    assert out.corr.shape == (2, *grid, *grid)
    assert out.grid_s2t.abs().max() <= 1.0 and (out.corr >= 0).all()


def test_forward_with_different_image_sizes(model):
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 72, 96))
    assert out.grid_s2t.shape == (1, 4, 4, 2) and out.grid_t2s.shape == (1, 5, 6, 2)


def test_backbone_is_frozen_and_stays_in_eval(model):
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.adaptation.parameters())
    model.train()
    assert not model.backbone.training and model.adaptation.training
    model.eval()
