"""The embedded demo: deterministic, and its keypoints agree with its exact dense flow."""

import filecmp

import numpy as np
import pytest

from pipeline_lib.datasets import demo, demo_synthesis, open_dataset
from pipeline_lib.settings import DemoSection

TINY = DemoSection(photos=("chelsea", "coffee"), images_per_category=3, image_size=72, n_keypoints=6)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "data"
    demo_synthesis.generate(root, TINY, seed=5)
    return root


def test_generation_is_deterministic(tiny_demo, tmp_path):
    again = tmp_path / "again"
    demo_synthesis.generate(again, TINY, seed=5)
    for f in ("keypoints.csv", "pairs.csv", "chelsea/chelsea_0.png", "coffee/coffee_2_mask.png"):
        assert filecmp.cmp(tiny_demo / f, again / f, shallow=False), f
    other = tmp_path / "other"
    demo_synthesis.generate(other, TINY, seed=6)
    assert not filecmp.cmp(tiny_demo / "keypoints.csv", other / "keypoints.csv", shallow=False)


def test_layout_splits_and_keypoints(tiny_demo):
    ds = open_dataset("demo", tiny_demo, split_mode="given")
    assert ds.categories() == ["chelsea", "coffee"]
    assert len(ds.pairs) == 2 * 3 * 2
    assert {p.split for p in ds.pairs} == {"train", "val", "test"}
    for p in ds.pairs:
        assert p.src_kps.shape == (6, 2) and p.valid.all()


def test_exact_flow_carries_each_source_keypoint_onto_its_target_keypoint(tiny_demo):
    ds = open_dataset("demo", tiny_demo, split_mode="given")
    import csv

    order = [r["pair_id"] for r in csv.DictReader((tiny_demo / "pairs.csv").open())]
    for p in ds.pairs:
        flow, valid = demo.load_flow(tiny_demo / "flow.zarr", order.index(p.pair_id))
        assert flow.shape == (72, 72, 2) and valid.dtype == bool
        # the flow is sampled at pixel centres: interpolate it bilinearly at the sub-pixel keypoint
        from scipy import ndimage

        xy = p.src_kps
        fx = ndimage.map_coordinates(flow[..., 0], [xy[:, 1], xy[:, 0]], order=1)
        fy = ndimage.map_coordinates(flow[..., 1], [xy[:, 1], xy[:, 0]], order=1)
        moved = xy + np.stack([fx, fy], 1)
        np.testing.assert_allclose(moved, p.trg_kps, atol=0.05)  # bilinear error of a smooth warp only


def test_object_masks_cover_the_keypoints(tiny_demo):
    from pipeline_lib.datasets import load_mask

    ds = open_dataset("demo", tiny_demo, split_mode="given")
    p = ds.pairs[0]
    mask = load_mask(ds.images[p.src].mask_path)
    cols, rows = np.round(p.src_kps).astype(int).T
    assert mask[rows, cols].all()
    assert 0.2 < mask.mean() < 1.0  # the photo and some background are both visible
