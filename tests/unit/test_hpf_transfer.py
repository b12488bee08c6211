"""Keypoint transfer (Min et al. Sec. 3.3) on hand-made flows."""

import pytest
import torch

from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.hpf import transfer_keypoints
from pipeline_lib.kernels.keypoint_transfer import transfer_rows

# 2x2 cells over a 16x16 image, centres at x, y in {3.5, 11.5} (package pixel-centre convention)
SRC_POS = cell_centres(2, 2, (16, 16))
RADIUS = 4.0


def test_pure_translation_shifts_keypoints_exactly():
    shift = torch.tensor([10.0, 5.0])
    kps = torch.tensor([[7.5, 7.5], [5.0, 6.0], [12.0, 3.0], [0.0, 15.0]])
    pred = transfer_keypoints(kps, SRC_POS, SRC_POS + shift, RADIUS)
    torch.testing.assert_close(pred, kps + shift)


def test_average_over_covering_hyperpixels():
    # per-cell displacement of the flow: cell0 +(0,0), cell1 +(4,0), cell2 +(0,4), cell3 +(4,4)
    flow = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    kps = torch.tensor([[7.5, 7.5], [4.0, 4.0], [7.5, 3.5]])
    pred = transfer_keypoints(kps, SRC_POS, SRC_POS + flow, RADIUS)
    # (7.5, 7.5): all four cells at Chebyshev distance 4 cover it -> mean flow (2, 2)
    # (4, 4): only cell0 -> (0, 0);  (7.5, 3.5): cells 0 and 1 -> mean (2, 0)
    torch.testing.assert_close(pred, torch.tensor([[9.5, 9.5], [4.0, 4.0], [9.5, 3.5]]))


def test_uncovered_keypoint_falls_back_to_nearest_hyperpixel():
    flow = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    kps = torch.tensor([[30.0, 3.0]])  # 18.5 px from cell1 in x: no cell covers it; cell1 is nearest
    pred = transfer_keypoints(kps, SRC_POS, SRC_POS + flow, RADIUS)
    torch.testing.assert_close(pred, torch.tensor([[34.0, 3.0]]))
    assert torch.isfinite(pred).all()


def test_matched_centre_plus_offset_not_just_flow():
    # a match to an arbitrary target cell: prediction = trg centre + (kp - src centre)
    trg = torch.tensor([[100.0, 50.0]])
    pred = transfer_keypoints(torch.tensor([[2.0, 1.0]]), torch.tensor([[3.0, 3.0]]), trg, RADIUS)
    torch.testing.assert_close(pred, torch.tensor([[99.0, 48.0]]))


def test_empty_and_bad_inputs():
    assert transfer_keypoints(torch.zeros(0, 2), SRC_POS, SRC_POS, RADIUS).shape == (0, 2)
    with pytest.raises(ValueError):
        transfer_keypoints(torch.zeros(3, 2), SRC_POS[:0], SRC_POS[:0], RADIUS)
    with pytest.raises(ValueError):
        transfer_keypoints(torch.zeros(3), SRC_POS, SRC_POS, RADIUS)
    with pytest.raises(ValueError):
        transfer_keypoints(torch.zeros(3, 2), SRC_POS, SRC_POS[:2], RADIUS)
    with pytest.raises(ValueError):
        transfer_keypoints(torch.zeros(3, 2), SRC_POS, SRC_POS, -1.0)


def test_transfer_rows_give_the_same_keypoints_as_every_hyperpixel():
    g = torch.Generator().manual_seed(3)
    pos = cell_centres(6, 7, (48, 56))
    matched = pos + torch.randn(pos.shape, generator=g) * 5
    kps = torch.tensor([[3.0, 2.0], [30.0, 20.0], [55.0, 47.0], [90.0, 10.0]])  # the last one covered by none
    for radius in (0.0, 4.0, 9.0):
        rows = transfer_rows(kps, pos, radius)
        assert rows.numel() < pos.shape[0] and (rows[1:] > rows[:-1]).all()
        torch.testing.assert_close(transfer_keypoints(kps, pos[rows], matched[rows], radius),
                                   transfer_keypoints(kps, pos, matched, radius))
    assert transfer_rows(torch.zeros(0, 2), pos, 4.0).numel() == 0
