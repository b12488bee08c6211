"""Part-separation measures at keypoints: known answers and their limits."""

import numpy as np
import pytest

from pipeline_lib.manifold.measures import keypoint_label_agreement, keypoint_part_ami, keypoint_labels


def _cells(n_img=4, k=4):
    """Keypoint k of every image sits in cell (k, k) of a 4 x 4 grid."""
    cells = np.stack([np.stack([np.arange(k), np.arange(k)], axis=1)] * n_img)
    return cells.astype(np.int64), np.ones((n_img, k), dtype=bool)


def test_ami_is_one_for_a_labelling_that_names_every_keypoint():
    cells, valid = _cells()
    maps = np.tile(np.arange(4)[:, None] * np.ones(4, dtype=int)[None, :], (4, 1, 1))  # row r has label r
    assert keypoint_part_ami(maps, cells, valid) == pytest.approx(1.0)
    assert keypoint_label_agreement(maps, cells, valid) == pytest.approx(1.0)


def test_one_label_everywhere_agrees_perfectly_but_separates_nothing():
    cells, valid = _cells()
    maps = np.zeros((4, 4, 4), dtype=int)
    assert keypoint_label_agreement(maps, cells, valid) == pytest.approx(1.0)
    assert keypoint_part_ami(maps, cells, valid) == pytest.approx(0.0, abs=1e-9)


def test_merging_two_parts_lowers_ami_but_not_agreement():
    cells, valid = _cells()
    rows = np.array([0, 0, 1, 2])  # keypoints 0 and 1 share a label
    maps = np.tile(rows[:, None] * np.ones(4, dtype=int)[None, :], (4, 1, 1))
    assert keypoint_label_agreement(maps, cells, valid) == pytest.approx(1.0)
    assert 0.3 < keypoint_part_ami(maps, cells, valid) < 1.0


def test_random_labels_score_near_zero():
    rng = np.random.default_rng(0)
    n_img, k = 60, 6
    cells = rng.integers(0, 8, size=(n_img, k, 2))
    maps = rng.integers(0, 6, size=(n_img, 8, 8))
    assert abs(keypoint_part_ami(maps, cells, np.ones((n_img, k), bool))) < 0.05


def test_invalid_keypoints_are_ignored_and_bad_cells_are_refused():
    cells, valid = _cells()
    maps = np.tile(np.arange(4)[:, None] * np.ones(4, dtype=int)[None, :], (4, 1, 1))
    maps[0] = 3 - maps[0]  # image 0 labels every keypoint wrongly...
    valid[0] = False  # ...but none of its keypoints is annotated
    assert keypoint_part_ami(maps, cells, valid) == pytest.approx(1.0)
    assert keypoint_labels(maps, cells, valid).shape == (4, 4)
    with pytest.raises(ValueError, match="inside the 4x4 grid"):
        keypoint_part_ami(maps, cells + 4, np.ones((4, 4), bool))
