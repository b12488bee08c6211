"""Scalable agglomerative (Ward) clustering for Gaur et al. Algorithm 1 ("HAClustering").

Gaur et al. Sec. 3 cluster every feature vector of a category with hierarchical agglomerative
clustering into k clusters. Exact Ward HAC needs O(n^2) memory and at least O(n^2) time
(50 images of 44 x 44 cells are about 97k vectors: about 38 GB for the condensed distance
matrix alone). This module makes HAC scale the usual way:

1. draw a uniform random sample of at most ``max_hac_samples`` vectors (``random_state``);
2. run exact Ward HAC (``sklearn.cluster.AgglomerativeClustering``) on the sample;
3. assign every vector outside the sample to the nearest Ward cluster centroid (Euclidean;
   the sampled vectors keep their HAC label, so no cluster can become empty);
4. relabel compactly to 0..k-1 in order of first appearance in the input.

With ``n <= max_hac_samples`` this is exact Ward HAC. Memory is O(max_hac_samples^2 + n k),
time O(max_hac_samples^2 * d + n k d).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from .rows import ArrayRows, Rows

__all__ = ["scalable_ward", "ward_sample", "relabel_compact", "DEFAULT_MAX_HAC_SAMPLES"]

# Largest sample clustered exactly (our choice: about 100 MB of condensed distances, a few
# seconds of Ward on 2 cores).
DEFAULT_MAX_HAC_SAMPLES = 5000
# Rows per block when assigning to the nearest centroid.
_ASSIGN_BLOCK = 65536


def relabel_compact(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to 0..k-1 in order of first appearance.

    Parameters
    ----------
    labels : (n,) int

    Returns
    -------
    (n,) int64, values 0..k-1 with every value used.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    return rank[inverse.ravel()]


def _nearest_centroid(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n, d), (k, d) -> (n,) index of the nearest centroid (squared Euclidean)."""
    c2 = np.einsum("kd,kd->k", centroids, centroids)
    out = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], _ASSIGN_BLOCK):
        blk = X[start : start + _ASSIGN_BLOCK]
        d2 = c2[None, :] - 2.0 * (blk @ centroids.T)  # |x|^2 is constant per row
        out[start : start + _ASSIGN_BLOCK] = np.argmin(d2, axis=1)
    return out


def scalable_ward(
    X: "np.ndarray | Rows",
    n_clusters: int,
    *,
    max_hac_samples: int = DEFAULT_MAX_HAC_SAMPLES,
    random_state: int | None = 0,
) -> np.ndarray:
    """Ward HAC on a random sample, nearest-centroid assignment for the rest.

    Parameters
    ----------
    X : (n, d) float, or a :class:`~.rows.Rows` source
        Samples (rows). A ``Rows`` source is read block by block (the sample gathered with
        ``take``); an array is one block.
    n_clusters : int
        k, number of clusters (Gaur et al. Sec. 3 use 15).
    max_hac_samples : int
        Largest number of samples clustered exactly by Ward HAC.
    random_state : int or None
        Seed of the sample (``np.random.default_rng``); same seed, same labels.

    Returns
    -------
    labels : (n,) int64
        Values 0..k-1, every value used, numbered by first appearance in ``X``.
    """
    if isinstance(X, np.ndarray) or not hasattr(X, "blocks"):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or inf")
        X = ArrayRows(X)
    n = X.n
    if not (isinstance(n_clusters, (int, np.integer)) and n_clusters >= 1):
        raise ValueError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    if n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} exceeds the number of samples n={n}")
    if not (isinstance(max_hac_samples, (int, np.integer)) and max_hac_samples >= n_clusters):
        raise ValueError(
            f"max_hac_samples must be an integer >= n_clusters={n_clusters}, got {max_hac_samples!r}"
        )
    if n_clusters == 1:
        return np.zeros(n, dtype=np.int64)
    sample = ward_sample(n, max_hac_samples, random_state)
    hac = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward")
    sampled = X.take(sample)
    sample_labels = hac.fit_predict(sampled)
    labels = np.empty(n, dtype=np.int64)
    if len(sample) < n:
        centroids = np.stack([sampled[sample_labels == c].mean(axis=0) for c in range(n_clusters)])
        for sl, block in X.blocks():
            labels[sl] = _nearest_centroid(block, centroids)  # blocked: no copy of X
    labels[sample] = sample_labels  # sampled vectors keep their HAC label
    return relabel_compact(labels)


def ward_sample(n: int, max_hac_samples: int, random_state: int | None) -> np.ndarray:
    """Sorted indices of the rows :func:`scalable_ward` clusters exactly (all when n <= max_hac_samples)."""
    if n <= max_hac_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, size=max_hac_samples, replace=False))
