"""Match two images of the user's: ``python -m pipeline_lib match SOURCE TARGET``.

The two images become a two-image dataset and go through the same code as the workflow's pairs: features
from the backbone registry with the run's preprocessing (:func:`pipeline_lib.features.stage.extract`), the
method's predictor from the registry, with the layers its run searched (``<run>/<backbone>/hpf/search.json``)
or the weights its run trained (``<run>/<backbone>/<method>/model.pt``), and the per-pair loop of
:func:`pipeline_lib.pair_prediction.predict_pairs`. Source points: given (``x,y;x,y`` or a CSV with ``x``
and ``y`` columns, original pixels) or a grid over the source image. Writes ``matches.csv``, ``match.png``
(the two images side by side, each match a line coloured by where it starts), ``warp.png`` (the source
warped onto the target through the method's matches of the target's pixels back into the source, the same
for every method: for a flow method its dense flow, for a matcher its matches) and ``meta.json``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .atomic import atomic_path, write_text
from .backbones import checkpoint_key, resolve_device
from .datasets import DatasetIndex, ImageRecord, Pair, load_rgb
from .datasets.base import image_size
from .features import FeatureStore
from .features.stage import extract, extract_encoder
from .evaluation.summary import write_csv
from .kernels.image_warp import warp_grid, warp_source
from .methods.registry import ENCODER, SEARCH, match_factory, method as registry_entry, predictor_factory
from .pair_prediction import predict_pairs
from .provenance import provenance

DEFAULT_METHOD = "hpf"  # the best training-free method of every result table
DEFAULT_GRID = 10  # points per side of the default source grid
MATCH_COLUMNS = ("point", "src_x", "src_y", "trg_x", "trg_y")
DEFAULT_WARP_STEP = 4  # target pixels matched back into the source for warp.png, every this many px
SOURCE, TARGET = "match/source", "match/target"


class MatchError(ValueError):
    """``match`` cannot run as asked; the message says what to run or change."""


@dataclass(frozen=True)
class MatchResult:
    src_points: np.ndarray  # (K, 2) original source pixels
    trg_points: np.ndarray  # (K, 2) original target pixels
    out_dir: Path
    artifacts: dict  # what the prediction used (search record, weights), with their keys


def parse_points(spec: str) -> np.ndarray:
    """(K, 2) xy from ``"x,y;x,y"`` or from a CSV file with ``x`` and ``y`` columns."""
    path = Path(spec)
    if path.suffix.lower() == ".csv" or path.is_file():
        if not path.is_file():
            raise MatchError(f"points file not found: {path}; give a CSV with x and y columns or 'x,y;x,y'.")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"x", "y"} <= set(rows[0]):
            raise MatchError(f"{path}: needs a header with columns x and y (found {list(rows[0]) if rows else 'no rows'}).")
        pairs = [(r["x"], r["y"]) for r in rows]
        where = lambda i: f"{path}, row {i + 2}"  # noqa: E731 - header is row 1
    else:
        pairs = [tuple(p.split(",")) for p in spec.split(";") if p.strip()]
        where = lambda i: f"point {i + 1} of '{spec}'"  # noqa: E731
    out = []
    for i, p in enumerate(pairs):
        try:
            x, y = (float(v) for v in p)
        except (TypeError, ValueError):
            raise MatchError(f"{where(i)}: '{','.join(map(str, p))}' is not 'x,y' in pixels.") from None
        out.append((x, y))
    if not out:
        raise MatchError(f"no points in '{spec}'; give 'x,y;x,y' or a CSV with x and y columns.")
    return np.array(out, dtype=np.float64)


def grid_points(hw: tuple[int, int], n: int) -> np.ndarray:
    """(n*n, 2) xy at the centres of an n x n grid of cells over an (H, W) image, row by row."""
    if n < 1:
        raise MatchError(f"--grid must be >= 1, got {n}.")
    h, w = hw
    xs, ys = (np.arange(n) + 0.5) * w / n - 0.5, (np.arange(n) + 0.5) * h / n - 0.5
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


def two_image_index(source: str | Path, target: str | Path) -> DatasetIndex:
    """A dataset of the two images (checked as every dataset's images are)."""
    images = {}
    for key, path in ((SOURCE, Path(source)), (TARGET, Path(target))):
        if not path.is_file():
            raise MatchError(f"{key.split('/')[1]} image not found: {path}; give the path of an image file.")
        h, w = image_size(path)
        images[key] = ImageRecord(key, path, "match", h, w)
    return DatasetIndex(name="match", kind="match", images=images, pairs=[])


def run_dir_of(cfg: Mapping) -> Path:
    """``<results_dir>/<dataset>`` of the configured run; a fold's directory must be named (--run-dir)."""
    if cfg["dataset"].get("split", {}).get("mode") == "category_folds":
        raise MatchError(f"dataset {cfg['dataset']['name']} runs in category folds, each with its own searched layers and "
                         f"models: pass --run-dir {cfg['results_dir']}/{cfg['dataset']['name']}/folds/fold0 (or another fold).")
    return Path(cfg["results_dir"]) / cfg["dataset"]["name"]


def _require(path: Path, what: str, rule: str, configfile: str) -> Path:
    if not path.is_file():
        raise MatchError(f"{path} not found: match uses the {what} of a finished run. Make it with "
                         f"`snakemake --cores 2 --configfile {configfile} {path}` (rule {rule}), or point --run-dir "
                         f"(and --configfile) at a run that has it.")
    return path


def match_images(cfg: Mapping, source: str | Path, target: str | Path, method: str = DEFAULT_METHOD,
                 points: np.ndarray | None = None, grid: int = DEFAULT_GRID, run_dir: str | Path | None = None,
                 backbone: str | None = None, out_dir: str | Path | None = None,
                 configfile: str = "config/config.yaml", warp_step: int = DEFAULT_WARP_STEP) -> MatchResult:
    """Match ``points`` (default: a grid) of ``source`` into ``target`` with ``method`` of a finished run; with
    ``warp_step`` > 0 also match the target's pixels every ``warp_step`` px back into the source and draw the
    source warped onto the target (``warp.png``)."""
    try:
        entry = registry_entry(method)
    except ValueError as exc:
        raise MatchError(str(exc)) from None
    if warp_step < 0:
        raise MatchError(f"--warp-step must be >= 0 (0: no warp.png), got {warp_step}.")
    backbone = backbone or cfg["backbones"][0]
    run = Path(run_dir) if run_dir is not None else run_dir_of(cfg)
    index = two_image_index(source, target)
    src_hw = (index.images[SOURCE].height, index.images[SOURCE].width)
    pts = grid_points(src_hw, grid) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    outside = np.flatnonzero((pts[:, 0] < -0.5) | (pts[:, 1] < -0.5) | (pts[:, 0] > src_hw[1] - 0.5)
                             | (pts[:, 1] > src_hw[0] - 0.5))
    if len(outside):
        raise MatchError(f"source point {pts[outside[0]].tolist()} lies outside {source} ({src_hw[1]} x {src_hw[0]} px).")
    out = Path(out_dir) if out_dir is not None else (Path(cfg["results_dir"]) / "match"
                                                     / f"{Path(source).stem}__{Path(target).stem}" / method)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg["device"])
    trg_hw = (index.images[TARGET].height, index.images[TARGET].width)
    back = warp_grid(trg_hw, warp_step) if warp_step else np.zeros((0, 2))
    pairs = [Pair("match", "match", SOURCE, TARGET, pts, np.full_like(pts, np.nan), np.ones(len(pts), dtype=bool)),
             Pair("back", "match", TARGET, SOURCE, back, np.full_like(back, np.nan), np.ones(len(back), dtype=bool))]
    if entry.trained:
        weights = _require(run / backbone / method / "model.pt", "trained weights", f"train_{method}", configfile)
        artifacts = {"weights": str(weights), "weights_sha256": checkpoint_key(weights)}
        fn, frame = match_factory(method)(cfg, backbone, weights, device, index.images)
    else:
        search_json = None
        artifacts = {}
        chain = ENCODER in entry.needs  # gaur_hpf: the Siamese-trained encoder's features, its own layer search
        if SEARCH in entry.needs:
            search_json = _require(run / backbone / ("chain" if chain else "hpf") / "search.json", "searched layers",
                                   "search_gaur_layers" if chain else "search_hyperpixel_layers", configfile)
            artifacts = {"search": str(search_json), "search_sha256": checkpoint_key(search_json)}
        store_path = out / "features.zarr"
        if chain:
            encoder = _require(run / backbone / "siamese" / "model.pt", "Siamese-trained encoder", "train_siamese",
                               configfile)
            artifacts.update(encoder=str(encoder), encoder_sha256=extract_encoder(cfg, encoder, store_path, index=index))
        else:
            extract(cfg, backbone, store_path, index=index)
        frame = FeatureStore(store_path)
        fn, params = predictor_factory(method)(entry.variant, cfg, frame, search_json, device)
        artifacts["params"] = params
    preds, _ = predict_pairs(fn, pairs, frame=frame, progress=False)
    trg_pts = preds["match"]
    src_img, trg_img = load_rgb(Path(source)), load_rgb(Path(target))
    _write_outputs(out, cfg, method, backbone, source, target, src_img, trg_img, pts, trg_pts, artifacts, run)
    if warp_step:
        warped = warp_source(src_img, preds["back"], trg_hw, warp_step)
        draw_warp(trg_img, warped, out / "warp.png", f"{method}: {Path(source).name} warped onto {Path(target).name} "
                                                     f"by its target->source matches every {warp_step} px")
    return MatchResult(pts, trg_pts, out, artifacts)


def draw_warp(trg_img: np.ndarray, warped: np.ndarray, path: str | Path, title: str = "") -> None:
    """Target, the source warped onto it, and their half-and-half blend, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blend = ((trg_img.astype(np.float64) + warped) / 2).astype(np.uint8)
    h, w = trg_img.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3 * h / w + 0.4))
    for ax, img, name in zip(axes, (trg_img, warped, blend), ("target", "source warped onto the target", "blend")):
        ax.imshow(img)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _write_outputs(out: Path, cfg: Mapping, method: str, backbone: str, source, target, src_img: np.ndarray,
                   trg_img: np.ndarray, src_pts: np.ndarray, trg_pts: np.ndarray, artifacts: dict, run: Path) -> None:
    rows = [{"point": i, "src_x": f"{a[0]:.3f}", "src_y": f"{a[1]:.3f}", "trg_x": f"{b[0]:.3f}", "trg_y": f"{b[1]:.3f}"}
            for i, (a, b) in enumerate(zip(src_pts, trg_pts))]
    write_csv(out / "matches.csv", rows, MATCH_COLUMNS)
    draw_matches(src_img, trg_img, src_pts, trg_pts, out / "match.png",
                 f"{method} ({backbone}): {Path(source).name} -> {Path(target).name}")
    meta = {"method": method, "backbone": backbone, "source": str(source), "target": str(target), "run_dir": str(run),
            "n_points": int(len(src_pts)), "artifacts": artifacts, **provenance(cfg, seed=None)}
    write_text(out / "meta.json", json.dumps(meta, indent=2, default=str))


def draw_matches(src_img: np.ndarray, trg_img: np.ndarray, src_pts: np.ndarray, trg_pts: np.ndarray,
                 path: str | Path, title: str = "") -> None:
    """The two images side by side (same height), each match a line from its source to its target point,
    coloured by where it starts (hue: angle about the source centre; lightness: distance), so a smooth
    warp reads as a smooth colour field and a wrong match stands out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import hsv_to_rgb

    hs, ws = src_img.shape[:2]
    ht, wt = trg_img.shape[:2]
    scale = hs / ht  # the target drawn at the source's height
    centre = np.array([ws / 2, hs / 2])
    d = src_pts - centre
    hue = (np.arctan2(d[:, 1], d[:, 0]) / (2 * np.pi)) % 1.0
    sat = np.clip(np.hypot(*d.T) / (0.5 * np.hypot(ws, hs)), 0.25, 1.0)
    colours = hsv_to_rgb(np.stack([hue, sat, np.full_like(hue, 0.95)], 1))
    fig, ax = plt.subplots(figsize=(8, 8 * hs / (ws + wt * scale) + 0.4))
    ax.imshow(src_img, extent=(0, ws, hs, 0))
    ax.imshow(trg_img, extent=(ws, ws + wt * scale, hs, 0))
    ok = np.isfinite(trg_pts).all(1)
    for (sx, sy), (tx, ty), c in zip(src_pts[ok], trg_pts[ok], colours[ok]):
        ax.plot([sx, ws + tx * scale], [sy, ty * scale], "-", color=c, lw=0.8, alpha=0.8)
    ax.scatter(src_pts[:, 0], src_pts[:, 1], s=9, c=colours, edgecolors="k", linewidths=0.3, zorder=3)
    ax.scatter(ws + trg_pts[ok, 0] * scale, trg_pts[ok, 1] * scale, s=9, c=colours[ok], edgecolors="k",
               linewidths=0.3, zorder=3)
    ax.set_xlim(0, ws + wt * scale)
    ax.set_ylim(hs, 0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


__all__ = ["MatchError", "MatchResult", "parse_points", "grid_points", "two_image_index", "match_images",
           "draw_matches", "draw_warp", "DEFAULT_METHOD", "DEFAULT_WARP_STEP"]
