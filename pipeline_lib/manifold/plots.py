"""Pictures of the manifold stage: label maps per iteration (consistent colours) and convergence."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..atomic import atomic_path

MAX_IMAGES_SHOWN = 6


def align_label_ids(label_maps: np.ndarray) -> np.ndarray:
    """Renumber every iteration's labels to best match the previous iteration's (Hungarian on the
    co-occurrence counts), so one part keeps one colour across iterations. (n_iter, ...) int."""
    out = np.array(label_maps, dtype=np.int64)
    for t in range(1, len(out)):
        prev, cur = out[t - 1].ravel(), out[t].ravel()
        k = int(max(prev.max(), cur.max())) + 1
        conf = np.bincount(cur * k + prev, minlength=k * k).reshape(k, k)
        rows, cols = linear_sum_assignment(conf, maximize=True)
        mapping = np.arange(k)
        mapping[rows] = cols
        out[t] = mapping[out[t]]
    return out


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_label_maps(images: Sequence[np.ndarray], label_maps: np.ndarray, path: str | Path, title: str) -> None:
    """Rows: images (up to MAX_IMAGES_SHOWN); columns: the photo, then labels of each iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = align_label_ids(label_maps)  # (n_iter, n_img, h, w)
    n_iter, n_img = maps.shape[:2]
    shown = min(n_img, MAX_IMAGES_SHOWN)
    k = int(maps.max()) + 1
    cmap = plt.get_cmap("tab20", max(k, 2))
    fig, axes = plt.subplots(shown, n_iter + 1, figsize=(1.6 * (n_iter + 1), 1.6 * shown), squeeze=False)
    for i in range(shown):
        axes[i, 0].imshow(images[i])
        for t in range(n_iter):
            ax = axes[i, t + 1]
            ax.imshow(images[i], extent=(0, 1, 1, 0))
            ax.imshow(maps[t, i], cmap=cmap, vmin=0, vmax=max(k - 1, 1), alpha=0.6, extent=(0, 1, 1, 0),
                      interpolation="nearest")
            if i == 0:
                ax.set_title("HAC (raw)" if t == 0 else f"iter {t}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_convergence(energies, fraction_changed, model_change, path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = np.arange(len(energies))
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, values, name in zip(axes, (energies, fraction_changed, model_change),
                                ("graph-cut energy (Eq. 9)", "fraction of labels changed", "SOP model change")):
        ax.plot(it[1:], np.asarray(values, dtype=float)[1:], marker="o")
        ax.set_xlabel("iteration")
        ax.set_title(name, fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
