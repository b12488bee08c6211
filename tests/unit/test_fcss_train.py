"""FCSS weak-supervision training: object regions from masks/boxes, batches, and a short run of
the shared training loop that lowers the loss."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from pipeline_lib.backbones import build_backbone
from pipeline_lib.datasets.base import DatasetIndex, ImageRecord, Pair
from pipeline_lib.fcss.model import FCSSConfig, build_fcss
from pipeline_lib.fcss.train import (FCSSTrainConfig, TrainPair, box_region, build_training_pairs, cells_in_region,
                                     make_batches, make_loss_fn, train_fcss)
from pipeline_lib.training import TrainConfig

H, W = 48, 64


def texture(rng, h, w):
    noise = rng.random((h, w, 3))
    smooth = np.stack([ndimage.gaussian_filter(noise[..., c], 2.0) for c in range(3)], -1)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def tiny_index(root, n_images=4, with_masks=True, seed=0):
    """One category: crops of one texture shifted by a few pixels (so true matches exist)."""
    rng = np.random.default_rng(seed)
    big = texture(rng, H + 8, W + 8)
    images, pairs = {}, []
    for i in range(n_images):
        dy, dx = rng.integers(0, 8, 2)
        key = f"cat/img{i}"
        path = root / f"img{i}.png"
        Image.fromarray(big[dy:dy + H, dx:dx + W]).save(path)
        mask_path = None
        if with_masks:
            mask = np.zeros((H, W), dtype=np.uint8)
            mask[8:40, 10:54] = 255
            mask_path = root / f"img{i}_mask.png"
            Image.fromarray(mask).save(mask_path)
        images[key] = ImageRecord(key, path, "cat", H, W, mask_path=mask_path)
    keys = sorted(images)
    kps = np.array([[20.0, 20.0], [40.0, 30.0]])
    for a in keys:
        for b in keys:
            if a != b:
                pairs.append(Pair(f"{a}->{b}", "cat", a, b, kps, kps, np.ones(2, dtype=bool), "train",
                                  src_box=np.array([4.0, 6.0, 30.0, 20.0]), trg_box=None))
    return DatasetIndex("tiny", "demo", images, pairs)


def test_box_region_and_cells_in_region():
    region = box_region(np.array([2.0, 1.0, 5.0, 3.0]), (8, 10), (8, 10))
    assert region.shape == (8, 10) and int(region.sum()) == 4 * 3
    assert region[1:4, 2:6].all()
    half = box_region(np.array([2.0, 1.0, 5.0, 3.0]), (8, 10), (4, 5))  # same box, image at half size
    assert half.shape == (4, 5) and half[1, 1] and not half[3, 4]
    cells = cells_in_region(torch.tensor([[True, True, False, False]] * 4), (2, 2))
    assert cells.tolist() == [[True, False], [True, False]]


def test_regions_come_from_masks_boxes_or_keypoint_boxes(tmp_path):
    index = tiny_index(tmp_path)
    pair = build_training_pairs(index, FCSSTrainConfig(longer_side=64, max_pairs=1))[0]
    assert pair.src_image.shape == (3, H, W) and pair.src_region.dtype == torch.bool
    assert int(pair.src_region.sum()) == 32 * 44  # the exact object mask ("auto" prefers masks)
    boxed = build_training_pairs(index, FCSSTrainConfig(longer_side=64, region="box", max_pairs=1))[0]
    assert int(boxed.src_region.sum()) == 27 * 15  # the pair's source box, x 4..30, y 6..20
    assert int(boxed.trg_region.sum()) == 21 * 11  # no target box: the keypoint box, x 20..40, y 20..30
    small = build_training_pairs(index, FCSSTrainConfig(longer_side=32, region="image", max_pairs=1))[0]
    assert small.src_image.shape == (3, 24, 32) and bool(small.src_region.all())
    with pytest.raises(ValueError, match="no object mask"):
        build_training_pairs(tiny_index(tmp_path, with_masks=False), FCSSTrainConfig(region="mask"))
    with pytest.raises(ValueError, match="no pairs"):
        build_training_pairs(index, FCSSTrainConfig(split="val"))


def test_batches_are_shuffled_groups_with_seeds():
    pairs = [TrainPair(str(i), None, None, None, None) for i in range(5)]
    batches = list(make_batches(pairs, 2)(0, torch.Generator().manual_seed(0)))
    assert [len(b.pairs) for b in batches] == [2, 2, 1]
    assert sorted(p.pair_id for b in batches for p in b.pairs) == [str(i) for i in range(5)]
    again = list(make_batches(pairs, 2)(0, torch.Generator().manual_seed(0)))
    assert [b.seed for b in batches] == [b.seed for b in again]


def test_loss_is_finite_and_reaches_the_shifts(tmp_path):
    torch.manual_seed(0)
    model = build_fcss(FCSSConfig(n_patterns=8), build_backbone("efficientnet_lite0", pretrained=False))
    pairs = build_training_pairs(tiny_index(tmp_path), FCSSTrainConfig(longer_side=64, max_pairs=2))
    batch = next(iter(make_batches(pairs, 2)(0, torch.Generator().manual_seed(0))))
    loss, metrics = make_loss_fn(FCSSTrainConfig(n_samples=64))(model.train(), batch)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert 0 < metrics["positive_share"] <= 1 and 0 <= metrics["active_negative_share"] <= 1
    assert model.css[0].src_offsets.grad.abs().sum() > 0


def test_short_training_through_fit_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    model = build_fcss(FCSSConfig(n_patterns=16), build_backbone("efficientnet_lite0", pretrained=False))
    cfg = FCSSTrainConfig(longer_side=64, n_samples=256)
    pairs = build_training_pairs(tiny_index(tmp_path, n_images=3), cfg)  # 6 pairs, 2 batches per epoch
    res = train_fcss(model, pairs, TrainConfig(epochs=2, lr=1e-3, batch_size=3), cfg, tmp_path / "run",
                     torch.device("cpu"))
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    rows = list(csv.DictReader((tmp_path / "run" / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 0
