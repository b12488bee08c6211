"""Gaur et al. (2017) Algorithm 1: manifold learning and label refinement for one category.

``run_manifold`` takes the conv features of every image of one category, (n_img, h, w, C), and
alternates (Gaur et al. Sec. 3-4):

0. ReLU (``relu``, Sec. 6: "we process the features with a rectified linear unit (ReLU)
   non-linearity so that the feature maps contain positive activations only"), then L2-normalise
   every location's feature (Sec. 3 and 6); initial SOP labels = HAC of those features (Sec. 3:
   "an identity matrix as the embedding"); this is iteration 0;
1. fit a kernel Fisher discriminant (polynomial kernel) on the current labels and project all
   features (Eq. 3-4) to d discriminants. A Fisher discriminant of k labels has at most k - 1, so
   ``n_components`` (d) must be <= ``n_clusters`` - 1 (checked when the config is built; ``None``
   = k - 1); only when labels die out during the loop is d lowered further (with a warning);
2. HAC (Ward, k clusters) in the embedding; Gaussian SOP model per cluster (Eq. 5-6);
3. unary cost ``-log p(c | f)`` (Eq. 7), geodesic pairwise cost from the HAC label maps of this
   iteration (Eq. 8), multi-label graph cut of every image (Eq. 9) -> the refined labels;
4. stop when the SOP models stop changing (``model_change < tol``), when the refined labels are
   identical to the previous ones (a fixed point: every later step would repeat), or after
   ``max_iter`` iterations.

Model change across iterations: each iteration fits a new KFD, so embeddings of two iterations
may differ by an orthogonal transform (the discriminant subspace is only defined up to a
rotation within its whitened metric). Before comparing, the new models are rotated onto the
previous embedding with orthogonal Procrustes on the projected training features (Ward HAC,
the Gaussians and the unary costs are all invariant to such a rotation, so this changes nothing
but the comparison). See :func:`pipeline_lib.manifold.sop_model.model_change`.

Scaling (see the docstrings of the building blocks): KFD is exact up to ``n_anchors`` samples
and a Nystroem approximation with ``n_anchors`` anchor points beyond; HAC is exact Ward on a
random sample of ``max_hac_samples`` vectors plus nearest-centroid assignment of the rest. The
features are never held whole: every pass (initial HAC, KFD scatter, projection) reads
``chunk_images`` images at a time (:mod:`.rows`), and the graph cuts run per block of images.
What stays per vector for all images is the embedding (d float64) and the labels.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from scipy.linalg import orthogonal_procrustes
from scipy.optimize import linear_sum_assignment

from .clustering import DEFAULT_MAX_HAC_SAMPLES, scalable_ward, ward_sample
from .graphcut import geodesic_pairwise, refine_labels_batch
from .kfd import KernelFisherDiscriminant
from .rows import ImageRows, l2_normalize, prepare_features
from .sop_model import SOPModels, fit_sop_models, model_change, rotate_sop_models, unary_costs

__all__ = [
    "ManifoldConfig",
    "ManifoldResult",
    "run_manifold",
    "l2_normalize",
    "prepare_features",
    "fraction_changed",
]

logger = logging.getLogger(__name__)

_KERNELS = ("poly", "linear")
_SOLVERS = ("exact", "nystroem", "auto")
# Label maps are stored as int16.
_MAX_LABELS = np.iinfo(np.int16).max
# Images per block of every pass over a category's features (our choice: 64 images of 44 x 44 x 320
# float64 are ~0.3 GB; the graph cuts of a block are one worker call).
DEFAULT_CHUNK_IMAGES = 64


@dataclass(frozen=True)
class ManifoldConfig:
    """Parameters of Algorithm 1 (one frozen dataclass per config section, see style.md)."""

    # Gaur et al. Sec. 3 ask for k = 15 clusters and d = 32 discriminants, which cannot both hold: a
    # Fisher discriminant of k classes has at most k - 1. We keep the paper's d = 32 (Sec. 3: "the
    # average number of non-zero activations") and take k = d + 1 = 33 clusters (measured: far better
    # pseudo flow than k = 15, see config/schema.yaml).
    n_clusters: int = 33
    # d; None = n_clusters - 1. A value above n_clusters - 1 is an error (not silently capped).
    n_components: int | None = None
    # Gaur et al. Sec. 6: ReLU before the L2 normalisation ("positive activations only"; their VGG16
    # conv features are post-ReLU, EfficientNet-Lite block outputs are not). A no-op on post-ReLU features.
    relu: bool = True
    # Gaur et al. Sec. 3: polynomial kernel; degree, offset and scale are not given (our choice).
    kernel: str = "poly"
    kernel_degree: int = 2
    kernel_coef0: float = 1.0
    # Features are L2-normalised, so <x, y> is a cosine in [-1, 1]; gamma = 1 keeps it unscaled
    # (scikit-learn's default 1 / n_features would make the kernel nearly constant).
    kernel_gamma: float = 1.0
    # Relative Tikhonov regulariser of the within-class scatter (Mika et al. 1999; value not in the
    # paper, ours, chosen by measurement: config/schema.yaml).
    kfd_reg: float = 10.0
    # "auto": exact KFD up to n_anchors samples, Nystroem beyond (stack.md: exact is O(n^2)).
    kfd_solver: str = "auto"
    # Nystroem anchor points (approximation; our choice, memory O(n_anchors^2 + chunk * n_anchors)).
    n_anchors: int = 1000
    # Largest sample clustered exactly by Ward HAC; the rest go to the nearest centroid.
    max_hac_samples: int = DEFAULT_MAX_HAC_SAMPLES
    # Added to every SOP covariance (the embedding has unit within-class variance; our value).
    cov_reg: float = 1e-3
    # w of Gaur et al. Eq. 9 (value not given in the paper; ours, chosen on synthetic categories).
    pairwise_weight: float = 2.0
    # sigma of Gaur et al. Eq. 8, in units of the longer grid side (value not given; ours, chosen
    # on synthetic categories: 0.5 smoothed too little).
    sigma: float = 1.0
    # Weight of diagonal grid edges (Sec. 4: plain 8-connectivity, so 1).
    diagonal_weight: float = 1.0
    # Convergence: stop when model_change < tol (Algorithm 1 "until SOP model unchanged").
    tol: float = 1e-2
    # ...or when at most this fraction of labels changed (ours: on PF-WILLOW the model change plateaus
    # at ~0.2, a jitter of the re-fitted embedding, while fewer than 0.5% of the labels still move).
    label_tol: float = 5e-3
    max_iter: int = 10
    # Seeds anchor sampling and HAC sampling (the same seed every iteration).
    seed: int = 0
    # Run PyGCO in a worker process so a C-level abort cannot kill the caller.
    isolate_graphcut: bool = True
    # Images read, embedded and graph-cut per block (None: all at once). Sets the peak memory of the
    # passes over the features; the labels do not depend on it beyond rounding.
    chunk_images: int | None = DEFAULT_CHUNK_IMAGES

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
            if v < lo or (hi is not None and v > hi):
                raise ValueError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")

        def _real(name: str, lo: float, strict: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            if v < lo or (strict and v == lo):
                raise ValueError(f"{name} must be {'>' if strict else '>='} {lo}, got {v}")

        _int("n_clusters", 2, _MAX_LABELS)
        if self.n_components is not None:
            _int("n_components", 1)
            if self.n_components > self.n_clusters - 1:
                raise ValueError(
                    f"n_components={self.n_components} exceeds n_clusters - 1 = {self.n_clusters - 1}: a Fisher "
                    f"discriminant of k={self.n_clusters} classes has at most k - 1 discriminants. Set "
                    f"manifold.n_clusters >= {self.n_components + 1}, or manifold.n_components <= "
                    f"{self.n_clusters - 1}, or manifold.n_components: null (= n_clusters - 1).")
        if not isinstance(self.relu, bool):
            raise ValueError(f"relu must be a bool, got {self.relu!r}")
        if self.kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {self.kernel!r}")
        _int("kernel_degree", 1)
        _real("kernel_coef0", 0.0)
        _real("kernel_gamma", 0.0, strict=True)
        _real("kfd_reg", 0.0)
        if self.kfd_solver not in _SOLVERS:
            raise ValueError(f"kfd_solver must be one of {_SOLVERS}, got {self.kfd_solver!r}")
        _int("n_anchors", 2)
        _int("max_hac_samples", self.n_clusters)
        _real("cov_reg", 0.0, strict=True)
        _real("pairwise_weight", 0.0)
        _real("sigma", 0.0, strict=True)
        _real("diagonal_weight", 0.0)
        _real("tol", 0.0)
        _real("label_tol", 0.0)
        _int("max_iter", 1)
        _int("seed", 0)
        if not isinstance(self.isolate_graphcut, bool):
            raise ValueError(f"isolate_graphcut must be a bool, got {self.isolate_graphcut!r}")
        if self.chunk_images is not None:
            _int("chunk_images", 1)

    @property
    def discriminants(self) -> int:
        """d, the number of KFD discriminants asked for (``n_components``, or k - 1 when None)."""
        return self.n_clusters - 1 if self.n_components is None else int(self.n_components)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "ManifoldConfig":
        """Build from a config section; unknown keys raise ValueError (no silent defaults)."""
        names = {f.name for f in fields(cls)}
        unknown = set(mapping) - names
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} for ManifoldConfig; allowed: {sorted(names)}")
        return cls(**dict(mapping))


@dataclass
class ManifoldResult:
    """Output of :func:`run_manifold`. Index 0 of every per-iteration array is the initial
    HAC labelling (no graph cut: energy, change and fraction are NaN there).

    Attributes
    ----------
    label_maps : (n_iter + 1, n_img, h, w) int16
        Labels after each iteration (graph-cut output); [0] = initial HAC of the raw features.
    energies : (n_iter + 1,) float64
        Graph-cut energy (Eq. 9) summed over the images.
    image_energies : (n_iter + 1, n_img) float64
    fraction_changed : (n_iter + 1,) float64
        Fraction of locations whose label changed from the previous iteration, after matching
        label ids one-to-one (ids are arbitrary per iteration).
    model_change : (n_iter + 1,) float64
        :func:`model_change` between consecutive SOP models ([1] = inf: nothing to compare).
    n_components : (n_iter + 1,) int64
        KFD discriminants used ([0] = 0).
    iteration_seconds : (n_iter + 1,) float64
    sop_models : SOPModels of the last iteration (in the coordinates of ``kfd.transform``).
    kfd : KernelFisherDiscriminant of the last iteration (transforms L2-normalised features).
    converged : bool
        True when a convergence test fired before ``max_iter``.
    config : ManifoldConfig
    """

    label_maps: np.ndarray
    energies: np.ndarray
    image_energies: np.ndarray
    fraction_changed: np.ndarray
    model_change: np.ndarray
    n_components: np.ndarray
    iteration_seconds: np.ndarray
    sop_models: SOPModels
    kfd: KernelFisherDiscriminant
    converged: bool
    config: ManifoldConfig = field(default_factory=ManifoldConfig)

    @property
    def n_iter(self) -> int:
        """Number of refinement iterations run (not counting the initial labelling)."""
        return int(self.label_maps.shape[0] - 1)

    @property
    def labels(self) -> np.ndarray:
        """Final label maps, (n_img, h, w) int16."""
        return self.label_maps[-1]

    def embed(self, features: Any) -> np.ndarray:
        """Embed features with the final KFD.

        Parameters
        ----------
        features : (n_img, h, w, C) float (raw; ReLU and normalisation are applied here as in
            :func:`run_manifold`)

        Returns
        -------
        (n_img, h, w, d) float64
        """
        return np.concatenate([emb for _, emb in self.embed_blocks(features)])

    def embed_blocks(self, features: Any) -> Iterator[tuple[slice, np.ndarray]]:
        """:meth:`embed` ``config.chunk_images`` images at a time: (image slice, (b, h, w, d) float64)."""
        src = ImageRows(features, self.config.relu, self.config.chunk_images)
        n_img, h, w, C = src.shape
        if C != self.kfd.n_features_in_:
            raise ValueError(f"features have C={C} channels, the KFD was fitted on {self.kfd.n_features_in_}")
        for images, (_, X) in zip(src.image_slices(), src.blocks()):
            yield images, self.kfd.transform(X).reshape(images.stop - images.start, h, w, -1)


# What run_manifold's loop carries from one iteration to the next (its checkpoint / resume state).
_STATE_KEYS = ("iteration", "labels", "maps", "energies", "image_energies", "fractions", "changes", "n_comps",
               "seconds", "prev_models", "prev_probe", "kfd", "models", "converged", "warned_cap", "stopped")


def _state(scope: Mapping[str, Any]) -> dict:
    """The loop state among ``scope``'s variables (lists copied: the loop appends to them)."""
    return {key: list(scope[key]) if isinstance(scope.get(key), list) else scope.get(key)
            for key in _STATE_KEYS if key not in ("iteration", "stopped")}


def fraction_changed(old: np.ndarray, new: np.ndarray) -> float:
    """Fraction of entries whose label differs after the best one-to-one matching of label ids.

    Parameters
    ----------
    old, new : (n,) non-negative int
    """
    old = np.asarray(old).ravel()
    new = np.asarray(new).ravel()
    if old.shape != new.shape:
        raise ValueError(f"shapes differ: {old.shape} vs {new.shape}")
    if old.size == 0:
        return 0.0
    ko, kn = int(old.max()) + 1, int(new.max()) + 1
    conf = np.bincount(old * kn + new, minlength=ko * kn).reshape(ko, kn)
    r, c = linear_sum_assignment(conf, maximize=True)
    return float(1.0 - conf[r, c].sum() / old.size)


def run_manifold(
    features: np.ndarray,
    config: ManifoldConfig | None = None,
    progress: Callable[[dict], None] | None = None,
    workers: int = 1,
    checkpoint: Callable[[dict], None] | None = None,
    resume_from: Mapping[str, Any] | None = None,
) -> ManifoldResult:
    """Gaur et al. Algorithm 1 on the features of one category.

    Parameters
    ----------
    features : (n_img, h, w, C) float
        Conv features of every image of the category (e.g. VGG16 44 x 44 x 512 after ReLU): a NumPy
        or Zarr array, or any object with ``shape`` sliced along images. They are read
        ``config.chunk_images`` images at a time (:class:`~.rows.ImageRows`) in every pass, so only the
        embedding (n x d) and the label maps are held for all images. Each location is passed through a
        ReLU (``config.relu``) and L2-normalised here (Gaur et al. Sec. 3, 6).
    config : ManifoldConfig, optional
    progress : callable, optional
        Called after every iteration with a dict: ``iteration`` (1-based), ``max_iter``,
        ``energy``, ``fraction_changed``, ``model_change``, ``n_components``, ``seconds``,
        ``converged``.
    workers : int
        Graph-cut worker processes run at once (the job's threads); the labels do not depend on it.
    checkpoint : callable, optional
        Called after every finished iteration with the loop's whole state (a dict of arrays, models and
        the fitted KFD; the caller stores it, e.g. :mod:`.stage` beside the manifold store).
    resume_from : mapping, optional
        A state given to ``checkpoint`` by an earlier, killed run on the same features and config: the
        loop continues after that state's iteration, with the same result as a run never stopped.

    Returns
    -------
    ManifoldResult
    """
    cfg = config if config is not None else ManifoldConfig()
    X = ImageRows(features, cfg.relu, cfg.chunk_images)  # read, ReLU'd and normalised a block at a time
    n_img, h, w, C = X.shape
    n = X.n
    k = cfg.n_clusters
    if k > n:
        raise ValueError(f"n_clusters={k} exceeds the number of feature vectors ({n})")

    if resume_from is None:
        t0 = time.perf_counter()
        labels = scalable_ward(X, k, max_hac_samples=cfg.max_hac_samples, random_state=cfg.seed)
        logger.info("manifold: %d image(s) of %dx%d, C=%d, n=%d; initial HAC into %d clusters (blocks of %s "
                    "images)", n_img, h, w, C, n, k, cfg.chunk_images or n_img)
        st: dict[str, Any] = {
            "iteration": 0, "labels": labels, "maps": [labels.reshape(n_img, h, w).astype(np.int16)],
            "energies": [math.nan], "image_energies": [np.full(n_img, math.nan)], "fractions": [math.nan],
            "changes": [math.nan], "n_comps": [0], "seconds": [time.perf_counter() - t0], "prev_models": None,
            "prev_probe": None, "kfd": None, "models": None, "converged": False, "warned_cap": False,
            "stopped": False,
        }
    else:
        st = {key: list(v) if isinstance(v := resume_from[key], list) else v for key in _STATE_KEYS}  # appended to
        if st["labels"].shape != (n,):
            raise ValueError(f"resume_from: its labels are for {st['labels'].shape[0]} vectors, these features "
                             f"have {n}; it belongs to another run")
        logger.info("manifold: resuming after iteration %d of %d", st["iteration"], cfg.max_iter)
    labels, maps, energies = st["labels"], st["maps"], st["energies"]
    image_energies, fractions, changes = st["image_energies"], st["fractions"], st["changes"]
    n_comps, seconds = st["n_comps"], st["seconds"]
    prev_models: SOPModels | None = st["prev_models"]
    prev_probe: np.ndarray | None = st["prev_probe"]
    kfd: KernelFisherDiscriminant | None = st["kfd"]
    models: SOPModels | None = st["models"]
    converged, warned_cap = st["converged"], st["warned_cap"]
    probe_rows = ward_sample(n, cfg.max_hac_samples, cfg.seed)
    first = st["iteration"] + 1 if not (st["converged"] or st["stopped"]) else cfg.max_iter + 1
    for it in range(first, cfg.max_iter + 1):
        t_it = time.perf_counter()
        n_present = int(np.unique(labels).size)
        if n_present < 2:
            logger.warning("manifold: iteration %d: only %d label left, stopping", it, n_present)
            if checkpoint is not None:
                checkpoint({**_state(locals()), "iteration": it - 1, "stopped": True})
            break
        d = min(cfg.discriminants, n_present - 1)
        if d < cfg.discriminants and not warned_cap:
            logger.warning(
                "manifold: iteration %d: only %d of %d labels left, so d=%d discriminants are lowered to %d "
                "(a Fisher discriminant of %d labels has at most %d)", it, n_present, k, cfg.discriminants, d,
                n_present, n_present - 1,
            )
            warned_cap = True
        # Step 1a-b: embedding (Gaur et al. Eq. 3-4).
        kfd = KernelFisherDiscriminant(
            kernel=cfg.kernel,
            degree=cfg.kernel_degree,
            coef0=cfg.kernel_coef0,
            gamma=cfg.kernel_gamma,
            reg=cfg.kfd_reg,
            n_components=d,
            n_anchors=cfg.n_anchors,
            solver=cfg.kfd_solver,
            random_state=cfg.seed,
        ).fit_rows(X, labels)
        E = np.empty((n, d))  # the embedding: d (<= k - 1) values per vector instead of C
        for sl, block in X.blocks():
            E[sl] = kfd.transform(block)
        # Step 1c-d: HAC in the embedding, Gaussian SOP models (Eq. 5-6).
        hac = scalable_ward(E, k, max_hac_samples=cfg.max_hac_samples, random_state=cfg.seed)
        models = fit_sop_models(E, hac, k, cfg.cov_reg)
        # Step 2: unary (Eq. 7), geodesic pairwise (Eq. 8), graph cut (Eq. 9).
        pairwise = geodesic_pairwise(hac.reshape(n_img, h, w), k, cfg.sigma)
        new_maps, img_e = np.empty((n_img, h, w), dtype=np.int64), np.empty(n_img)
        for images in X.image_slices():  # one worker call per block: its unaries only
            rows = slice(images.start * h * w, images.stop * h * w)
            new_maps[images], img_e[images] = refine_labels_batch(
                unary_costs(E[rows], models).reshape(-1, h, w, k),
                pairwise,
                cfg.pairwise_weight,
                diagonal_weight=cfg.diagonal_weight,
                isolate=cfg.isolate_graphcut,
                workers=workers,
            )
        new_labels = new_maps.reshape(-1)
        # Procrustes rotation onto the previous embedding, estimated on the Ward sample's rows (the same
        # rows every iteration; d x d from max_hac_samples rows, so the previous embedding is not kept whole).
        probe = E[probe_rows]
        if prev_models is None or prev_probe is None or prev_probe.shape[1] != E.shape[1]:
            change = math.inf
        else:
            R, _ = orthogonal_procrustes(probe, prev_probe)
            change = model_change(prev_models, rotate_sop_models(models, R))
        frac = fraction_changed(labels, new_labels)
        maps.append(new_maps.astype(np.int16))
        energies.append(float(img_e.sum()))
        image_energies.append(img_e)
        fractions.append(frac)
        changes.append(change)
        n_comps.append(d)
        seconds.append(time.perf_counter() - t_it)
        converged = change < cfg.tol or frac <= cfg.label_tol
        logger.info(
            "manifold: iteration %d/%d: d=%d energy=%.4g changed=%.4f model_change=%.4g (%.1f s)",
            it, cfg.max_iter, d, energies[-1], frac, change, seconds[-1],
        )
        if progress is not None:
            progress(
                {
                    "iteration": it,
                    "max_iter": cfg.max_iter,
                    "energy": energies[-1],
                    "fraction_changed": frac,
                    "model_change": change,
                    "n_components": d,
                    "seconds": seconds[-1],
                    "converged": converged,
                }
            )
        labels = new_labels
        prev_models, prev_probe = models, probe
        if checkpoint is not None:
            checkpoint({**_state(locals()), "iteration": it, "stopped": False})
        if converged:
            break

    if kfd is None or models is None:
        raise RuntimeError("run_manifold: no iteration could run (the initial labelling has one label)")
    return ManifoldResult(
        label_maps=np.stack(maps),
        energies=np.asarray(energies),
        image_energies=np.stack(image_energies),
        fraction_changed=np.asarray(fractions),
        model_change=np.asarray(changes),
        n_components=np.asarray(n_comps, dtype=np.int64),
        iteration_seconds=np.asarray(seconds),
        sop_models=models,
        kfd=kfd,
        converged=converged,
        config=cfg,
    )
