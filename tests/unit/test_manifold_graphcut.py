"""PyGCO wrapper: known answers, validation, crash isolation, geodesic pairwise (Eq. 8)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline_lib.manifold.graphcut import (
    GraphCutError,
    geodesic_pairwise,
    grid_edges,
    is_metric,
    labeling_energy,
    refine_labels,
    refine_labels_batch,
)

POTTS2 = 1.0 - np.eye(2)


def _abort_worker(payload):
    """Test hook: a worker that dies like PyGCO does on overflow (SIGABRT)."""
    os.abort()


def _raising_worker(payload):
    raise RuntimeError("boom from the worker")


def _pid_worker(payload):
    """Test hook: records its process id and share size in the file $GC_TEST_PIDS, returns the initial labels."""
    with open(os.environ["GC_TEST_PIDS"], "a") as f:
        f.write(f"{os.getpid()} {payload['unary'].shape[0]}\n")
    return payload["init"]


def _abort_on_second_share(payload):
    """Test hook: the share that starts with a constant-unary image (all zero once quantised) aborts."""
    if (payload["unary"][0] == 0).all():
        os.abort()
    return payload["init"]


def _two_regions(seed, h=24, w=24, flip_rate=0.1):
    """Left half label 0, right half label 1; unary from a salt-and-pepper noisy copy."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), dtype=int)
    truth[:, w // 2 :] = 1
    noisy = truth.copy()
    flip = rng.random((h, w)) < flip_rate
    noisy[flip] = 1 - noisy[flip]
    unary = 1.0 - np.eye(2)[noisy]  # cost 0 for the noisy label, 1 for the other
    return truth, noisy, unary


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removes_salt_and_pepper_and_keeps_straight_boundary(seed):
    truth, noisy, unary = _two_regions(seed)
    assert (noisy != truth).sum() > 30
    labels, energy = refine_labels(unary, POTTS2, 1.5, isolate=False)
    np.testing.assert_array_equal(labels, truth)
    assert energy == pytest.approx(labeling_energy(unary, truth, POTTS2, 1.5))


def test_weaker_smoothing_is_nearly_exact_and_not_worse_than_truth():
    truth, _, unary = _two_regions(0)
    labels, energy = refine_labels(unary, POTTS2, 1.0, isolate=False)
    assert np.mean(labels != truth) <= 0.01
    assert energy <= labeling_energy(unary, truth, POTTS2, 1.0) + 1e-9


def test_dominant_unary_gives_argmin():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (15, 17))
    unary = 100.0 * (1.0 - np.eye(5)[target]) + rng.random((15, 17, 5))
    pairwise = 1.0 - np.eye(5)
    labels, energy = refine_labels(unary, pairwise, 1.0, isolate=False)
    np.testing.assert_array_equal(labels, np.argmin(unary, axis=2))
    np.testing.assert_array_equal(labels, target)
    assert energy == pytest.approx(labeling_energy(unary, labels, pairwise, 1.0))


def test_huge_weight_gives_single_label():
    rng = np.random.default_rng(1)
    unary = rng.random((12, 12, 4))
    labels, energy = refine_labels(unary, 1.0 - np.eye(4), 1e4, isolate=False)
    assert np.unique(labels).size == 1
    assert energy == pytest.approx(unary[..., labels[0, 0]].sum())


def test_extreme_magnitudes_do_not_crash():
    rng = np.random.default_rng(2)
    unary = rng.random((10, 10, 3)) * 1e15
    labels, _ = refine_labels(unary, 1.0 - np.eye(3), 1e-6, isolate=True)
    np.testing.assert_array_equal(labels, np.argmin(unary, axis=2))
    labels, _ = refine_labels(rng.random((10, 10, 3)), 1.0 - np.eye(3), 1e12, isolate=True)
    assert np.unique(labels).size == 1


def test_isolated_equals_in_process_and_batch_equals_single():
    rng = np.random.default_rng(3)
    unary = rng.random((3, 9, 11, 4)) * 3.0
    pairwise = np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]], dtype=float)  # |a-b|
    lab_iso, e_iso = refine_labels_batch(unary, pairwise, 0.4, isolate=True)
    lab_in, e_in = refine_labels_batch(unary, pairwise, 0.4, isolate=False)
    np.testing.assert_array_equal(lab_iso, lab_in)
    np.testing.assert_allclose(e_iso, e_in)
    for i in range(3):
        lab_i, e_i = refine_labels(unary[i], pairwise, 0.4, isolate=False)
        np.testing.assert_array_equal(lab_i, lab_in[i])
        assert e_i == pytest.approx(e_in[i])


def test_parallel_workers_give_the_labels_of_one_worker():
    """An iteration's graph cuts run in several worker processes at once: same labels and energies as one."""
    rng = np.random.default_rng(7)
    unary = rng.random((5, 9, 11, 4)) * 3.0
    pairwise = np.abs(np.arange(4)[:, None] - np.arange(4)[None]).astype(float)
    one = refine_labels_batch(unary, pairwise, 0.4, isolate=True)
    for workers in (2, 3, 8):
        many = refine_labels_batch(unary, pairwise, 0.4, isolate=True, workers=workers)
        np.testing.assert_array_equal(many[0], one[0])
        np.testing.assert_array_equal(many[1], one[1])
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        refine_labels_batch(unary, pairwise, 0.4, workers=0)


def test_parallel_workers_are_separate_processes_and_a_crash_names_its_images(tmp_path, monkeypatch):
    unary = np.random.default_rng(8).random((4, 5, 5, 3))
    monkeypatch.setenv("GC_TEST_PIDS", str(tmp_path / "pids"))
    refine_labels_batch(unary, 1.0 - np.eye(3), 1.0, isolate=True, workers=2, worker_fn=_pid_worker)
    shares = [line.split() for line in (tmp_path / "pids").read_text().splitlines()]
    assert len({pid for pid, _ in shares}) == 2 and sorted(int(n) for _, n in shares) == [2, 2]
    assert os.getpid() not in {int(pid) for pid, _ in shares}
    unary[2] = 7.0
    with pytest.raises(GraphCutError, match=r"SIGABRT.*images 2-3 of"):
        refine_labels_batch(unary, 1.0 - np.eye(3), 1.0, isolate=True, workers=2, worker_fn=_abort_on_second_share)


def test_non_metric_pairwise_uses_swap_and_forced_expansion_raises():
    rng = np.random.default_rng(4)
    unary = rng.random((8, 8, 3))
    nonmetric = np.array([[0.0, 0.1, 1.0], [0.1, 0.0, 0.1], [1.0, 0.1, 0.0]])  # 1 > 0.1 + 0.1
    assert not is_metric(nonmetric) and is_metric(1.0 - np.eye(3))
    labels, energy = refine_labels(unary, nonmetric, 2.0, isolate=True)  # auto -> swap
    assert labels.shape == (8, 8) and np.isfinite(energy)
    with pytest.raises(ValueError, match="not a metric"):
        refine_labels(unary, nonmetric, 2.0, algorithm="expansion", isolate=False)


@pytest.mark.parametrize(
    "pairwise, match",
    [
        (np.array([[0.0, np.nan], [np.nan, 0.0]]), "NaN"),
        (np.array([[0.0, 1.0], [0.5, 0.0]]), "symmetric"),
        (np.array([[0.2, 1.0], [1.0, 0.0]]), "diagonal"),
        (np.array([[0.0, -1.0], [-1.0, 0.0]]), "non-negative"),
        (np.zeros((3, 3)), "shape"),
    ],
)
def test_invalid_pairwise_raises(pairwise, match):
    with pytest.raises(ValueError, match=match):
        refine_labels(np.zeros((4, 4, 2)), pairwise, 1.0, isolate=False)


def test_invalid_unary_and_weight_raise():
    with pytest.raises(ValueError, match="NaN"):
        refine_labels(np.full((4, 4, 2), np.nan), POTTS2, 1.0)
    with pytest.raises(ValueError, match="float"):
        refine_labels(np.zeros((4, 4, 2), dtype=int), POTTS2, 1.0)
    with pytest.raises(ValueError, match=r"\(h, w, k\)"):
        refine_labels(np.zeros((4, 2)), POTTS2, 1.0)
    with pytest.raises(ValueError, match="weight"):
        refine_labels(np.zeros((4, 4, 2)), POTTS2, -1.0)
    with pytest.raises(ValueError, match="algorithm"):
        refine_labels(np.zeros((4, 4, 2)), POTTS2, 1.0, algorithm="icm")


def test_worker_crash_becomes_graphcut_error_and_process_survives():
    unary = np.random.default_rng(5).random((2, 6, 7, 3))
    with pytest.raises(GraphCutError) as info:
        refine_labels_batch(unary, 1.0 - np.eye(3), 1.0, isolate=True, worker_fn=_abort_worker)
    msg = str(info.value)
    assert "SIGABRT" in msg and "n_img=2" in msg and "grid=6x7" in msg and "k=3" in msg
    # still alive, and the next call works
    labels, _ = refine_labels_batch(unary, 1.0 - np.eye(3), 1.0, isolate=True)
    assert labels.shape == (2, 6, 7)


def test_worker_exception_becomes_graphcut_error():
    with pytest.raises(GraphCutError, match="boom from the worker"):
        refine_labels(np.random.default_rng(0).random((4, 4, 2)), POTTS2, 1.0, worker_fn=_raising_worker)


def test_grid_edges_are_8_connected():
    edges, weights = grid_edges(3, 4, diagonal_weight=0.5)
    assert edges.shape == (3 * 3 + 2 * 4 + 2 * 2 * 3, 2)
    assert np.all(edges[:, 0] < edges[:, 1])
    assert len({tuple(e) for e in edges.tolist()}) == len(edges)
    assert np.sum(weights == 0.5) == 2 * 2 * 3
    degree = np.bincount(edges.ravel(), minlength=12)
    assert degree.max() == 8 and degree.min() == 3  # interior / corner


def test_geodesic_pairwise_known_answer():
    sigma = 0.5
    a = np.zeros((4, 4), dtype=int)
    a[:, 2:] = 1  # label 0 median col 0.5, label 1 median col 2.5 -> distance 2 cells = 0.5 sides
    b = np.zeros((4, 4), dtype=int)
    b[:, 3:] = 1  # label 0 median col 1, label 1 median col 3 -> distance 2 cells = 0.5 sides
    b[0, 0] = 0
    P = geodesic_pairwise(np.stack([a, b]), 3, sigma)
    assert P.shape == (3, 3)
    np.testing.assert_allclose(np.diag(P), 0.0)
    np.testing.assert_allclose(P, P.T)
    assert P[0, 1] == pytest.approx(np.exp(-0.5 / sigma**2))
    # label 2 appears nowhere: placed at the grid diagonal (sqrt(2) longer sides) from everything
    assert P[0, 2] == pytest.approx(np.exp(-np.sqrt(2.0) / sigma**2))


def test_geodesic_pairwise_averages_over_images_and_pools_non_cooccurring():
    a = np.zeros((1, 5, 5), dtype=int)
    a[0, :, 4] = 1  # 0 at median col 1.5 (cols 0-3), 1 at col 4: distance 2.5 cells
    b = np.full((1, 5, 5), 2)
    b[0, :, 0] = 1  # 1 at col 0, 2 at median col 2.5: distance 2.5 cells
    c = np.ones((1, 5, 5), dtype=int)
    c[0, :, :2] = 0  # 0 at median col 0.5, 1 at median col 3: distance 2.5 cells
    P = geodesic_pairwise(np.concatenate([a, b, c]), 3, 1.0)
    assert P[0, 1] == pytest.approx(np.exp(-0.5))  # average of 2.5/5 and 2.5/5
    # 0 and 2 never share an image: distance of pooled medians (row 2; cols: 0's pooled median
    # over cols {0,1,2,3,0,1} = 1, 2's = 2.5) -> 1.5 cells = 0.3 sides
    assert P[0, 2] == pytest.approx(np.exp(-0.3))


def test_geodesic_pairwise_validates():
    with pytest.raises(ValueError, match="0..1"):
        geodesic_pairwise(np.full((1, 3, 3), 2), 2, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        geodesic_pairwise(np.zeros((1, 3, 3), dtype=int), 2, 0.0)
    with pytest.raises(ValueError, match="integer"):
        geodesic_pairwise(np.zeros((1, 3, 3)), 2, 1.0)
