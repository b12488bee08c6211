import numpy as np
import pytest

from pipeline_lib.settings import EvaluationSection
from pipeline_lib.datasets.base import ImageRecord, Pair
from pipeline_lib.evaluation import evaluate_predictions, pck_counts, pck_threshold, summarise


def test_three_of_four_points_within_threshold():
    gt = np.array([[0, 0], [10, 10], [20, 20], [30, 30]], float)
    pred = gt + np.array([[0.5, 0], [0, 0.9], [0.99, 0], [3, 0]])
    assert pck_counts(pred, gt, np.ones(4, bool), threshold_px=10, alpha=0.1) == (3, 4)


def test_boundary_is_inclusive_and_invalid_keypoints_are_ignored():
    gt = np.zeros((3, 2))
    pred = np.array([[1.0, 0], [5.0, 0], [np.nan, np.nan]])
    assert pck_counts(pred, gt, np.array([True, False, False]), 10, 0.1) == (1, 1)
    # a NaN prediction for a valid keypoint counts as wrong
    assert pck_counts(pred, gt, np.array([True, False, True]), 10, 0.1) == (1, 2)


def test_thresholds_bbox_from_keypoints_and_image():
    kps = np.array([[10, 20], [50, 30], [30, 80]], float)
    valid = np.ones(3, bool)
    assert pck_threshold("bbox", kps, valid, (200, 100)) == 60  # box 40 x 60
    assert pck_threshold("bbox", kps, valid, (200, 100), trg_box=np.array([0, 0, 90, 10.0])) == 90
    assert pck_threshold("img", kps, valid, (200, 100)) == 200
    with pytest.raises(ValueError, match="unknown PCK threshold"):
        pck_threshold("box", kps, valid, (1, 1))


def test_per_pair_and_per_keypoint_averages_differ_as_computed_by_hand():
    images = {k: ImageRecord(k, None, "c", 100, 100) for k in "abc"}
    kps2 = np.array([[10, 10], [60, 60.0]])  # box side 50
    kps4 = np.array([[10, 10], [60, 60], [20, 50], [50, 20.0]])
    pairs = [Pair("p1", "c", "a", "b", kps2, kps2, np.ones(2, bool)),
             Pair("p2", "c", "b", "c", kps4, kps4, np.ones(4, bool))]
    preds = {"p1": kps2 + [[0, 0], [20, 0]],  # 1 of 2 correct at alpha 0.1 (5 px)
             "p2": kps4}  # 4 of 4
    rows = evaluate_predictions("m", pairs, images, preds, EvaluationSection(alphas=(0.1,)))
    (cat, overall) = summarise(rows)
    assert overall["category"] == "all" and cat["category"] == "c"
    assert overall["pck_per_pair"] == pytest.approx(75.0)  # mean(50, 100)
    assert overall["pck_per_keypoint"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert overall["n_pairs"] == 2 and overall["n_keypoints"] == 6


def test_missing_prediction_is_an_error():
    images = {k: ImageRecord(k, None, "c", 10, 10) for k in "ab"}
    pair = Pair("p1", "c", "a", "b", np.ones((2, 2)), np.array([[1, 1], [3, 4.0]]), np.ones(2, bool))
    with pytest.raises(KeyError, match="no prediction for pair p1"):
        evaluate_predictions("m", [pair], images, {}, EvaluationSection())
