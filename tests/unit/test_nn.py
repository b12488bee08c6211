import numpy as np
import torch

from pipeline_lib.geometry import scale_points
from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.kernels.sampling import sample_at_pixels
from pipeline_lib.methods.nn import nn_transfer


def test_pure_translation_gives_that_flow():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(16, 12, 12, generator=g)
    trg = torch.roll(src, shifts=(2, 3), dims=(1, 2))  # content moves 2 cells down, 3 right
    hw = (96, 96)  # 8 px per cell
    kps = cell_centres(12, 12, hw)[torch.tensor([13, 40, 77])]  # interior cells, no wrap-around
    out = nn_transfer(src, trg, kps, hw, hw)
    torch.testing.assert_close(out, kps + torch.tensor([3 * 8.0, 2 * 8.0]))


def test_descriptors_at_cell_centres_are_the_cells_features():
    feat = torch.randn(5, 4, 6)
    centres = cell_centres(4, 6, (40, 60))
    torch.testing.assert_close(sample_at_pixels(feat, centres, (40, 60)), feat.reshape(5, -1).T)


def test_empty_keypoints():
    assert nn_transfer(torch.randn(3, 4, 4), torch.randn(3, 4, 4), torch.zeros(0, 2), (8, 8), (8, 8)).shape == (0, 2)


def test_scale_points_round_trip_keeps_pixel_centres():
    kps = np.array([[0.0, 0.0], [99.0, 49.0]])
    there = scale_points(kps, (50, 100), (150, 300))
    np.testing.assert_allclose(there, [[1.0, 1.0], [298.0, 148.0]])
    np.testing.assert_allclose(scale_points(there, (150, 300), (50, 100)), kps)
