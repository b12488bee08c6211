"""SFNet through the shared training loop, and prediction on a tiny dataset."""

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline_lib.backbones import build_backbone
from pipeline_lib.datasets import DatasetError, DatasetIndex, ImageRecord, Pair
from pipeline_lib.config import ConfigError
from pipeline_lib.pair_prediction import on_images, predict_pairs
from pipeline_lib.sfnet import (SFNetConfig, SyntheticConfig, build_sfnet, dense_flow, load_images, make_batches,
                                make_loss_fn, predict_keypoints, settings_from_config, sfnet_keypoint_fn,
                                training_image_ids)
from pipeline_lib.sfnet.train import pair_index, real_pairs
from pipeline_lib.training import TrainConfig, fit

S = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def scenes(n, size=S, seed=0):
    """Smooth backgrounds with one textured ellipse each: (n, 3, size, size) images, (n, 1, size, size) masks."""
    g = torch.Generator().manual_seed(seed)
    bg = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    obj = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = size * (0.3 + 0.4 * torch.rand(n, 2, generator=g))
    r = size * (0.18 + 0.1 * torch.rand(n, 2, generator=g))
    inside = ((xs - c[:, :1, None]) / r[:, :1, None]) ** 2 + ((ys - c[:, 1:, None]) / r[:, 1:, None]) ** 2 < 1
    m = inside.float()[:, None]
    return (bg * (1 - m) + obj.clamp(0, 1) * m), m


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)  # random-init backbone: seeded, so every run sees the same features
    return build_backbone("efficientnet_lite0", pretrained=False)


def test_two_epochs_through_fit_reduce_the_loss(tmp_path, backbone):
    torch.manual_seed(0)
    model = build_sfnet(SFNetConfig(), backbone)
    images, masks = scenes(8)
    res = fit(model, make_loss_fn(), make_batches(images, masks, batch_size=2), TrainConfig(epochs=2, lr=3e-4, seed=0),
              tmp_path, torch.device("cpu"))
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert [r["epoch"] for r in csv.DictReader((tmp_path / "train_log.csv").open())] == ["1", "2"]
    assert (tmp_path / "loss_curve.png").is_file()
    assert not any(p.requires_grad for p in model.backbone.parameters())  # only the adaptation layers learn


def test_batches_are_seeded_by_the_loop_generator():
    images, masks = scenes(5)
    batches = make_batches(images, masks, batch_size=2)
    a = list(batches(0, torch.Generator().manual_seed(1)))
    b = list(batches(0, torch.Generator().manual_seed(1)))
    assert [len(x.src) for x in a] == [2, 2, 1]
    assert all(torch.equal(x.trg, y.trg) for x, y in zip(a, b))


def test_mixed_batches_hold_synthetic_then_real_pairs_and_an_epoch_is_one_pass_over_the_pairs():
    images, masks = scenes(6)
    pairs = torch.tensor([[0, 1], [1, 0], [2, 3], [3, 2], [4, 5]])
    batches = make_batches(images, masks, batch_size=4, pairs=pairs, synthetic_fraction=0.5)
    epoch = list(batches(0, torch.Generator().manual_seed(0)))
    assert [len(b.src) for b in epoch] == [4, 4, 3]  # 5 real pairs, 2 per batch, each batch + 2 synthetic pairs
    assert all(b.src_mask.shape == (len(b.src), 1, S, S) for b in epoch)
    real = [b for b in list(make_batches(images, masks, 2, pairs=pairs, synthetic_fraction=0.0)(0, torch.Generator()))]
    assert sum(len(b.src) for b in real) == 5
    # every real pair shows two different images of the list, in either order (swap augmentation)
    seen = {tuple(sorted((int((b.src[i] - images).abs().flatten(1).sum(1).argmin()),
                          int((b.trg[i] - images).abs().flatten(1).sum(1).argmin()))))
            for b in make_batches(images, masks, 5, SyntheticConfig(flip_prob=0.0, color_jitter=0.0), pairs,
                                  0.0)(0, torch.Generator()) for i in range(len(b.src))}
    assert seen == {(0, 1), (2, 3), (4, 5)}
    with pytest.raises(ValueError, match="real pairs"):
        make_batches(images, masks, 4, synthetic_fraction=0.5)


def test_real_pairs_flip_both_images_and_their_masks_together():
    images, masks = scenes(2)
    out = real_pairs(images, masks, torch.tensor([[0, 1]] * 16), SyntheticConfig(flip_prob=0.5, color_jitter=0.0),
                     torch.Generator().manual_seed(0))
    for i in range(16):
        flipped = not torch.equal(out.src_mask[i], masks[0]) and not torch.equal(out.src_mask[i], masks[1])
        src_is_0 = torch.equal(out.src[i], images[0]) or torch.equal(out.src[i], images[0].flip(-1))
        a, b = (0, 1) if src_is_0 else (1, 0)
        want = (lambda t: t.flip(-1)) if flipped else (lambda t: t)
        assert torch.equal(out.src[i], want(images[a])) and torch.equal(out.trg[i], want(images[b]))
        assert torch.equal(out.src_mask[i], want(masks[a])) and torch.equal(out.trg_mask[i], want(masks[b]))


def test_pair_index_positions_pairs_in_the_image_list(tmp_path):
    index = write_tiny_dataset(tmp_path)
    ids = training_image_ids(index)
    train = [p for p in index.pairs if p.split == "train"]
    assert pair_index(ids, train).tolist() == [[0, 1], [1, 2]]
    assert pair_index(ids, []).shape == (0, 2)


def test_real_pairs_carry_a_larger_loss_than_warps_of_one_image():
    """Why the default mixes real pairs in: on a warp of its own image, ImageNet features already match well
    (the loss is 3-10x smaller than on pairs of two scenes: nothing left to learn from)."""
    torch.manual_seed(0)
    model = build_sfnet(SFNetConfig(), build_backbone("efficientnet_lite0", pretrained=True)).eval()
    images, masks = scenes(8, size=128, seed=0)
    loss_fn = make_loss_fn()
    pairs = torch.tensor([[i, (i + 1) % 8] for i in range(8)])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        synth = next(iter(make_batches(images, masks, 8)(0, g)))
        real = next(iter(make_batches(images, masks, 8, pairs=pairs, synthetic_fraction=0.0)(0, g)))
        (l_synth, parts), (l_real, _) = loss_fn(model, synth), loss_fn(model, real)
    assert set(parts) == {"loss_mask", "loss_flow", "loss_smooth"}
    assert float(l_real) > 2 * float(l_synth)


@pytest.fixture(scope="module")
def model(backbone):
    torch.manual_seed(0)
    return build_sfnet(SFNetConfig(image_size=S), backbone).eval()


def test_predict_keypoints_shapes_and_pixel_frames(model):
    rng = np.random.default_rng(0)
    src = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    trg = rng.integers(0, 255, (90, 40, 3), dtype=np.uint8)
    kps = np.array([[3.0, 4.0], [69.0, 49.0], [35.0, 20.0]])
    out = predict_keypoints(model, src, trg, kps, image_size=S)
    assert out.shape == (3, 2) and np.isfinite(out).all()
    assert (out[:, 0] >= -0.5).all() and (out[:, 0] <= 40 - 0.5).all()
    assert (out[:, 1] >= -0.5).all() and (out[:, 1] <= 90 - 0.5).all()
    assert predict_keypoints(model, src, trg, np.zeros((0, 2)), image_size=S).shape == (0, 2)


def test_dense_flow_agrees_with_keypoint_transfer(model):
    img, _ = scenes(2, size=48)
    src, trg = img[0], img[1]
    flow = dense_flow(model, src, trg)
    assert flow.shape == (48, 48, 2)
    kps = np.array([[5.0, 7.0], [30.0, 41.0]])
    np.testing.assert_allclose(predict_keypoints(model, src, trg, kps), kps + flow[[7, 41], [5, 30]], atol=1e-4)


def write_tiny_dataset(root, with_masks=True):
    images, masks = scenes(4, size=40, seed=4)
    records = {}
    for i in range(4):
        key = f"cat/img{i}"
        path = root / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
        mask_path = None
        if with_masks:
            mask_path = root / f"{key}_mask.png"
            Image.fromarray((masks[i, 0].numpy() * 255).astype(np.uint8)).save(mask_path)
        records[key] = ImageRecord(key, path, "cat", 40, 40, mask_path=mask_path)
    kps = np.array([[10.0, 10.0], [20.0, 25.0], [30.0, 5.0]])
    box = np.array([5.0, 5.0, 30.0, 30.0])
    pairs = [Pair(f"p{a}{b}", "cat", f"cat/img{a}", f"cat/img{b}", kps, kps, np.array([True, False, True]),
                  split, src_box=box, trg_box=box)
             for a, b, split in ((0, 1, "train"), (1, 2, "train"), (2, 3, "test"))]
    return DatasetIndex("tiny", "demo", records, pairs)


def test_training_images_come_from_the_train_split_with_their_masks(tmp_path):
    index = write_tiny_dataset(tmp_path)
    ids = training_image_ids(index)
    assert ids == ["cat/img0", "cat/img1", "cat/img2"]
    images, masks = load_images(index, ids, 32)
    assert images.shape == (3, 3, 32, 32) and masks.shape == (3, 1, 32, 32)
    assert 0 < float(masks.mean()) < 1 and set(masks.unique().tolist()) <= {0.0, 1.0}


def test_without_mask_files_boxes_are_used_or_refused(tmp_path):
    index = write_tiny_dataset(tmp_path, with_masks=False)
    _, masks = load_images(index, ["cat/img0"], 40, mask_source="auto")
    assert masks[0, 0, 5:31, 5:31].all() and masks.sum() == 26 * 26
    with pytest.raises(DatasetError, match="mask"):
        load_images(index, ["cat/img0"], 40, mask_source="file")


def test_predict_pairs_fills_valid_keypoints_and_marks_invalid_ones(tmp_path, model):
    index = write_tiny_dataset(tmp_path)
    preds, ms = predict_pairs(on_images(sfnet_keypoint_fn(model, S), index.images), index.pairs, progress=False)
    assert set(preds) == {"p01", "p12", "p23"} and ms > 0
    for p in index.pairs:
        assert preds[p.pair_id].shape == (3, 2)
        assert np.isfinite(preds[p.pair_id][p.valid]).all() and np.isnan(preds[p.pair_id][~p.valid]).all()


def test_one_config_section_sets_every_dataclass_with_paper_defaults():
    st = settings_from_config({"epochs": 3, "beta": 40.0, "lambda_flow": 8.0, "mask_source": "box",
                               "synthetic": {"scale_range": [0.9, 1.1]}}, seed=7)
    assert st.model.beta == 40.0 and st.model.kernel_sigma_cells == 5.0 and st.model.image_size == 320
    assert (st.loss.lambda_mask, st.loss.lambda_flow, st.loss.lambda_smooth) == (3.0, 8.0, 0.5)
    assert st.synthetic.scale_range == (0.9, 1.1) and st.mask_source == "box"
    assert (st.train.epochs, st.train.lr, st.train.batch_size, st.train.seed) == (3, 3e-5, 16, 7)
    assert st.synthetic_fraction == 0.5  # the schema's default (Lee et al.: 1.0, see README "Trained methods")
    assert settings_from_config({"synthetic_fraction": 1.0}).synthetic_fraction == 1.0
    with pytest.raises(ConfigError, match="sfnet.bogus"):
        settings_from_config({"bogus": 1})
    with pytest.raises(ConfigError, match="mask_source"):
        settings_from_config({"mask_source": "guess"})
    with pytest.raises(ConfigError, match="synthetic_fraction"):
        settings_from_config({"synthetic_fraction": 1.5})
