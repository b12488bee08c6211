"""WeakAlign model shapes, training through the shared loop, and keypoint transfer directions."""

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline_lib.backbones import build_backbone
from pipeline_lib.datasets import DatasetIndex, ImageRecord, Pair
from pipeline_lib.config import ConfigError
from pipeline_lib.kernels.grids import normalised_to_pixels, pixels_to_normalised
from pipeline_lib.kernels.warps import composed_points, identity_affine, identity_tps, inverse_composed_points
from pipeline_lib.pair_prediction import on_images, predict_pairs
from pipeline_lib.training import TrainConfig, fit
from pipeline_lib.weakalign import (TPS_GRID_SIZE, AugmentConfig, WeakAlignConfig, build_weakalign, load_pair_images,
                                    make_batches, make_loss_fn, predict_keypoints, settings_from_config,
                                    training_pairs, weakalign_keypoint_fn)

S = 64  # model input side in these tests: a 4 x 4 feature grid


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def scenes(n, size=S, seed=0):
    """Smooth backgrounds with one textured ellipse each -> (n, 3, size, size) images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    bg = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    obj = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = size * (0.3 + 0.4 * torch.rand(n, 2, generator=g))
    r = size * (0.18 + 0.1 * torch.rand(n, 2, generator=g))
    m = (((xs - c[:, :1, None]) / r[:, :1, None]) ** 2 + ((ys - c[:, 1:, None]) / r[:, 1:, None]) ** 2 < 1).float()
    return bg * (1 - m[:, None]) + obj.clamp(0, 1) * m[:, None]


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)  # random-init backbone: seeded, so every run sees the same features
    return build_backbone("efficientnet_lite0", pretrained=False)


@pytest.fixture(scope="module")
def model(backbone):
    torch.manual_seed(0)
    return build_weakalign(WeakAlignConfig(image_size=S), backbone).eval()


@pytest.mark.parametrize("hw", [(64, 64), (72, 96)])
def test_forward_shapes(model, hw):
    # documented: inputs resized to image_size; theta_aff (B, 6), theta_tps (B, 18), corr (B, h*w, h, w)
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw), torch.rand(2, 3, *hw))
    assert model.layer == "block10" and model.grid_hw == (4, 4)
    assert out.theta_aff.shape == (2, 6) and out.theta_tps.shape == (2, 18)
    assert out.corr_aff.shape == out.corr_tps.shape == (2, 16, 4, 4)
    norms = out.corr_aff.pow(2).sum(1)  # L2-normalised over the source positions (Rocco et al. Eq. 2)
    assert torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-4) and (out.corr_aff >= 0).all()


def test_an_untrained_model_is_the_identity(model):
    with torch.no_grad():
        out = model(torch.rand(1, 3, 72, 96), torch.rand(1, 3, 50, 40))
    torch.testing.assert_close(out.theta_aff, identity_affine(1))
    torch.testing.assert_close(out.theta_tps, identity_tps(1, TPS_GRID_SIZE))


def test_paper_sized_regression_matches_cnngeometric(backbone):
    m = build_weakalign(WeakAlignConfig(), backbone)  # 240 px -> 15 x 15 grid, no padding: 7x7 -> 9, 5x5 -> 5
    assert m.grid_hw == (15, 15)
    assert [tuple(c.padding) for c in m.regress_affine.conv if isinstance(c, torch.nn.Conv2d)] == [(0, 0), (0, 0)]
    assert m.regress_affine.linear.in_features == 64 * 5 * 5 and m.regress_tps.linear.out_features == 18


def test_two_epochs_through_fit_reduce_the_loss(tmp_path, backbone):
    torch.manual_seed(0)
    model = build_weakalign(WeakAlignConfig(image_size=S), backbone)
    images = scenes(6)
    pairs = torch.tensor([[i, (i + 1) % 6] for i in range(6)] + [[i, i] for i in range(6)])
    res = fit(model, make_loss_fn(), make_batches(images, pairs, batch_size=3), TrainConfig(epochs=2, lr=1e-3, seed=0),
              tmp_path, torch.device("cpu"))
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 2 and losses[1] < losses[0] < 0
    assert [r["epoch"] for r in csv.DictReader((tmp_path / "train_log.csv").open())] == ["1", "2"]
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_augmentation_swaps_and_flips_pairs_consistently():
    images = scenes(2, size=16)
    pairs = torch.tensor([[0, 1]])
    swap_only = make_batches(images, pairs, 1, AugmentConfig(swap_prob=1.0, flip_prob=0.0, crop_fraction=0.0))
    b = next(iter(swap_only(0, torch.Generator().manual_seed(0))))
    assert torch.equal(b.src[0], images[1]) and torch.equal(b.trg[0], images[0])
    flip_only = make_batches(images, pairs, 1, AugmentConfig(swap_prob=0.0, flip_prob=1.0, crop_fraction=0.0))
    b = next(iter(flip_only(0, torch.Generator().manual_seed(0))))
    assert torch.equal(b.src[0], images[0].flip(-1)) and torch.equal(b.trg[0], images[1].flip(-1))


def fixed_transform_model(backbone, theta_aff, theta_tps):
    """A model whose estimate is the given transform whatever the images (zero weights, set biases)."""
    torch.manual_seed(0)
    m = build_weakalign(WeakAlignConfig(image_size=S), backbone).eval()
    with torch.no_grad():
        m.regress_affine.linear.bias.copy_(theta_aff[0] - identity_affine(1)[0])
        m.regress_tps.linear.bias.copy_(theta_tps[0] - identity_tps(1, TPS_GRID_SIZE)[0])
    return m


def test_keypoint_transfer_directions(backbone):
    theta_aff = torch.tensor([[0.9, -0.1, 0.08, 0.12, 1.05, -0.06]])
    theta_tps = identity_tps(1, TPS_GRID_SIZE) + 0.04 * torch.linspace(-1, 1, 18)[None]
    m = fixed_transform_model(backbone, theta_aff, theta_tps)
    src = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    trg = (np.random.default_rng(1).random((60, 40, 3)) * 255).astype(np.uint8)
    kps = np.array([[10.0, 20.0], [35.0, 25.0], [60.0, 40.0]])
    p = pixels_to_normalised(torch.from_numpy(kps), (50, 70))[None]
    # swap: the model runs on (target, source), its backward map sends source points to the target
    expect_swap = normalised_to_pixels(composed_points(theta_aff.double(), theta_tps.double(), p)[0], (60, 40))
    np.testing.assert_allclose(predict_keypoints(m, src, trg, kps, mode="swap"), expect_swap.numpy(), atol=1e-4)
    # invert: the model runs on (source, target), its backward map is inverted at the keypoints
    q, _ = inverse_composed_points(theta_aff.double(), theta_tps.double(), p)
    expect_inv = normalised_to_pixels(q[0], (60, 40)).numpy()
    np.testing.assert_allclose(predict_keypoints(m, src, trg, kps, mode="invert"), expect_inv, atol=1e-4)
    with pytest.raises(ValueError, match="mode"):
        predict_keypoints(m, src, trg, kps, mode="sideways")


def test_identity_model_maps_keypoints_by_relative_position(model):
    src = np.zeros((50, 70, 3), dtype=np.uint8)
    trg = np.zeros((100, 140, 3), dtype=np.uint8)
    kps = np.array([[0.0, 0.0], [69.0, 49.0], [12.5, 30.0]])
    expect = (kps + 0.5) * 2 - 0.5  # the same normalised position in an image twice as large
    for mode in ("swap", "invert"):
        np.testing.assert_allclose(predict_keypoints(model, src, trg, kps, mode=mode), expect, atol=1e-4)


def test_training_pairs_images_and_predict_pairs(tmp_path, model):
    images = scenes(3, size=40, seed=2)
    records = {}
    for i in range(3):
        path = tmp_path / f"cat/img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
        records[f"cat/img{i}"] = ImageRecord(f"cat/img{i}", path, "cat", 40, 40)
    kps = np.array([[5.0, 5.0], [20.0, 30.0]])
    pairs = [Pair("a", "cat", "cat/img0", "cat/img1", kps, kps, np.array([True, True]), "train"),
             Pair("b", "cat", "cat/img1", "cat/img2", kps, kps, np.array([False, True]), "test")]
    index = DatasetIndex("tiny", "demo", records, pairs)
    train = training_pairs(index)
    assert [p.pair_id for p in train] == ["a"]
    imgs, pair_index = load_pair_images(index, train, S)
    assert imgs.shape == (2, 3, S, S) and pair_index.tolist() == [[0, 1]]
    preds, ms = predict_pairs(on_images(weakalign_keypoint_fn(model), index.images), pairs, progress=False)
    assert ms > 0 and np.isnan(preds["b"][0]).all() and np.isfinite(preds["b"][1]).all()
    np.testing.assert_allclose(preds["a"], kps, atol=1e-4)  # untrained = identity, same image size


def test_one_config_section_sets_every_dataclass():
    st = settings_from_config({"image_size": 160, "swap_prob": 0.2, "normalise": False, "epochs": 2,
                               "transfer": "invert"}, seed=3)
    assert st.model.image_size == 160 and st.model.tps_grid_size == 3 and st.model.layer == ""
    assert st.augment.swap_prob == 0.2 and st.loss.normalise is False and st.transfer == "invert"
    assert (st.train.epochs, st.train.batch_size, st.train.seed) == (2, 16, 3)
    with pytest.raises(ConfigError, match="weakalign.bogus"):
        settings_from_config({"bogus": 1})
