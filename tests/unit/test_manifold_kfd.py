"""Kernel Fisher discriminant: known answers, solver agreement, scikit-learn conformance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.linalg import subspace_angles
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from pipeline_lib.manifold.kfd import KernelFisherDiscriminant


def _classes(n_classes=4, n_features=6, n_per=40, spread=3.0, seed=0, normalize=False):
    """Gaussian classes, (n, p) features and (n,) labels."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, spread, (n_classes, n_features))
    X = np.concatenate([rng.normal(means[c], 1.0, (n_per, n_features)) for c in range(n_classes)])
    y = np.repeat(np.arange(n_classes), n_per)
    if normalize:
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def _nearest_mean(Z, y):
    """Nearest-class-mean predictions in an embedding (n, d) -> (n,)."""
    classes = np.unique(y)
    means = np.stack([Z[y == c].mean(axis=0) for c in classes])
    return classes[np.argmin(((Z[:, None, :] - means[None]) ** 2).sum(-1), axis=1)]


def test_linear_kernel_subspace_matches_sklearn_lda():
    X, y = _classes()
    kfd = KernelFisherDiscriminant(kernel="linear", n_components=3, reg=1e-9, solver="exact").fit(X, y)
    lda = LinearDiscriminantAnalysis(n_components=3).fit(X, y)
    angles = subspace_angles(kfd.transform(X), lda.transform(X))
    assert np.max(angles) < 1e-3  # radians


def test_exact_solver_equals_scipy_generalized_eigh():
    """The low-rank solve gives the eigenpairs of eigh(M, N + reg_abs I) on the kernel matrices."""
    X, y = _classes(n_classes=3, n_per=25, normalize=True)
    reg = 1e-3
    kfd = KernelFisherDiscriminant(kernel="poly", gamma=1.0, n_components=2, reg=reg, solver="exact").fit(X, y)
    K = (X @ X.T + 1.0) ** 2
    n = len(y)
    Y = np.eye(3)[y]
    counts = Y.sum(0)
    Mc = K @ Y / counts
    m = K.mean(1)
    M = ((Mc - m[:, None]) * counts) @ (Mc - m[:, None]).T
    N = K @ K - (Mc * counts) @ Mc.T
    N = 0.5 * (N + N.T)
    B = N + reg * np.trace(N) / n * np.eye(n)
    evals, evecs = scipy.linalg.eigh(M, B)
    np.testing.assert_allclose(kfd.eigenvalues_, evals[::-1][:2], rtol=1e-6)
    assert np.max(subspace_angles(kfd.dual_coef_, evecs[:, ::-1][:, :2])) < 1e-6


def test_nystroem_with_all_anchors_matches_exact():
    X, y = _classes(n_classes=4, n_per=30, normalize=True, seed=1)
    kw = dict(kernel="poly", gamma=1.0, degree=2, n_components=3, reg=1e-9)
    exact = KernelFisherDiscriminant(solver="exact", **kw).fit(X, y)
    nys = KernelFisherDiscriminant(solver="nystroem", n_anchors=len(X), random_state=0, **kw).fit(X, y)
    assert nys.solver_ == "nystroem" and nys.X_fit_.shape[0] == len(X)
    Ze, Zn = exact.transform(X), nys.transform(X)
    assert np.max(subspace_angles(Ze, Zn)) < 1e-4
    np.testing.assert_allclose(nys.eigenvalues_, exact.eigenvalues_, rtol=1e-6)
    np.testing.assert_array_equal(_nearest_mean(Ze, y), _nearest_mean(Zn, y))


def test_nystroem_with_few_anchors_classifies_like_exact():
    X, y = _classes(n_classes=5, n_per=60, normalize=True, seed=2)
    kw = dict(kernel="poly", gamma=1.0, n_components=4, reg=1e-3)
    exact = KernelFisherDiscriminant(solver="exact", **kw).fit(X, y)
    nys = KernelFisherDiscriminant(solver="nystroem", n_anchors=60, random_state=0, **kw).fit(X, y)
    pe, pn = _nearest_mean(exact.transform(X), y), _nearest_mean(nys.transform(X), y)
    assert np.mean(pe == pn) > 0.95
    assert np.mean(pn == y) > 0.9


@pytest.mark.parametrize("solver", ["exact", "nystroem"])
def test_two_blobs_split_perfectly(solver):
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(0.0, 1.0, (50, 5)), rng.normal(6.0, 1.0, (50, 5))])
    y = np.repeat([0, 1], 50)
    kfd = KernelFisherDiscriminant(n_components=1, solver=solver, n_anchors=30, random_state=0).fit(X, y)
    z = kfd.transform(X)[:, 0]
    lo, hi = sorted([z[y == 0], z[y == 1]], key=np.mean)
    assert lo.max() < hi.min()  # a threshold between them splits the blobs perfectly
    # Within-class whitening: each class has about unit variance along the discriminant.
    assert 0.5 < np.mean([z[y == c].var() for c in (0, 1)]) < 1.5


@pytest.mark.parametrize("solver", ["exact", "nystroem"])
def test_refit_is_deterministic(solver):
    X, y = _classes(seed=4)
    est = KernelFisherDiscriminant(n_components=3, solver=solver, n_anchors=50, random_state=7)
    a = est.fit(X, y).transform(X)
    b = est.fit(X, y).transform(X)
    c = KernelFisherDiscriminant(n_components=3, solver=solver, n_anchors=50, random_state=7).fit(X, y).transform(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_n_components_above_limit_raises():
    X, y = _classes(n_classes=3)
    with pytest.raises(ValueError, match=r"n_classes - 1 = 2"):
        KernelFisherDiscriminant(n_components=3).fit(X, y)


def test_transform_before_fit_and_wrong_width():
    X, y = _classes()
    with pytest.raises(NotFittedError):
        KernelFisherDiscriminant().transform(X)
    kfd = KernelFisherDiscriminant(n_components=2).fit(X, y)
    with pytest.raises(ValueError):
        kfd.transform(X[:, :3])


def test_auto_solver_and_stratified_anchors():
    rng = np.random.default_rng(5)
    sizes = [200, 200, 200, 5, 3]
    X = np.concatenate([rng.normal(3 * c, 1.0, (s, 4)) for c, s in enumerate(sizes)])
    y = np.repeat(np.arange(5), sizes)
    small = KernelFisherDiscriminant(n_components=2, n_anchors=len(X)).fit(X, y)
    assert small.solver_ == "exact"
    big = KernelFisherDiscriminant(n_components=2, n_anchors=20, random_state=0).fit(X, y)
    assert big.solver_ == "nystroem" and big.X_fit_.shape == (20, 4)
    assert set(y[big.anchor_indices_]) == set(range(5))  # every class has an anchor
    counts = np.bincount(y[big.anchor_indices_], minlength=5)
    assert counts[:3].min() >= 5  # roughly proportional for the big classes


def test_string_labels_and_classes_attribute():
    X, y = _classes(n_classes=3)
    names = np.array(["head", "tail", "wing"])[y]
    kfd = KernelFisherDiscriminant(n_components=2).fit(X, names)
    np.testing.assert_array_equal(kfd.classes_, ["head", "tail", "wing"])
    assert kfd.n_features_in_ == X.shape[1]


@parametrize_with_checks(
    [
        KernelFisherDiscriminant(n_components=1),
        KernelFisherDiscriminant(n_components=1, solver="nystroem", n_anchors=10, random_state=0),
    ]
)
def test_sklearn_conformance(estimator, check):
    check(estimator)
