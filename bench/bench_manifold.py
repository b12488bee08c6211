"""Benchmark: time and peak memory of ``run_manifold`` (Gaur et al. Algorithm 1) per category size.

Every size runs in a fresh Python subprocess (``--worker``), so its peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that size alone. The isolated graph-cut
workers are separate, small processes (interpreter + numpy + the int32 costs of one
iteration, n_img * h * w * k * 4 bytes) and are not included: ``RUSAGE_CHILDREN`` would
report the parent's RSS at fork time, not theirs. ``tracemalloc`` is not used: it slows numpy-heavy code down and misses
BLAS/LAPACK buffers. The peak RSS includes the synthetic features (n_img x h x w x C float32)
and the interpreter with numpy/scipy/scikit-learn (about 150 MB).

Synthetic category ("random but structured"): ``--n-parts`` non-negative, sparse part
prototypes; each image places the parts at a jittered, shifted and scaled copy of one template
layout (nearest-part-centre tessellation of the grid, so parts are spatially coherent), scales
each part's prototype per image, adds Gaussian noise and applies a ReLU.

Usage:
    python bench/bench_manifold.py --n-images 10 25 --grid 44 44 --channels 320 [--workers 2]
Writes a Markdown table to stdout and a CSV to bench/results/manifold.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _timing import markdown_table  # shared helpers (bench/_timing.py)

DEFAULT_N_IMAGES = (10, 25, 50, 100)
# Gaur et al. Sec. 1: VGG16 conv feature maps are 44 x 44.
DEFAULT_GRID = (44, 44)
DEFAULT_CHANNELS = 320
# Gaur et al. Sec. 6: 15 expected semantic object parts.
DEFAULT_N_PARTS = 15
# Gaussian noise added to every feature before the ReLU (makes raw clusters overlap).
NOISE = 0.5
CSV_PATH = Path(__file__).resolve().parent / "results" / "manifold.csv"
FIELDS = [
    "n_images",
    "h",
    "w",
    "channels",
    "n_vectors",
    "n_iter",
    "converged",
    "seconds_total",
    "seconds_per_iter",
    "seconds_init",
    "peak_rss_mb",
    "kfd_solver",
    "n_anchors",
    "max_hac_samples",
    "workers",
    "status",
]


def make_features(n_img: int, h: int, w: int, C: int, n_parts: int, seed: int) -> np.ndarray:
    """Synthetic category features, (n_img, h, w, C) float32 (see module docstring)."""
    rng = np.random.default_rng(seed)
    # Parts share an "object" activation pattern and differ in a sparse part-specific one.
    shared = np.abs(rng.normal(0.0, 1.0, C)) * (rng.random(C) < 0.2)
    protos = shared + np.abs(rng.normal(0.0, 1.0, (n_parts, C))) * (rng.random((n_parts, C)) < 0.05)
    template = rng.random((n_parts, 2)) * 0.8 + 0.1  # part centres in [0.1, 0.9]^2 (row, col)
    rows, cols = np.mgrid[0:h, 0:w]
    grid = np.stack([rows.ravel() / h, cols.ravel() / w], axis=1)
    out = np.empty((n_img, h, w, C), dtype=np.float32)
    for i in range(n_img):
        scale = rng.uniform(0.8, 1.2)
        shift = rng.uniform(-0.1, 0.1, 2)
        centres = (template - 0.5) * scale + 0.5 + shift + rng.normal(0.0, 0.03, template.shape)
        part = np.argmin(((grid[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        gain = rng.uniform(0.5, 1.5, n_parts)
        f = protos[part] * gain[part, None] + rng.normal(0.0, NOISE, (h * w, C))
        out[i] = np.maximum(f, 0.0).reshape(h, w, C)
    return out


def run_one(args: argparse.Namespace) -> dict:
    """Worker: generate one category, run Algorithm 1, report time and peak memory."""
    from pipeline_lib.manifold import ManifoldConfig, run_manifold

    n_img, (h, w), C = args.worker, args.grid, args.channels
    feats = make_features(n_img, h, w, C, args.n_parts, args.seed)
    cfg = ManifoldConfig(max_iter=args.max_iter, seed=args.seed)
    t0 = time.perf_counter()
    res = run_manifold(feats, cfg, workers=args.workers)
    total = time.perf_counter() - t0
    kib_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "n_images": n_img,
        "h": h,
        "w": w,
        "channels": C,
        "n_vectors": n_img * h * w,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "seconds_total": round(total, 2),
        "seconds_per_iter": round(float(np.mean(res.iteration_seconds[1:])), 2),
        "seconds_init": round(float(res.iteration_seconds[0]), 2),
        "peak_rss_mb": round(kib_self / 1024, 1),
        "kfd_solver": res.kfd.solver_,
        "n_anchors": cfg.n_anchors,
        "max_hac_samples": cfg.max_hac_samples,
        "workers": args.workers,
        "status": "ok",
    }


def markdown(rows: list[dict]) -> str:
    cols = ["n_images", "n_vectors", "n_iter", "converged", "seconds_total", "seconds_per_iter",
            "seconds_init", "peak_rss_mb", "kfd_solver", "workers", "status"]
    return markdown_table(rows, cols)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-images", type=int, nargs="+", default=list(DEFAULT_N_IMAGES))
    p.add_argument("--grid", type=int, nargs=2, default=list(DEFAULT_GRID), metavar=("H", "W"))
    p.add_argument("--channels", type=int, default=DEFAULT_CHANNELS)
    p.add_argument("--n-parts", type=int, default=DEFAULT_N_PARTS)
    p.add_argument("--max-iter", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="graph-cut worker processes at once (the job's threads)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per size")
    p.add_argument("--output", type=Path, default=CSV_PATH)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_one(args)), flush=True)
        return 0

    rows = []
    for n_img in args.n_images:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n_img),
               "--grid", *map(str, args.grid), "--channels", str(args.channels),
               "--n-parts", str(args.n_parts), "--max-iter", str(args.max_iter), "--seed", str(args.seed),
               "--workers", str(args.workers)]
        base = {"n_images": n_img, "h": args.grid[0], "w": args.grid[1], "channels": args.channels,
                "n_vectors": n_img * args.grid[0] * args.grid[1]}
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=os.environ.copy())
        except subprocess.TimeoutExpired:
            rows.append({**base, "status": f"timeout>{args.timeout:.0f}s"})
        else:
            if done.returncode == 0:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            else:
                tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                rows.append({**base, "status": f"failed rc={done.returncode}: {tail[0][:80]}"})
        print(f"done {n_img} images: {rows[-1].get('status')}", file=sys.stderr, flush=True)

    print(markdown(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in FIELDS})
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
