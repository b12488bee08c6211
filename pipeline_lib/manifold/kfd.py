"""Multi-class kernel Fisher discriminant (KFD) as a scikit-learn transformer.

Gaur et al. (2017) Sec. 3 embed the deep features with a kernel Fisher discriminant
(Mika et al., 1999) fitted on the current semantic-object-part (SOP) labels, using a
polynomial kernel on L2-normalised features. scikit-learn has no KFD, so it is written here.

Two solvers give the same kind of model: a set of ``m`` expansion points ``X_fit_`` and dual
coefficients ``dual_coef_`` (m, d), and ``transform(X) = k(X, X_fit_) @ dual_coef_ - mean_``.

``solver="exact"`` (Mika et al. 1999, multi-class form)
    With ``K`` the (n, n) training kernel, ``Y`` the class indicators and ``n_c`` the class sizes,
    the class means in the RKHS are ``m_c = K Y_c / n_c`` and the overall mean ``m = K 1 / n``.
    Between-class ``M = sum_c n_c (m_c - m)(m_c - m)^T``; within-class
    ``N = K K - sum_c n_c m_c m_c^T``. The dual coefficients are the top ``d`` eigenvectors of
    the generalized symmetric problem ``scipy.linalg.eigh(M, N + reg_abs * I)`` (solved through
    the rank <= c - 1 structure of M: one Cholesky and a thin SVD, same eigenpairs).
    Memory O(n^2), time O(n^3): only for a few thousand samples
    (50 images of 44 x 44 cells are about 97k samples: impossible exactly, see stack.md).

``solver="nystroem"`` (the scalable approximation)
    ``m = n_anchors`` anchor points are drawn with ``random_state`` (stratified by class by
    default). With ``K_mm = U diag(lam) U^T`` the Nystroem feature map is
    ``z(x) = k(x, anchors) U_r diag(lam_r)^(-1/2)`` (eigenvalues below ``1e-10 * max`` dropped),
    and a regularised multi-class Fisher LDA is solved in that r-dimensional space:
    ``eigh(S_B, S_W + reg_abs * I)``. The scatter matrices are accumulated over chunks of rows,
    so memory is O(chunk * m + m^2) (never the full (n, m) matrix); time O(n m (C + m)).
    With ``n_anchors = n_samples`` this is KFD with the RKHS-norm regulariser ``alpha^T K alpha``
    instead of ``alpha^T alpha``; both converge to the same subspace as ``reg -> 0``.

``fit_rows`` fits on a :class:`~.rows.Rows` source read block by block (the anchors gathered by index, the
scatter summed per block), so a category's features need not be in memory at once.

``reg`` is relative: ``reg_abs = reg * trace(N) / dim(N)`` (the mean diagonal of the within-class
scatter), so it does not depend on the scale of the kernel.

Scaling: eigenvectors are normalised so that the (regularised) within-class covariance of the
training projections is the identity (``alpha^T (N + reg_abs I) alpha = n``); the embedding
is within-class whitened, like scikit-learn's LDA ``transform``. Each component's sign is fixed
so that its largest-magnitude dual coefficient is positive (refits are bit-identical).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_scalar, validate_data

from .rows import ArrayRows, Rows

__all__ = ["KernelFisherDiscriminant"]

# Default number of Nystroem anchors when ``n_anchors=None`` (our choice, not from the paper).
DEFAULT_N_ANCHORS = 1000
# Nystroem: eigenvalues of K_mm below this fraction of the largest are dropped (rank cut).
_NYSTROEM_EIG_RTOL = 1e-10
# Rows per chunk are chosen so that one (rows, m) float64 kernel block is about this many bytes.
_CHUNK_BYTES = 64 * 2**20

_KERNELS = ("poly", "linear")
_SOLVERS = ("exact", "nystroem", "auto")
_ANCHOR_SAMPLING = ("stratified", "uniform")


def _kernel(X: np.ndarray, Y: np.ndarray, kernel: str, gamma: float, degree: int, coef0: float) -> np.ndarray:
    """Kernel block k(X, Y): (n_x, p), (n_y, p) -> (n_x, n_y), float64."""
    G = X @ Y.T
    if kernel == "linear":
        return G
    G *= gamma
    G += coef0
    if degree == 2:
        np.multiply(G, G, out=G)
        return G
    return np.power(G, degree, out=G)


class KernelFisherDiscriminant(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Multi-class kernel Fisher discriminant analysis (Mika et al. 1999).

    (Mixins come before ``BaseEstimator``, as scikit-learn's ``check_mixin_order`` requires.)

    Parameters
    ----------
    kernel : {"poly", "linear"}, default="poly"
        ``poly``: ``(gamma <x, y> + coef0) ** degree`` (Gaur et al. Sec. 3 use a polynomial
        kernel); ``linear``: ``<x, y>``.
    degree : int, default=2
        Polynomial degree (not given in the paper).
    coef0 : float, default=1.0
        Polynomial offset.
    gamma : float or None, default=None
        Polynomial scale; ``None`` means ``1 / n_features`` (scikit-learn's convention).
    reg : float, default=1e-3
        Relative Tikhonov regulariser of the within-class scatter (see module docstring).
    n_components : int, default=32
        Number of discriminants (Gaur et al. Sec. 3: 32). Must be ``<= n_classes - 1``.
    n_anchors : int or None, default=None
        Nystroem anchor count; ``None`` means ``min(n_samples, 1000)``.
    solver : {"exact", "nystroem", "auto"}, default="auto"
        ``auto`` uses ``exact`` when ``n_samples <= n_anchors`` (the anchors would be all the
        samples anyway) and ``nystroem`` otherwise.
    anchor_sampling : {"stratified", "uniform"}, default="stratified"
        How Nystroem anchors are drawn: proportionally per class (every class gets at least
        one anchor when ``n_anchors >= n_classes``) or uniformly at random.
    random_state : int, RandomState instance or None, default=None
        Seeds the anchor sampling (the exact solver is deterministic).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    solver_ : str
        The solver actually used ("exact" or "nystroem").
    X_fit_ : ndarray of shape (m, n_features)
        Expansion points: the training data (exact) or the anchors (Nystroem).
    anchor_indices_ : ndarray of shape (m,)
        Row indices of ``X_fit_`` in the training data.
    dual_coef_ : ndarray of shape (m, n_components)
    mean_ : ndarray of shape (n_components,)
        Mean of the uncentred training projections (subtracted by ``transform``).
    eigenvalues_ : ndarray of shape (n_components,)
        Generalized eigenvalues (Fisher ratios), in decreasing order.
    gamma_ : float
        The kernel scale actually used.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (20, 3)), rng.normal(5, 1, (20, 3))]
    >>> y = np.r_[np.zeros(20), np.ones(20)]
    >>> Z = KernelFisherDiscriminant(n_components=1).fit_transform(X, y)
    >>> Z.shape
    (40, 1)
    """

    def __init__(
        self,
        kernel="poly",
        degree=2,
        coef0=1.0,
        gamma=None,
        reg=1e-3,
        n_components=32,
        n_anchors=None,
        solver="auto",
        anchor_sampling="stratified",
        random_state=None,
    ):
        self.kernel = kernel
        self.degree = degree
        self.coef0 = coef0
        self.gamma = gamma
        self.reg = reg
        self.n_components = n_components
        self.n_anchors = n_anchors
        self.solver = solver
        self.anchor_sampling = anchor_sampling
        self.random_state = random_state

    @property
    def _n_features_out(self) -> int:
        """Number of output features (for ``get_feature_names_out``: kernelfisherdiscriminant0, ...)."""
        return self.dual_coef_.shape[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    # ------------------------------------------------------------------ validation
    def _check_params(self, n_samples: int, n_classes: int) -> None:
        if self.kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {self.kernel!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if self.anchor_sampling not in _ANCHOR_SAMPLING:
            raise ValueError(f"anchor_sampling must be one of {_ANCHOR_SAMPLING}, got {self.anchor_sampling!r}")
        check_scalar(self.degree, "degree", Integral, min_val=1)
        check_scalar(self.coef0, "coef0", Real)
        if self.gamma is not None:
            check_scalar(self.gamma, "gamma", Real, min_val=0.0, include_boundaries="neither")
        check_scalar(self.reg, "reg", Real, min_val=0.0)
        check_scalar(self.n_components, "n_components", Integral, min_val=1)
        if self.n_anchors is not None:
            check_scalar(self.n_anchors, "n_anchors", Integral, min_val=1)
        if self.n_components > n_classes - 1:
            raise ValueError(
                f"n_components={self.n_components} must be <= n_classes - 1 = {n_classes - 1} "
                f"(a Fisher discriminant of {n_classes} class(es) has at most n_classes - 1 "
                f"discriminants)"
            )

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Fit the discriminant.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels (any hashable values).

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        return self._fit(ArrayRows(X), y)

    def fit_rows(self, rows: Rows, y):
        """Fit on rows read block by block (:mod:`.rows`): the same model as ``fit`` on all the rows at
        once, up to rounding, with memory set by a block and the anchors (Nystroem) instead of n.

        Parameters
        ----------
        rows : Rows
            ``n`` samples of dimension ``dim`` (e.g. :class:`~.rows.ImageRows` of a category's features).
        y : array-like of shape (n,)
        """
        y = np.asarray(y)
        if y.shape != (rows.n,):
            raise ValueError(f"y must have shape ({rows.n},), got {y.shape}")
        if rows.n < 2:
            raise ValueError(f"fit needs at least 2 samples, got {rows.n}")
        self.n_features_in_ = rows.dim
        return self._fit(rows, y)

    def _fit(self, rows: Rows, y):
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        n, p = rows.n, rows.dim
        self._check_params(n, len(classes))
        self.classes_ = classes
        self.gamma_ = float(self.gamma) if self.gamma is not None else 1.0 / p
        n_anchors = self.n_anchors if self.n_anchors is not None else min(n, DEFAULT_N_ANCHORS)
        solver = self.solver
        if solver == "auto":
            solver = "exact" if n <= n_anchors else "nystroem"
        self.solver_ = solver
        if solver == "exact":
            X = rows.take(np.arange(n))
            alpha, evals, kmean = self._fit_exact(X, y_idx, len(classes))
            self.X_fit_ = X.copy()  # never alias the caller's array
            self.anchor_indices_ = np.arange(n)
        else:
            rng = check_random_state(self.random_state)
            idx = self._sample_anchors(y_idx, len(classes), min(n_anchors, n), rng)
            self.anchor_indices_ = idx
            self.X_fit_ = rows.take(idx)
            alpha, evals, kmean = self._fit_nystroem(rows, y_idx, len(classes))
        # Deterministic sign: the largest-magnitude coefficient of each component is positive.
        signs = np.sign(alpha[np.argmax(np.abs(alpha), axis=0), np.arange(alpha.shape[1])])
        signs[signs == 0] = 1.0
        self.dual_coef_ = alpha * signs
        self.eigenvalues_ = evals
        # Mean training projection = (mean kernel row) @ dual_coef_: no extra pass over X.
        self.mean_ = kmean @ self.dual_coef_
        return self

    def _k(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return _kernel(A, B, self.kernel, self.gamma_, self.degree, self.coef0)

    def _top_generalized(self, A: np.ndarray, B: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_components`` eigenpairs of the generalized problem ``eigh(A A^T, B)``.

        The between-class matrix ``M = A A^T`` has rank <= n_classes - 1 (A is (dim, c)), so
        the problem is solved exactly through its low-rank structure: with the Cholesky
        factor ``B = L L^T`` and the thin SVD ``L^{-1} A = U S V^T``, the eigenpairs are
        ``(S^2, L^{-T} U)`` -- the same as ``scipy.linalg.eigh(M, B)`` (tested), at the cost of
        one Cholesky instead of a full generalized eigendecomposition. Vectors are returned in
        decreasing order, scaled to ``v^T B v = n`` (unit within-class covariance).
        """
        dim = B.shape[0]
        d = self.n_components
        if d > min(dim, A.shape[1]):
            raise ValueError(
                f"n_components={d} exceeds the dimension of the discriminant problem "
                f"({min(dim, A.shape[1])}); use more samples/anchors or fewer components"
            )
        try:
            L = scipy.linalg.cholesky(B, lower=True)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                f"the regularised within-class scatter is not positive definite (reg={self.reg}); "
                "increase reg"
            ) from exc
        G = scipy.linalg.solve_triangular(L, A, lower=True)
        U, S, _ = scipy.linalg.svd(G, full_matrices=False)
        vecs = scipy.linalg.solve_triangular(L.T, U[:, :d], lower=False)
        return vecs * np.sqrt(n), S[:d] ** 2

    def _fit_exact(self, X: np.ndarray, y_idx: np.ndarray, n_classes: int):
        n = X.shape[0]
        K = self._k(X, X)
        Y = np.zeros((n, n_classes))
        Y[np.arange(n), y_idx] = 1.0
        counts = Y.sum(axis=0)
        Mc = (K @ Y) / counts  # (n, c) class means in the dual
        m = K.mean(axis=1)  # (n,) overall mean
        A = (Mc - m[:, None]) * np.sqrt(counts)  # M = A A^T
        N = K @ K
        N -= (Mc * counts) @ Mc.T
        N = 0.5 * (N + N.T)
        reg_abs = self.reg * max(np.trace(N) / n, np.finfo(float).tiny)
        N[np.diag_indices_from(N)] += reg_abs
        alpha, evals = self._top_generalized(A, N, n)
        return alpha, evals, m

    def _sample_anchors(self, y_idx, n_classes, m, rng) -> np.ndarray:
        n = y_idx.shape[0]
        if m >= n:
            return np.arange(n)
        if self.anchor_sampling == "uniform":
            return np.sort(rng.choice(n, size=m, replace=False))
        counts = np.bincount(y_idx, minlength=n_classes)
        quota = m * counts / n
        take = np.floor(quota).astype(int)
        if m >= n_classes:
            take = np.maximum(take, 1)
        take = np.minimum(take, counts)
        # Largest remainder until the quota sums to m (or down to m if the floor of 1 overshot).
        rem = quota - take
        while take.sum() < m:
            cand = np.where(take < counts)[0]
            j = cand[np.argmax(rem[cand])]
            take[j] += 1
            rem[j] -= 1.0
        while take.sum() > m:
            cand = np.where(take > 1)[0]
            j = cand[np.argmax(take[cand])]
            take[j] -= 1
        chosen = [rng.choice(np.flatnonzero(y_idx == c), size=t, replace=False) for c, t in enumerate(take) if t > 0]
        return np.sort(np.concatenate(chosen))

    def _chunks(self, n: int, m: int):
        step = max(1, int(_CHUNK_BYTES // (8 * max(m, 1))))
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))

    def _fit_nystroem(self, rows: Rows, y_idx: np.ndarray, n_classes: int):
        n = rows.n
        anchors = self.X_fit_
        m = anchors.shape[0]
        Kmm = self._k(anchors, anchors)
        # numpy's eigh (LAPACK syevd) is several times faster here than scipy's default syevr.
        lam, U = np.linalg.eigh(0.5 * (Kmm + Kmm.T))
        keep = lam > _NYSTROEM_EIG_RTOL * max(lam.max(), np.finfo(float).tiny)
        T = U[:, keep] / np.sqrt(lam[keep])  # (m, r): z(x) = k(x, anchors) @ T
        # Accumulate sum_i k_i k_i^T and class sums of k_i over row chunks.
        G = np.zeros((m, m))
        S = np.zeros((n_classes, m))
        for block_sl, block in rows.blocks():
            for sl in self._chunks(block.shape[0], m):
                Kc = self._k(block[sl], anchors)
                G += Kc.T @ Kc
                Yc = np.zeros((n_classes, Kc.shape[0]))
                Yc[y_idx[block_sl][sl], np.arange(Kc.shape[0])] = 1.0
                S += Yc @ Kc
        counts = np.bincount(y_idx, minlength=n_classes).astype(float)
        Sz = S @ T  # (c, r) class sums in z space
        mu_c = Sz / counts[:, None]
        mu = Sz.sum(axis=0) / n
        total = T.T @ G @ T
        Sw = total - (Sz.T / counts) @ Sz
        Sw = 0.5 * (Sw + Sw.T)
        D = (mu_c - mu) * np.sqrt(counts)[:, None]  # S_B = D^T D
        r = Sw.shape[0]
        reg_abs = self.reg * max(np.trace(Sw) / r, np.finfo(float).tiny)
        Sw[np.diag_indices_from(Sw)] += reg_abs
        W, evals = self._top_generalized(D.T, Sw, n)
        return T @ W, evals, S.sum(axis=0) / n

    # ------------------------------------------------------------------ transform
    def _project(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], self.dual_coef_.shape[1]))
        for sl in self._chunks(X.shape[0], self.X_fit_.shape[0]):
            out[sl] = self._k(X[sl], self.X_fit_) @ self.dual_coef_
        out -= self.mean_
        return out

    def transform(self, X):
        """Project samples onto the discriminants.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            Centred (training mean zero), within-class whitened projections.
        """
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._project(X)
