"""Multi-label graph cut on feature-map grids (Gaur et al. 2017 Sec. 4, Eq. 8-9) via PyGCO.

Energy of a labelling ``l`` of one (h, w) grid (Gaur et al. Eq. 9)::

    E(l) = sum_i unary[i, l_i] + weight * sum_{(i, j) in E} e_ij * pairwise[l_i, l_j]

with ``E`` the 8-connected grid edges (Sec. 4: nodes are "8-connected on the feature map"),
``e_ij = 1`` for horizontal/vertical edges and ``diagonal_weight`` (default 1, as in the paper)
for diagonal ones.

PyGCO (``gco-wrapper``) must never take the process down. It converts costs to int32 and the C++
library calls ``abort()`` (SIGABRT, no Python exception) on a term above
``GCO_MAX_ENERGYTERM = 1e7`` or on a non-metric pairwise with alpha-expansion. So:

* inputs are validated (finite unary; pairwise finite, square, symmetric, non-negative, zero
  diagonal; finite non-negative weight) and a ``ValueError`` says what is wrong;
* costs are quantised here, not by PyGCO's truncating float path (x1e5 / x1e3 / x1e2): unary
  rows are shifted to a minimum of 0 and clipped at ``T = 2 * weight * max(pairwise) *
  max_node_degree`` (a label whose unary exceeds the row minimum by more than the largest
  pairwise cost a node can ever pay is never optimal, so the minimiser is unchanged), then
  scaled so that ``T -> 5e6``; the pairwise matrix is scaled to 0..1000 and the edge weights
  carry the rest. Every int32 term stays at or below half of ``GCO_MAX_ENERGYTERM`` and
  every product edge weight x pairwise below 1e6; this is re-checked before the solve;
* alpha-expansion is used only when the quantised pairwise is a metric (triangle inequality);
  otherwise alpha-beta swap (valid for any semi-metric);
* with ``isolate=True`` (default) the solve runs in a fresh worker interpreter
  (``subprocess``, ``sys.executable -c``; see :func:`_run_isolated` for why not
  ``multiprocessing``); all images of a call go to one worker (one process start, about
  0.3 s, per call). A worker that dies (negative exit code = killed by a signal) becomes
  :class:`GraphCutError` naming the signal and the problem shapes; the caller survives.

The energy returned is recomputed in float64 from the caller's (unquantised) costs.
"""

from __future__ import annotations

import logging
import signal
import traceback
from typing import Any, Callable

import numpy as np

__all__ = [
    "GraphCutError",
    "refine_labels",
    "refine_labels_batch",
    "grid_edges",
    "labeling_energy",
    "geodesic_pairwise",
    "is_metric",
]

logger = logging.getLogger(__name__)

# PyGCO / GCO v3: terms above this abort the process ("danger of integer overflow").
GCO_MAX_ENERGYTERM = 10_000_000
# Our quantisation: largest unary term after scaling (half the GCO limit, for margin).
_UNARY_INT_MAX = 5_000_000
# Pairwise matrix quantisation levels (max(pairwise) -> this integer).
_PAIRWISE_LEVELS = 1000
# Clip threshold factor: T = factor * weight * max(pairwise) * max node degree (must be > 1).
_CLIP_FACTOR = 2.0
_ALGORITHMS = ("auto", "expansion", "swap")


class GraphCutError(RuntimeError):
    """The graph-cut worker failed (crashed, was killed, or raised)."""


# --------------------------------------------------------------------------- grid and energy
def grid_edges(h: int, w: int, diagonal_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the 8-connected (h, w) grid, nodes numbered row-major (``i * w + j``).

    Returns
    -------
    edges : (E, 2) int32 with ``edges[:, 0] < edges[:, 1]``
    weights : (E,) float64, 1 for horizontal/vertical edges, ``diagonal_weight`` for diagonal
    """
    idx = np.arange(h * w).reshape(h, w)
    pairs = [
        (idx[:, :-1], idx[:, 1:], 1.0),  # horizontal
        (idx[:-1, :], idx[1:, :], 1.0),  # vertical
        (idx[:-1, :-1], idx[1:, 1:], diagonal_weight),  # down-right
        (idx[:-1, 1:], idx[1:, :-1], diagonal_weight),  # down-left
    ]
    src = np.concatenate([a.ravel() for a, _, _ in pairs])
    dst = np.concatenate([b.ravel() for _, b, _ in pairs])
    wts = np.concatenate([np.full(a.size, wt, dtype=np.float64) for a, _, wt in pairs])
    edges = np.stack([np.minimum(src, dst), np.maximum(src, dst)], axis=1).astype(np.int32)
    return edges, wts


def labeling_energy(
    unary: np.ndarray, labels: np.ndarray, pairwise: np.ndarray, weight: float, diagonal_weight: float = 1.0
) -> float:
    """Energy (Gaur et al. Eq. 9) of ``labels`` (h, w) under ``unary`` (h, w, k)."""
    h, w, k = unary.shape
    flat = labels.reshape(-1)
    edges, ew = grid_edges(h, w, diagonal_weight)
    data = unary.reshape(-1, k)[np.arange(h * w), flat].sum()
    smooth = (ew * pairwise[flat[edges[:, 0]], flat[edges[:, 1]]]).sum()
    return float(data + weight * smooth)


def is_metric(pairwise: np.ndarray) -> bool:
    """True when ``pairwise`` (k, k) satisfies P[a, c] <= P[a, b] + P[b, c] for all a, b, c
    (with a zero diagonal and symmetry this makes it a metric in GCO's sense)."""
    P = np.asarray(pairwise)
    return bool(np.all(P[:, None, :] <= P[:, :, None] + P[None, :, :]))


# --------------------------------------------------------------------------- validation
def _validate_pairwise(pairwise: Any, k: int) -> np.ndarray:
    P = np.asarray(pairwise, dtype=np.float64)
    if P.shape != (k, k):
        raise ValueError(f"pairwise must have shape ({k}, {k}) to match the unary's {k} labels, got {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("pairwise contains NaN or inf")
    scale = max(float(np.abs(P).max()), 1.0)
    if np.any(np.abs(np.diag(P)) > 1e-12 * scale):
        raise ValueError(f"pairwise must have a zero diagonal (cost of equal labels), got diag {np.diag(P)}")
    if np.any(P < 0):
        raise ValueError(f"pairwise must be non-negative, min is {P.min()}")
    if not np.allclose(P, P.T, rtol=1e-9, atol=1e-12 * scale):
        i, j = np.unravel_index(np.argmax(np.abs(P - P.T)), P.shape)
        raise ValueError(f"pairwise must be symmetric: P[{i},{j}]={P[i, j]} != P[{j},{i}]={P[j, i]}")
    P = 0.5 * (P + P.T)
    np.fill_diagonal(P, 0.0)
    return P


def _validate_unary(unary: Any, ndim: int, what: str) -> np.ndarray:
    U = np.asarray(unary)
    if U.ndim != ndim:
        raise ValueError(f"unary must be {what}, got shape {U.shape}")
    if not np.issubdtype(U.dtype, np.floating):
        raise ValueError(f"unary must be a float array (PyGCO mis-handles integer costs), got {U.dtype}")
    U = U.astype(np.float64, copy=False)
    if min(U.shape) == 0:
        raise ValueError(f"unary must be non-empty, got shape {U.shape}")
    if not np.all(np.isfinite(U)):
        raise ValueError("unary contains NaN or inf")
    return U


# --------------------------------------------------------------------------- the worker
def _solve_batch(payload: dict) -> np.ndarray:
    """Solve every image of a quantised batch with PyGCO. Runs in the worker process.

    payload keys: ``unary`` (n_img, n_nodes, k) int32, ``init`` (n_img, n_nodes) int32,
    ``edges`` (E, 2) int32, ``edge_weights`` (E,) int32, ``pairwise`` (k, k) int32,
    ``algorithm`` ("expansion" | "swap"), ``n_iter`` int. Returns (n_img, n_nodes) int32.
    """
    import gco  # imported here so the parent never needs the C library loaded

    unary = payload["unary"]
    out = np.empty(unary.shape[:2], dtype=np.int32)
    for i in range(unary.shape[0]):
        out[i] = gco.cut_general_graph(
            payload["edges"],
            payload["edge_weights"],
            unary[i],
            payload["pairwise"],
            n_iter=payload["n_iter"],
            algorithm=payload["algorithm"],
            init_labels=payload["init"][i],
            down_weight_factor=1,  # integer costs, already scaled here: no PyGCO rescaling
        )
    return out


def _worker_entry() -> None:
    """Body of the isolated worker process (``python -c``; see :func:`_run_isolated`).

    Reads ``(worker_fn, payload)`` as a pickle from stdin, writes ``("ok", result)`` or
    ``("error", traceback)`` as a pickle to the original stdout. Anything printed by the C
    library goes to stderr (fd 1 is redirected there before the solve).
    """
    import os
    import pickle
    import sys

    import contextlib

    # A crashing solver must not leave a core file in the caller's working directory (best effort:
    # platforms without `resource`, or that refuse the limit, just keep their default).
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    result_fd = os.dup(1)
    os.dup2(2, 1)
    with os.fdopen(result_fd, "wb") as out:
        try:
            worker_fn, payload = pickle.load(sys.stdin.buffer)
            msg = ("ok", worker_fn(payload))
        except BaseException as exc:  # report every Python-level failure to the parent
            msg = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        pickle.dump(msg, out, protocol=pickle.HIGHEST_PROTOCOL)


def _run_isolated(worker_fn: Callable[[dict], Any], payload: dict, describe: str, timeout_s: float | None):
    """Run ``worker_fn(payload)`` in a fresh interpreter; a crash becomes GraphCutError.

    A small worker started with :mod:`subprocess` (``sys.executable -c ...``) rather than
    :mod:`multiprocessing`: spawn/forkserver re-import the caller's ``__main__``, which breaks
    unguarded scripts (Snakemake ``script:`` files run their logic at module level). The
    child gets the parent's ``sys.path``, so ``worker_fn`` only has to be importable by name.
    """
    import pickle
    import subprocess
    import sys

    bootstrap = (
        "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
        f"import importlib; importlib.import_module({__name__!r})._worker_entry()"
    )
    data = pickle.dumps(list(sys.path), protocol=pickle.HIGHEST_PROTOCOL) + pickle.dumps(
        (worker_fn, payload), protocol=pickle.HIGHEST_PROTOCOL
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", bootstrap],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(input=data, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise GraphCutError(f"graph-cut worker timed out after {timeout_s} s ({describe})") from None
    code = proc.returncode
    err_tail = err.decode("utf-8", "replace").strip()[-2000:]
    msg = None
    if out:
        try:
            msg = pickle.loads(out)
        except Exception:  # truncated output of a dying worker
            msg = None
    if msg is not None and msg[0] == "error":
        raise GraphCutError(f"graph-cut worker raised ({describe}):\n{msg[1]}")
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise GraphCutError(
            f"graph-cut worker was killed by {name} (exit code {code}) ({describe}); "
            "PyGCO aborts on int32 overflow or a non-metric pairwise with alpha-expansion. "
            f"Worker stderr: {err_tail or '(empty)'}"
        )
    if msg is None or code != 0:
        raise GraphCutError(
            f"graph-cut worker exited with code {code} without a result ({describe}). "
            f"Worker stderr: {err_tail or '(empty)'}"
        )
    return msg[1]


def _run_isolated_shares(worker_fn: Callable[[dict], Any], payload: dict, describe: str, timeout_s: float | None,
                         workers: int) -> np.ndarray:
    """:func:`_run_isolated` on ``workers`` contiguous shares of the images at once (threads wait on the
    worker processes), results in image order; one failing share fails the call with its images named."""
    if workers <= 1:
        return _run_isolated(worker_fn, payload, describe, timeout_s)
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, payload["unary"].shape[0], workers + 1).astype(int)
    shares = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def solve(share: tuple[int, int]) -> np.ndarray:
        a, b = share
        sub = {**payload, "unary": payload["unary"][a:b], "init": payload["init"][a:b]}
        return np.asarray(_run_isolated(worker_fn, sub, f"images {a}-{b - 1} of {describe}", timeout_s))

    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        return np.concatenate(list(pool.map(solve, shares)))


# --------------------------------------------------------------------------- public API
def refine_labels_batch(
    unary: np.ndarray,
    pairwise: np.ndarray,
    weight: float,
    *,
    algorithm: str = "auto",
    diagonal_weight: float = 1.0,
    n_iter: int = -1,
    isolate: bool = True,
    timeout_s: float | None = None,
    worker_fn: Callable[[dict], np.ndarray] | None = None,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise Gaur et al. Eq. 9 independently on each image of a batch, in one worker call (``workers``
    > 1 with ``isolate``: that many worker processes at once, each solving a contiguous share of the images).

    Parameters
    ----------
    unary : (n_img, h, w, k) float
        Unary costs (e.g. ``-log p(c | f)``); any finite values.
    pairwise : (k, k) float
        Label cost: symmetric, non-negative, zero diagonal (Eq. 8).
    weight : float >= 0
        ``w`` of Eq. 9.
    algorithm : {"auto", "expansion", "swap"}
        ``auto``: alpha-expansion if the (quantised) pairwise is a metric, else swap.
        ``expansion`` with a non-metric pairwise raises ValueError.
    diagonal_weight : float >= 0
        Weight of diagonal edges relative to horizontal/vertical ones.
    n_iter : int
        GCO iterations; -1 runs to convergence.
    isolate : bool
        Run PyGCO in a child process (crash -> GraphCutError). False runs in-process.
    timeout_s : float or None
        With ``isolate``, kill the worker and raise GraphCutError after this many seconds.
    worker_fn : callable, optional
        Test hook replacing the PyGCO solver (must be picklable, module level).
    workers : int >= 1
        Isolated worker processes run concurrently (the job's threads); every image is solved alone with the
        same costs, so the labels do not depend on it. Without ``isolate``, one in-process solve.

    Returns
    -------
    labels : (n_img, h, w) int64
    energies : (n_img,) float64, Eq. 9 of each image with the caller's costs
    """
    U = _validate_unary(unary, 4, "(n_img, h, w, k)")
    n_img, h, w, k = U.shape
    P = _validate_pairwise(pairwise, k)
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be finite and >= 0, got {weight!r}")
    if not (np.isfinite(diagonal_weight) and diagonal_weight >= 0):
        raise ValueError(f"diagonal_weight must be finite and >= 0, got {diagonal_weight!r}")
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")

    flatU = U.reshape(n_img, h * w, k)
    shift = flatU.min(axis=2, keepdims=True)
    argmin = np.argmin(flatU, axis=2)
    edges, ew = grid_edges(h, w, diagonal_weight)
    pmax = float(P.max())
    trivial = k == 1 or weight == 0 or pmax == 0 or (edges.shape[0] == 0) or not np.any(ew > 0)
    if trivial and worker_fn is None:
        labels = argmin.reshape(n_img, h, w)  # no pairwise term: the unary argmin is optimal
    else:
        # Quantise (see module docstring).
        degree = np.zeros(h * w)
        np.add.at(degree, edges[:, 0], ew)
        np.add.at(degree, edges[:, 1], ew)
        span = weight * pmax * float(degree.max()) if not trivial else 1.0
        clip = _CLIP_FACTOR * span
        scale = _UNARY_INT_MAX / clip
        U_int = np.rint(np.minimum(flatU - shift, clip) * scale).astype(np.int32)
        P_int = np.rint(P / max(pmax, np.finfo(float).tiny) * _PAIRWISE_LEVELS).astype(np.int32)
        w_int = np.rint(scale * weight * pmax * ew / _PAIRWISE_LEVELS).astype(np.int32)
        if (
            U_int.max() > GCO_MAX_ENERGYTERM // 2
            or U_int.min() < 0
            or int(w_int.max(initial=0)) * int(P_int.max()) > GCO_MAX_ENERGYTERM // 10
        ):
            raise ValueError(
                f"quantised costs out of the safe int32 range (unary max {U_int.max()}, "
                f"edge weight max {w_int.max(initial=0)}, pairwise max {P_int.max()})"
            )
        metric = is_metric(P_int)
        if algorithm == "expansion" and not metric:
            raise ValueError(
                "pairwise is not a metric (triangle inequality fails after quantisation); "
                "alpha-expansion would abort PyGCO: use algorithm='swap' or 'auto'"
            )
        algo = algorithm if algorithm != "auto" else ("expansion" if metric else "swap")
        logger.debug("graph cut: %d image(s) of %dx%d, k=%d, %s (metric=%s)", n_img, h, w, k, algo, metric)
        payload = {
            "unary": U_int,
            "init": argmin.astype(np.int32),
            "edges": edges,
            "edge_weights": w_int,
            "pairwise": P_int,
            "algorithm": algo,
            "n_iter": int(n_iter),
        }
        fn = worker_fn if worker_fn is not None else _solve_batch
        describe = f"n_img={n_img}, grid={h}x{w}, k={k}, edges/image={edges.shape[0]}, algorithm={algo}"
        if isolate:
            out = _run_isolated_shares(fn, payload, describe, timeout_s, min(workers, n_img))
        else:
            out = fn(payload)
        out = np.asarray(out)
        if out.shape != (n_img, h * w) or out.min(initial=0) < 0 or out.max(initial=0) >= k:
            raise GraphCutError(f"graph-cut worker returned an invalid labelling of shape {out.shape} ({describe})")
        labels = out.astype(np.int64).reshape(n_img, h, w)
    energies = np.array([labeling_energy(U[i], labels[i], P, weight, diagonal_weight) for i in range(n_img)])
    return labels.astype(np.int64), energies


def refine_labels(
    unary: np.ndarray, pairwise: np.ndarray, weight: float, **kwargs
) -> tuple[np.ndarray, float]:
    """Minimise Gaur et al. Eq. 9 on one (h, w) grid.

    Parameters
    ----------
    unary : (h, w, k) float
    pairwise : (k, k) float, symmetric, non-negative, zero diagonal
    weight : float >= 0
    **kwargs : see :func:`refine_labels_batch` (``algorithm``, ``diagonal_weight``, ``n_iter``,
        ``isolate`` (default True), ``timeout_s``, ``worker_fn``)

    Returns
    -------
    labels : (h, w) int64
    energy : float
    """
    U = _validate_unary(unary, 3, "(h, w, k)")
    labels, energies = refine_labels_batch(U[None], pairwise, weight, **kwargs)
    return labels[0], float(energies[0])


# --------------------------------------------------------------------------- Eq. 8
def geodesic_pairwise(label_maps: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """Geodesic label cost of Gaur et al. Eq. 8 from the label maps of one category.

    For each image and each label present, the label's median cell position is the
    coordinate-wise median (row, col) of its cells. The distance between labels a and b is the
    Euclidean distance between their medians, averaged over the images in which both appear
    (Sec. 4: "average geodesic distance ... across all the label matrices"). Pairs that never
    appear in the same image use the distance between their pooled medians (all cells of the
    label in all maps); a label absent from every map is placed at the grid diagonal's
    distance from every other label (as far as the grid allows). Distances are in units of
    the longer grid side, ``max(h, w)`` cells, so ``sigma`` does not depend on the grid size.

    ``cost[a, b] = exp(-d(a, b) / sigma**2)`` for a != b and 0 on the diagonal. Note that this
    is generally not a metric (nearby medians cost ~1, far ones ~0), so the graph cut uses
    alpha-beta swap for it.

    Parameters
    ----------
    label_maps : (n_img, h, w) int in 0..k-1
    k : int, number of labels
    sigma : float > 0

    Returns
    -------
    (k, k) float64, symmetric, zero diagonal, values in [0, 1]
    """
    L = np.asarray(label_maps)
    if L.ndim != 3 or min(L.shape) == 0:
        raise ValueError(f"label_maps must be a non-empty (n_img, h, w) array, got shape {L.shape}")
    if not np.issubdtype(L.dtype, np.integer):
        raise ValueError(f"label_maps must be integer, got {L.dtype}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    if L.min() < 0 or L.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}, got range [{L.min()}, {L.max()}]")
    n_img, h, w = L.shape
    unit = float(max(h, w))
    rows, cols = np.mgrid[0:h, 0:w]
    rows = rows.ravel() / unit
    cols = cols.ravel() / unit
    dsum = np.zeros((k, k))
    dcnt = np.zeros((k, k))
    for img in L.reshape(n_img, -1):
        present = np.unique(img)
        med = np.stack([[np.median(rows[img == c]), np.median(cols[img == c])] for c in present])
        d = np.sqrt(((med[:, None, :] - med[None, :, :]) ** 2).sum(-1))
        dsum[np.ix_(present, present)] += d
        dcnt[np.ix_(present, present)] += 1
    flat = L.reshape(-1)
    allrows = np.tile(rows, n_img)
    allcols = np.tile(cols, n_img)
    pooled = np.full((k, 2), np.nan)
    for c in np.unique(flat):
        sel = flat == c
        pooled[c] = (np.median(allrows[sel]), np.median(allcols[sel]))
    dpool = np.sqrt(((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1))
    diag_dist = np.hypot(h, w) / unit
    dpool[np.isnan(dpool)] = diag_dist
    D = np.where(dcnt > 0, dsum / np.maximum(dcnt, 1), dpool)
    cost = np.exp(-D / sigma**2)
    np.fill_diagonal(cost, 0.0)
    return 0.5 * (cost + cost.T)
