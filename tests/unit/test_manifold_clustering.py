"""Scalable Ward clustering: planted clusters, determinism, compact labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from pipeline_lib.manifold.clustering import relabel_compact, scalable_ward


def _blobs(n_per=(600, 500, 700, 400, 800), d=8, sep=8.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, sep, (len(n_per), d))
    X = np.concatenate([rng.normal(c, 1.0, (n, d)) for c, n in zip(centers, n_per)])
    y = np.repeat(np.arange(len(n_per)), n_per)
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


@pytest.mark.parametrize("max_hac_samples", [300, 5000])
def test_planted_clusters_are_recovered(max_hac_samples):
    X, y = _blobs()
    labels = scalable_ward(X, 5, max_hac_samples=max_hac_samples, random_state=0)
    assert adjusted_rand_score(y, labels) > 0.999


def test_deterministic_and_compact():
    X, y = _blobs(seed=1)
    a = scalable_ward(X, 5, max_hac_samples=200, random_state=3)
    b = scalable_ward(X, 5, max_hac_samples=200, random_state=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64
    assert set(np.unique(a)) == set(range(5))
    # numbered by first appearance
    first = [np.flatnonzero(a == c)[0] for c in range(5)]
    assert first == sorted(first)


def test_no_empty_label_when_sample_is_tiny():
    X, _ = _blobs(seed=2)
    labels = scalable_ward(X, 12, max_hac_samples=12, random_state=0)  # every sample its own cluster
    assert np.bincount(labels).min() >= 1 and labels.max() == 11


def test_relabel_compact_known_answer():
    np.testing.assert_array_equal(relabel_compact(np.array([5, 5, 2, 9, 2])), [0, 0, 1, 2, 1])
    assert relabel_compact(np.array([], dtype=int)).shape == (0,)


def test_edge_cases_and_errors():
    X = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_array_equal(scalable_ward(X, 1), np.zeros(10))
    with pytest.raises(ValueError, match="exceeds"):
        scalable_ward(X, 11)
    with pytest.raises(ValueError, match="NaN"):
        scalable_ward(np.full((10, 3), np.nan), 2)
    with pytest.raises(ValueError, match="max_hac_samples"):
        scalable_ward(X, 5, max_hac_samples=4)
    with pytest.raises(ValueError, match="2-D"):
        scalable_ward(X[0], 2)
