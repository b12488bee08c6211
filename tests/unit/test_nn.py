import numpy as np
import pytest
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


def test_stage_end_layers_are_the_last_of_each_stride_finest_first():
    from pipeline_lib.methods import stage_end_layers

    layers = [{"name": n, "stride": s} for n, s in
              (("a", 4), ("b", 8), ("c", 8), ("d", 16), ("e", 16), ("f", 16), ("g", 32), ("h", 32.0))]
    assert stage_end_layers(layers) == ["c", "f", "h"]
    assert stage_end_layers(layers[:5]) == ["c", "e"]  # a backbone that stops at stride 16
    with pytest.raises(ValueError, match="no layer of stride 8/16/32"):
        stage_end_layers(layers[:1])


def test_nn_on_stage_ends_matches_an_image_to_itself(tiny_demo_store):
    """Every keypoint of an image matched into the same image lands in its own cell (the identity)."""
    from pipeline_lib.methods import nn_predictor, stage_end_layers

    index, store = tiny_demo_store
    image = sorted(index.images)[0]
    layers = stage_end_layers(store.layers)
    h, w = store.resized_hw(image)
    cell = max(h, w) / 16  # stride of the base (8) x 2: within one base cell of the truth
    kps = np.array([[20.5, 30.0], [64.0, 64.0], [100.0, 90.0]])
    out = nn_predictor(store, layers, torch.device("cpu"))(image, image, kps)
    assert np.abs(out - kps).max() <= cell, out
