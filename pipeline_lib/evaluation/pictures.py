"""Pictures of test pairs, one figure per category: every method's transferred keypoints against the truth
(:func:`draw_category`), and the source warped onto the target by every dense-flow method (:func:`draw_warps`).

Per test pair: first the source image with its keypoints, then one panel per method (wrapping after
``PANELS_PER_ROW``): the target image with the method's predictions, each joined to its true position by a line, green where the keypoint is
correct at the figure's alpha and red where it is not (the title gives the count). The figures are what a
reader opens to see *why* a row of the table is what it is.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..datasets import DatasetIndex, Pair, load_rgb
from .pck import correct_keypoints, pck_threshold

CORRECT, WRONG = "#1a9850", "#d73027"  # colour-blind-safe green / red (ColorBrewer RdYlGn ends)
SOURCE = "#ffd92f"  # the source keypoints
PANELS_PER_ROW = 8  # panels wrap after this many, so a table of 15 methods stays readable
CELL_PX, CELL_GAP_PX, TITLE_PX = 200, 6, 16  # each image fits a CELL_PX square below a title band
FIGURE_DPI = 100


def pairs_to_draw(pairs: Sequence[Pair], per_category: int) -> dict[str, list[Pair]]:
    """The first ``per_category`` pairs of each category, by pair id (the same pairs on every rerun)."""
    out: dict[str, list[Pair]] = defaultdict(list)
    for p in sorted(pairs, key=lambda p: p.pair_id):
        if len(out[p.category]) < per_category:
            out[p.category].append(p)
    return dict(sorted(out.items()))


def safe_name(category: str) -> str:
    """A category as a file name (PF-WILLOW's ``car(G)`` stays readable)."""
    return "".join(c if c.isalnum() or c in "()-_." else "_" for c in category)


def _fit(image: np.ndarray, cell: int) -> tuple[np.ndarray, float]:
    """``image`` scaled to fit a ``cell`` x ``cell`` square (aspect kept), and the scale."""
    h, w = image.shape[:2]
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)), scale


def draw_category(pairs: Sequence[Pair], index: DatasetIndex, preds: Mapping[str, Mapping[str, np.ndarray]],
                  threshold: str, alpha: float, path: str | Path, columns: int = PANELS_PER_ROW,
                  cell: int = CELL_PX) -> None:
    """One figure: per pair, the source then each method's predictions on the target, ``columns`` panels per
    row (``preds``: method -> pair id -> (K, 2) original target pixels). The panels are laid out as one
    mosaic on one axes (a grid of axes costs matplotlib seconds per figure)."""
    from matplotlib.collections import LineCollection

    methods = list(preds)
    rows_per_pair = -(-(1 + len(methods)) // columns)
    pitch_x, pitch_y = cell + CELL_GAP_PX, cell + TITLE_PX
    mosaic = np.full((pitch_y * rows_per_pair * len(pairs), pitch_x * columns, 3), 255, dtype=np.uint8)
    segments, seg_colours, dots, dot_colours, titles = [], [], [], [], []
    for i, p in enumerate(pairs):
        trg = index.images[p.trg]
        thr = pck_threshold(threshold, p.trg_kps, p.valid, (trg.height, trg.width), p.trg_box)
        src_img, src_scale = _fit(load_rgb(index.images[p.src].path), cell)
        trg_img, trg_scale = _fit(load_rgb(trg.path), cell)
        for j, m in enumerate([None] + methods):
            x0 = (j % columns) * pitch_x
            y0 = (i * rows_per_pair + j // columns) * pitch_y + TITLE_PX
            img = src_img if m is None else trg_img
            mosaic[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
            if m is None:
                dots.append(p.src_kps[p.valid] * src_scale + (x0, y0))
                dot_colours += [SOURCE] * int(p.valid.sum())
                titles.append((x0, y0, f"source {p.src}"))
                continue
            pred = preds[m][p.pair_id]
            ok = correct_keypoints(pred, p.trg_kps, p.valid, thr, alpha)
            shown = p.valid & np.isfinite(pred).all(1)
            colours = [CORRECT if c else WRONG for c in ok[shown]]
            a, b = pred[shown] * trg_scale + (x0, y0), p.trg_kps[shown] * trg_scale + (x0, y0)
            segments += list(np.stack([a, b], 1))
            seg_colours += colours
            dots.append(a)
            dot_colours += colours
            titles.append((x0, y0, f"{m}: {int(ok.sum())}/{int(p.valid.sum())}"))
    fig, ax = _mosaic_figure(mosaic, titles, f"{pairs[0].category}: predictions (dots) joined to their true points; "
                                             f"green = correct at alpha {alpha:g} x {threshold} (n correct / n keypoints)")
    ax.add_collection(LineCollection(segments, colors=seg_colours, linewidths=0.9))
    ax.scatter(*np.concatenate(dots).T, s=10, c=dot_colours, edgecolors="k", linewidths=0.3, zorder=3)
    _save(fig, path)


def _mosaic_figure(mosaic: np.ndarray, titles: Sequence[tuple[int, int, str]], suptitle: str):
    """A matplotlib figure of ``mosaic`` at one pixel per pixel, with titles (x, y, text) above their panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = mosaic.shape[:2]
    fig = plt.figure(figsize=(width / FIGURE_DPI, height / FIGURE_DPI + 0.3), dpi=FIGURE_DPI)
    ax = fig.add_axes((0, 0, 1, height / (height + 0.3 * FIGURE_DPI)))
    ax.imshow(mosaic, interpolation="nearest")
    for x, y, text in titles:
        ax.text(x, y - 4, text, fontsize=6.5, va="bottom", ha="left", clip_on=True)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    fig.suptitle(suptitle, fontsize=7, y=0.995, va="top")
    return fig, ax


def _save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=FIGURE_DPI)
    plt.close(fig)


def draw_warps(pairs: Sequence[Pair], index: DatasetIndex, warped: Mapping[str, Mapping[str, np.ndarray]],
               path: str | Path, cell: int = CELL_PX) -> None:
    """One figure, a row per pair: the source, the target, then each method's source warped onto the target
    (``warped``: method -> pair id -> (H_t, W_t, 3) uint8, black where the method matched nothing inside the
    source). A good dense flow makes every warped panel look like the target's object in the source's colours."""
    methods = list(warped)
    pitch_x, pitch_y = cell + CELL_GAP_PX, cell + TITLE_PX
    mosaic = np.full((pitch_y * len(pairs), pitch_x * (2 + len(methods)), 3), 255, dtype=np.uint8)
    titles = []
    for i, p in enumerate(pairs):
        panels = [(f"source {p.src}", load_rgb(index.images[p.src].path)),
                  (f"target {p.trg}", load_rgb(index.images[p.trg].path))]
        panels += [(f"{m}: source warped", warped[m][p.pair_id]) for m in methods]
        for j, (title, image) in enumerate(panels):
            img, _ = _fit(image, cell)
            x0, y0 = j * pitch_x, i * pitch_y + TITLE_PX
            mosaic[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
            titles.append((x0, y0, title))
    fig, _ = _mosaic_figure(mosaic, titles, f"{pairs[0].category}: the source warped onto the target by each "
                                            f"method's dense flow (black: matched outside the source)")
    _save(fig, path)


__all__ = ["pairs_to_draw", "draw_category", "draw_warps", "safe_name", "CORRECT", "WRONG"]
