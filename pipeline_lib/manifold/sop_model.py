"""Gaussian semantic-object-part (SOP) models, Gaur et al. (2017) Eq. 5-7.

Each cluster ``c`` of the embedded features gets a multivariate Gaussian
``p(f | c) = N(f; mu_c, Sigma_c + cov_reg I)`` (Eq. 5) and the prior ``p(c)`` = fraction of the
samples in the cluster (Eq. 6). The unary cost of Eq. 7 is ``-log p(c | f)``, computed with a
log-sum-exp over clusters so it is finite and stable for far-away samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

__all__ = ["SOPModels", "fit_sop_models", "unary_costs", "model_change", "rotate_sop_models"]


@dataclass(frozen=True)
class SOPModels:
    """Per-cluster Gaussian models.

    Attributes
    ----------
    means : (k, d) float64
    covariances : (k, d, d) float64, regularised (``cov_reg * I`` already added)
    priors : (k,) float64, membership fractions, sum to 1
    counts : (k,) int64, members per cluster
    """

    means: np.ndarray
    covariances: np.ndarray
    priors: np.ndarray
    counts: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])


def fit_sop_models(X: np.ndarray, labels: np.ndarray, n_clusters: int, cov_reg: float) -> SOPModels:
    """Fit one Gaussian per cluster (Gaur et al. Eq. 5-6).

    Parameters
    ----------
    X : (n, d) float
        Embedded features.
    labels : (n,) int in 0..n_clusters-1
        Every cluster must have at least one member.
    n_clusters : int
    cov_reg : float >= 0
        Added to the diagonal of every covariance (the maximum-likelihood covariance, divided
        by n_c, is singular for clusters with fewer than d + 1 members).

    Returns
    -------
    SOPModels
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    if X.ndim != 2:
        raise ValueError(f"X must be (n, d), got shape {X.shape}")
    if labels.shape != (X.shape[0],):
        raise ValueError(f"labels must have shape ({X.shape[0]},), got {labels.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    if not (np.isfinite(cov_reg) and cov_reg >= 0):
        raise ValueError(f"cov_reg must be finite and >= 0, got {cov_reg!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        raise ValueError(f"labels must lie in 0..{n_clusters - 1}, got range [{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"cluster(s) {empty.tolist()} have no members; relabel compactly first")
    d = X.shape[1]
    means = np.zeros((n_clusters, d))
    np.add.at(means, labels, X)
    means /= counts[:, None]
    covs = np.empty((n_clusters, d, d))
    for c in range(n_clusters):
        Xc = X[labels == c] - means[c]
        covs[c] = Xc.T @ Xc / counts[c]
        covs[c][np.diag_indices(d)] += cov_reg
    return SOPModels(means=means, covariances=covs, priors=counts / counts.sum(), counts=counts)


def _log_likelihoods(X: np.ndarray, models: SOPModels) -> np.ndarray:
    """(n, d) -> (n, k) log N(x; mu_c, Sigma_c) + log p(c)."""
    n, d = X.shape
    out = np.empty((n, models.n_clusters))
    log2pi = d * np.log(2.0 * np.pi)
    for c in range(models.n_clusters):
        try:
            L = scipy.linalg.cholesky(models.covariances[c], lower=True)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                f"covariance of cluster {c} is not positive definite; increase cov_reg"
            ) from exc
        Y = scipy.linalg.solve_triangular(L, (X - models.means[c]).T, lower=True)  # (d, n)
        maha = np.einsum("dn,dn->n", Y, Y)
        logdet = 2.0 * np.sum(np.log(np.diag(L)))
        with np.errstate(divide="ignore"):
            logprior = np.log(models.priors[c])
        out[:, c] = -0.5 * (log2pi + logdet + maha) + logprior
    return out


def unary_costs(X: np.ndarray, models: SOPModels) -> np.ndarray:
    """Unary cost ``-log p(c | x)`` of every sample for every cluster (Gaur et al. Eq. 6-7).

    Parameters
    ----------
    X : (n, d) float
    models : SOPModels with ``d`` features

    Returns
    -------
    (n, k) float64, >= 0 and finite (for clusters with a positive prior); each row's
    ``exp(-cost)`` sums to 1.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != models.n_features:
        raise ValueError(f"X must be (n, {models.n_features}), got shape {X.shape}")
    ll = _log_likelihoods(X, models)
    cost = logsumexp(ll, axis=1, keepdims=True) - ll
    np.maximum(cost, 0.0, out=cost)  # rounding can give -1e-16 for the best cluster
    return cost


def rotate_sop_models(models: SOPModels, R: np.ndarray) -> SOPModels:
    """Express models in rotated coordinates ``f' = f @ R`` (R: (d, d) orthogonal)."""
    R = np.asarray(R, dtype=np.float64)
    return SOPModels(
        means=models.means @ R,
        covariances=np.einsum("ji,cjk,kl->cil", R, models.covariances, R),
        priors=models.priors,
        counts=models.counts,
    )


def model_change(old: SOPModels, new: SOPModels) -> float:
    """Scalar change between two sets of SOP models (the convergence test of Algorithm 1).

    Clusters are matched one-to-one (Hungarian algorithm on squared distances between means),
    since HAC numbers clusters arbitrarily. For matched clusters (o, n) it takes the maximum of

    - mean shift relative to the typical cluster spread: ``|mu_n - mu_o| / s`` with
      ``s = sqrt(sum_c p_o(c) trace(Sigma_o(c)))``;
    - relative covariance change: ``|Sigma_n - Sigma_o|_F / |Sigma_o|_F``;
    - prior change relative to the old prior: ``|p_n - p_o| / p_o``.

    Returns 0.0 for identical models and ``inf`` when the two sets differ in k or d (e.g. the
    number of discriminants changed). The models must be in the same coordinates: callers
    comparing embeddings from two KFD fits should align them first (:func:`rotate_sop_models`).
    """
    if old.means.shape != new.means.shape:
        return float("inf")
    dist = ((old.means[:, None, :] - new.means[None, :, :]) ** 2).sum(axis=-1)
    rows, cols = linear_sum_assignment(dist)
    spread = np.sqrt(np.sum(old.priors * np.trace(old.covariances, axis1=1, axis2=2)))
    spread = max(spread, np.finfo(float).tiny)
    mean_shift = np.sqrt(dist[rows, cols]) / spread
    cov_old = old.covariances[rows]
    cov_diff = np.linalg.norm((new.covariances[cols] - cov_old).reshape(len(rows), -1), axis=1)
    cov_rel = cov_diff / np.maximum(np.linalg.norm(cov_old.reshape(len(rows), -1), axis=1), np.finfo(float).tiny)
    prior_rel = np.abs(new.priors[cols] - old.priors[rows]) / np.maximum(old.priors[rows], np.finfo(float).tiny)
    return float(max(mean_shift.max(), cov_rel.max(), prior_rel.max()))
