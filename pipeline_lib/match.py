"""Match two images of the user's: ``python -m pipeline_lib match SOURCE TARGET``.

The two images become a two-image dataset and go through the same code as the workflow's pairs: features
from the backbone registry with the run's preprocessing (:func:`pipeline_lib.features.stage.extract`), the
method's predictor from the registry, with the layers its run searched (``<run>/<backbone>/hpf/search.json``)
or the weights its run trained (``<run>/<backbone>/<method>/model.pt``), and the per-pair loop of
:func:`pipeline_lib.pair_prediction.predict_pairs`. Source points: given (``x,y;x,y`` or a CSV with ``x``
and ``y`` columns, original pixels) or a grid over the source image. Writes ``matches.csv``, ``match.png``
(the two images side by side, each match a line coloured by where it starts) and ``meta.json``.
"""

from __future__ import annotations

import csv
import io
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
from .features.stage import extract
from .methods.registry import (ENCODER, METHODS, SEARCH, TRAINED, match_factory, method as registry_entry,
                               predictor_factory)
from .pair_prediction import on_images, predict_pairs
from .provenance import provenance

DEFAULT_METHOD = "hpf"  # the best training-free method of every result table
DEFAULT_GRID = 10  # points per side of the default source grid
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


def matchable_methods() -> list[str]:
    """The registry's methods ``match`` runs: feature-based ones on the backbone's features, trained ones with a
    ``match`` factory."""
    return [m.name for m in METHODS if ENCODER not in m.needs and (TRAINED not in m.needs or m.match)]


def match_images(cfg: Mapping, source: str | Path, target: str | Path, method: str = DEFAULT_METHOD,
                 points: np.ndarray | None = None, grid: int = DEFAULT_GRID, run_dir: str | Path | None = None,
                 backbone: str | None = None, out_dir: str | Path | None = None,
                 configfile: str = "config/config.yaml") -> MatchResult:
    """Match ``points`` (default: a grid) of ``source`` into ``target`` with ``method`` of a finished run."""
    entry = registry_entry(method)
    trained_factory = match_factory(method) if TRAINED in entry.needs else None
    if ENCODER in entry.needs or (TRAINED in entry.needs and trained_factory is None):
        raise MatchError(f"match does not run '{method}' yet; it runs {', '.join(matchable_methods())}.")
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
    pair = Pair("match", "match", SOURCE, TARGET, pts, np.full_like(pts, np.nan), np.ones(len(pts), dtype=bool))
    if trained_factory is not None:
        weights = _require(run / backbone / method / "model.pt", "trained weights", f"train_{method}", configfile)
        artifacts = {"weights": str(weights), "weights_sha256": checkpoint_key(weights)}
        fn = on_images(trained_factory(cfg, backbone, weights, device), index.images)
        preds, _ = predict_pairs(fn, [pair], progress=False)
    else:
        search_json = None
        artifacts = {}
        if SEARCH in entry.needs:
            search_json = _require(run / backbone / "hpf" / "search.json", "searched layers", "search_hyperpixel_layers",
                                   configfile)
            artifacts = {"search": str(search_json), "search_sha256": checkpoint_key(search_json)}
        store_path = out / "features.zarr"
        extract(cfg, backbone, store_path, index=index)
        store = FeatureStore(store_path)
        predictor, params = predictor_factory(method)(entry.variant, cfg, store, search_json, device)
        artifacts["params"] = params
        preds, _ = predict_pairs(predictor, [pair], frame=store, progress=False)
    trg_pts = preds["match"]
    _write_outputs(out, cfg, method, backbone, source, target, pts, trg_pts, artifacts, run)
    return MatchResult(pts, trg_pts, out, artifacts)


def _write_outputs(out: Path, cfg: Mapping, method: str, backbone: str, source, target, src_pts: np.ndarray,
                   trg_pts: np.ndarray, artifacts: dict, run: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(("point", "src_x", "src_y", "trg_x", "trg_y"))
    w.writerows((i, f"{a[0]:.3f}", f"{a[1]:.3f}", f"{b[0]:.3f}", f"{b[1]:.3f}") for i, (a, b) in enumerate(zip(src_pts, trg_pts)))
    write_text(out / "matches.csv", buf.getvalue())
    draw_matches(load_rgb(Path(source)), load_rgb(Path(target)), src_pts, trg_pts, out / "match.png",
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
           "draw_matches", "DEFAULT_METHOD"]
