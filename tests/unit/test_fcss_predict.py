"""FCSS inference: keypoint transfer by nearest neighbour on FCSS descriptors."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline_lib.backbones import build_backbone
from pipeline_lib.datasets.base import ImageRecord, Pair
from pipeline_lib.fcss.model import FCSSConfig, build_fcss
from pipeline_lib.fcss.predict import (DescriptorFrame, centre_pair, describe, descriptor_transfer,
                                      predict_keypoints)
from pipeline_lib.kernels.dense_match import HoughCache, MatchParams
from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.pair_prediction import predict_pairs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_fcss(FCSSConfig(n_patterns=16), build_backbone("efficientnet_lite0", pretrained=False))


def test_an_image_matched_to_itself_keeps_keypoints_on_cell_centres(model):
    img = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1))
    centres = cell_centres(32, 40, (64, 80))  # stride-2 descriptor grid of a 64x80 image
    kps = centres[[0, 77, 500, 1279]]
    out = predict_keypoints(model, img, img, kps)
    assert out.shape == (4, 2)
    torch.testing.assert_close(out, kps)


def test_transfer_lands_inside_the_target_and_restores_training_mode(model):
    g = torch.Generator().manual_seed(2)
    src, trg = torch.rand(3, 64, 64, generator=g), torch.rand(3, 72, 96, generator=g)
    model.train()
    out = predict_keypoints(model, src, trg, torch.tensor([[3.0, 5.0], [60.0, 40.0], [31.5, 31.5]]))
    assert model.training and not model.backbone.training
    assert out.shape == (3, 2)
    assert (out[:, 0] >= 0).all() and (out[:, 0] <= 95).all() and (out[:, 1] >= 0).all() and (out[:, 1] <= 71).all()
    assert predict_keypoints(model, src, trg, torch.zeros(0, 2)).shape == (0, 2)
    with pytest.raises(ValueError, match="K, 2"):
        predict_keypoints(model, src, trg, torch.zeros(3))
    assert describe(model, src).shape == (48, 32, 32)


def test_predict_pairs_returns_original_pixels_and_nan_for_invalid(model, tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    images = {"c/a": ImageRecord("c/a", tmp_path / "a.png", "c", 60, 80)}
    kps = np.array([[10.0, 12.0], [50.0, 30.0], [np.nan, np.nan]])
    pair = Pair("c/a->c/a", "c", "c/a", "c/a", kps, kps, np.array([True, True, False]))
    frame = DescriptorFrame(model, images, longer_side=40)
    preds, ms = predict_pairs(frame, [pair], frame, progress=False)
    out = preds["c/a->c/a"]
    assert out.shape == (3, 2) and np.isnan(out[2]).all() and ms > 0
    # self-match at 40 px: a keypoint's descriptor is a blend of its 4 surrounding cells (stride 2),
    # so it lands on one of them: less than one cell (2 px at 40 px = 4 px at 80 px) per coordinate
    assert np.abs(out[:2] - kps[:2]).max() <= 4.0


def test_rhm_transfer_follows_a_translation_that_decoys_fool_nn():
    """Descriptor maps (L, 10, 10) at stride 8: the target is the source moved by (2, 1) cells, and six source
    cells also appear verbatim at a wrong target cell while their true match is a noisy copy. Nearest
    neighbours take the decoys; RHM's Hough votes for the common offset move every keypoint by (16, 8) px."""
    g = torch.Generator().manual_seed(0)
    side, stride, (dx, dy) = 10, 8, (2, 1)
    src = torch.rand(32, side, side, generator=g)  # non-negative, as FCSS descriptors are
    trg = torch.rand(32, side, side, generator=g)
    trg[:, dy:, dx:] = src[:, :side - dy, :side - dx]
    decoyed = [(2, 3), (4, 4), (5, 1), (7, 6)]
    for (i, j), (a, b) in zip(decoyed, [(0, 4), (0, 7), (3, 0), (6, 1)]):
        trg[:, a, b] = src[:, i, j]
        trg[:, i + dy, j + dx] = src[:, i, j] + 0.3 * torch.rand(32, generator=g)
    hw = (side * stride, side * stride)
    kps = torch.tensor([[(j + 0.5) * stride - 0.5, (i + 0.5) * stride - 0.5] for i, j in decoyed])
    expected = kps + torch.tensor([dx * stride, dy * stride], dtype=torch.float32)
    spaces = HoughCache(MatchParams(), torch.device("cpu"))
    nn = descriptor_transfer(src, trg, kps, hw, hw, "nn")
    ours = descriptor_transfer(src, trg, kps, hw, hw, "rhm", spaces=spaces)
    assert (nn - expected).norm(dim=1).min() > stride  # every decoyed keypoint goes to its decoy
    torch.testing.assert_close(ours, expected)
    with pytest.raises(ValueError, match="unknown matcher 'sift'"):
        descriptor_transfer(src, trg, kps, hw, hw, "sift")
    with pytest.raises(ValueError, match="HoughCache"):
        descriptor_transfer(src, trg, kps, hw, hw, "rhm")


def test_centring_makes_cosines_pearson_correlations_and_ignores_a_common_component():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(16, 5, 6, generator=g), torch.rand(16, 4, 7, generator=g)
    ca, cb = centre_pair(a, b)
    both = torch.cat([a.flatten(1), b.flatten(1)], 1)
    centred = both - both.mean(1, keepdim=True)
    x, y = centred[:, 3], centred[:, 30 + 9]  # a cell of a and a cell of b
    torch.testing.assert_close((ca.flatten(1)[:, 3] * cb.flatten(1)[:, 9]).sum(), (x @ y) / (x.norm() * y.norm()))
    torch.testing.assert_close(ca.norm(dim=0), torch.ones(5, 6))
    # RHM on centred maps: a descriptor shared by every cell of both images changes no keypoint
    common = 3.0 * torch.rand(16, 1, 1, generator=g)
    spaces = HoughCache(MatchParams(), torch.device("cpu"))
    kps = torch.tensor([[4.0, 3.0], [20.0, 14.0]])
    torch.testing.assert_close(descriptor_transfer(a + common, b + common, kps, (20, 24), (16, 28), "rhm", spaces=spaces),
                               descriptor_transfer(a, b, kps, (20, 24), (16, 28), "rhm", spaces=spaces))
