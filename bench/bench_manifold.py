"""Benchmark: time and peak memory of ``run_manifold`` (Gaur et al. Algorithm 1) per category size.

Every size runs in a fresh Python subprocess (``--worker``), so its peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that size alone. The worker writes the synthetic
features image by image into a Zarr array on disk (as the workflow's feature store holds them) and
runs Algorithm 1 on that array, reading ``--chunk-images`` images per block; ``none`` = the
baseline: the features loaded into memory and every pass over all of them at once (the
implementation before blocks). With both, each size also reports the fraction of cells whose final
label agrees between the two runs (same seed; ``agreement``). The isolated graph-cut
workers are separate, small processes (interpreter + numpy + the int32 costs of one
iteration, n_img * h * w * k * 4 bytes) and are not included: ``RUSAGE_CHILDREN`` would
report the parent's RSS at fork time, not theirs. ``tracemalloc`` is not used: it slows numpy-heavy code down and misses
BLAS/LAPACK buffers. The peak RSS includes the synthetic features (n_img x h x w x C float32)
and the interpreter with numpy/scipy/scikit-learn (about 150 MB); with blocks it includes one
block of features, not all of them.

Synthetic category ("random but structured"): ``--n-parts`` non-negative, sparse part
prototypes; each image places the parts at a jittered, shifted and scaled copy of one template
layout (nearest-part-centre tessellation of the grid, so parts are spatially coherent), scales
each part's prototype per image, adds Gaussian noise and applies a ReLU.

Usage:
    python bench/bench_manifold.py --n-images 10 25 --grid 44 44 --channels 320 [--workers 2]
        [--chunk-images 64 none]
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
import tempfile
import time
from pathlib import Path
from typing import Iterator

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
    "chunk_images",
    "agreement",
    "status",
]


def make_features(n_img: int, h: int, w: int, C: int, n_parts: int, seed: int) -> Iterator[np.ndarray]:
    """Synthetic category features, one (h, w, C) float32 image at a time (see module docstring)."""
    rng = np.random.default_rng(seed)
    # Parts share an "object" activation pattern and differ in a sparse part-specific one.
    shared = np.abs(rng.normal(0.0, 1.0, C)) * (rng.random(C) < 0.2)
    protos = shared + np.abs(rng.normal(0.0, 1.0, (n_parts, C))) * (rng.random((n_parts, C)) < 0.05)
    template = rng.random((n_parts, 2)) * 0.8 + 0.1  # part centres in [0.1, 0.9]^2 (row, col)
    rows, cols = np.mgrid[0:h, 0:w]
    grid = np.stack([rows.ravel() / h, cols.ravel() / w], axis=1)
    for _ in range(n_img):
        scale = rng.uniform(0.8, 1.2)
        shift = rng.uniform(-0.1, 0.1, 2)
        centres = (template - 0.5) * scale + 0.5 + shift + rng.normal(0.0, 0.03, template.shape)
        part = np.argmin(((grid[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        gain = rng.uniform(0.5, 1.5, n_parts)
        f = protos[part] * gain[part, None] + rng.normal(0.0, NOISE, (h * w, C))
        yield np.maximum(f, 0.0).reshape(h, w, C).astype(np.float32)


def write_features(path: Path, n_img: int, h: int, w: int, C: int, n_parts: int, seed: int):
    """The synthetic category as a Zarr array on disk, one chunk per image (written image by image)."""
    import zarr

    z = zarr.create_array(str(path), shape=(n_img, h, w, C), chunks=(1, h, w, C), dtype="float32")
    for i, image in enumerate(make_features(n_img, h, w, C, n_parts, seed)):
        z[i] = image
    return z


def run_one(args: argparse.Namespace) -> dict:
    """Worker: write one category to disk, run Algorithm 1 on it, report time and peak memory."""
    from pipeline_lib.manifold import ManifoldConfig, run_manifold

    n_img, (h, w), C = args.worker, args.grid, args.channels
    chunk = None if args.chunk_images[0] == "none" else int(args.chunk_images[0])
    with tempfile.TemporaryDirectory() as tmp:
        feats = write_features(Path(tmp) / "features.zarr", n_img, h, w, C, args.n_parts, args.seed)
        if chunk is None:
            feats = feats[:]  # the baseline: every feature in memory
        cfg = ManifoldConfig(max_iter=args.max_iter, seed=args.seed, chunk_images=chunk)
        t0 = time.perf_counter()
        res = run_manifold(feats, cfg, workers=args.workers)
        total = time.perf_counter() - t0
    kib_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if args.labels_out:
        np.save(args.labels_out, res.labels)
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
        "chunk_images": "none" if chunk is None else chunk,
        "status": "ok",
    }


def agreement(rows: list[dict], labels: dict[str, Path]) -> None:
    """Fill ``agreement``: each run's final labels against the first run's (ids matched one-to-one)."""
    from pipeline_lib.manifold import fraction_changed

    found = {r["chunk_images"]: labels[str(r["chunk_images"])] for r in rows
             if r.get("status") == "ok" and labels[str(r["chunk_images"])].is_file()}
    if len(found) < 2 or str(rows[0]["chunk_images"]) not in map(str, found):
        return
    ref = np.load(labels[str(rows[0]["chunk_images"])])
    for r in rows[1:]:
        if r["chunk_images"] in found:
            r["agreement"] = round(1.0 - fraction_changed(ref, np.load(found[r["chunk_images"]])), 6)


def markdown(rows: list[dict]) -> str:
    cols = ["n_images", "n_vectors", "n_iter", "converged", "seconds_total", "seconds_per_iter",
            "seconds_init", "peak_rss_mb", "kfd_solver", "workers", "chunk_images", "agreement", "status"]
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
    p.add_argument("--chunk-images", nargs="+", default=["64"],
                   help="images per block of Algorithm 1, one run each ('none' = all at once, in memory)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per size")
    p.add_argument("--output", type=Path, default=CSV_PATH)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--labels-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_one(args)), flush=True)
        return 0

    for value in args.chunk_images:
        if value != "none" and not (value.isdigit() and int(value) >= 1):
            p.error(f"--chunk-images: {value!r} is neither a positive integer nor 'none'")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_img in args.n_images:
            labels = {}
            for chunk in args.chunk_images:
                labels[chunk] = Path(tmp) / f"labels_{n_img}_{chunk}.npy"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n_img),
                       "--grid", *map(str, args.grid), "--channels", str(args.channels),
                       "--n-parts", str(args.n_parts), "--max-iter", str(args.max_iter), "--seed", str(args.seed),
                       "--workers", str(args.workers), "--chunk-images", chunk, "--labels-out", str(labels[chunk])]
                base = {"n_images": n_img, "h": args.grid[0], "w": args.grid[1], "channels": args.channels,
                        "n_vectors": n_img * args.grid[0] * args.grid[1], "chunk_images": chunk}
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                          env=os.environ.copy())
                except subprocess.TimeoutExpired:
                    rows.append({**base, "status": f"timeout>{args.timeout:.0f}s"})
                else:
                    if done.returncode == 0:
                        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    else:
                        tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                        rows.append({**base, "status": f"failed rc={done.returncode}: {tail[0][:80]}"})
                print(f"done {n_img} images, chunk_images {chunk}: {rows[-1].get('status')}", file=sys.stderr,
                      flush=True)
            agreement(rows[-len(args.chunk_images):], labels)

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
