"""Micro-benchmark: per-pair time and memory of every matcher option (``kernels.dense_match.MATCHERS``:
nearest neighbours, regularized Hough matching, optimal transport alone and with the Hough prior) against NN.

Every matcher runs on the SAME random hyperpixel features in one run. RHM and OT+RHM use a Hough space
built once per resolution (as in the pipeline); its build time and size are reported separately. Reports
the median ms/pair, the ratio to NN's and peak extra memory per call (one row per size and matcher):

- CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the call.
- CPU (Linux): growth of the process peak RSS across one call. The peak RSS (``VmHWM`` in
  ``/proc/self/status``, the quantity ``getrusage().ru_maxrss`` reports) is reset before each
  call by writing ``5`` to ``/proc/self/clear_refs`` (so earlier, larger allocations such as
  the Hough-space build do not mask it), after ``malloc_trim(0)`` hands freed heap back to the
  OS (otherwise re-used freed memory does not show up as growth). RSS includes allocator
  slack, so treat it as approximate. ``tracemalloc`` is not used: it does not see torch's CPU
  allocations. Off Linux the CPU column is ``nan``.

Usage:
    python bench/bench_matching.py --device auto --sizes 38x38:512 75x75:1536 --repeats 10
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline_lib.backbones import resolve_device
from pipeline_lib.hpf import assign, build_hough_space, nn_match, rhm_scores
from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.kernels.optimal_transport import OT_ITERATIONS, transport_similarity
from pipeline_lib.kernels.rhm import hough_regularize
from _timing import cpu_peak_mib, cuda_peak_mib, median_ms, MIB, save_rows, markdown_table  # shared helpers (bench/_timing.py)

# HPF resizes the longer image side to 300 px (Min et al. code, PF-PASCAL protocol); a 75x75
# base map is ResNet stride 4 on 300 px, a 38x38 map is stride 8.
IMAGE_SIDE_PX = 300
DEFAULT_SIZES = ("38x38:512", "38x38:1536", "75x75:512", "75x75:1536")


@dataclass
class Row:
    device: str
    map_hw: str
    channels: int
    n_hyperpixels: int
    matcher: str
    ms: float
    over_nn: float
    peak_mib: float
    hough_build_ms: float
    hough_space_mib: float
    memory_method: str
    repeats: int
    threads: int
    torch_version: str


def parse_size(token: str) -> tuple[int, int, int]:
    """``"38x38:512" -> (38, 38, 512)``."""
    try:
        hw, channels = token.split(":")
        h, w = hw.lower().split("x")
        return int(h), int(w), int(channels)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size {token!r} is not of the form HxW:C, e.g. 38x38:512") from err


def make_inputs(h: int, w: int, channels: int, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(h * w, channels, generator=gen).to(device)
    trg = torch.randn(h * w, channels, generator=gen).to(device)
    pos = cell_centres(h, w, (IMAGE_SIDE_PX, IMAGE_SIDE_PX), device=device)
    return src, trg, pos


def matchers(space, ot_iterations: int = OT_ITERATIONS):
    """Every matcher option of ``kernels.dense_match`` on all source cells (best target per source)."""
    return {
        "nn": lambda s, t: nn_match(s, t),
        "rhm": lambda s, t: assign(rhm_scores(s, t, space)),
        "ot": lambda s, t: assign(transport_similarity(s, t, iterations=ot_iterations)),
        "ot_rhm": lambda s, t: assign(hough_regularize(transport_similarity(s, t, iterations=ot_iterations), space)),
    }


def bench_one(h, w, channels, device, repeats, warmup, seed, ot_iterations) -> list[Row]:
    src, trg, pos = make_inputs(h, w, channels, device, seed)
    image_size = (IMAGE_SIDE_PX, IMAGE_SIDE_PX)
    build_ms = median_ms(build_hough_space, (pos, pos, image_size), device, repeats, warmup)
    space = build_hough_space(pos, pos, image_size)
    fns = matchers(space, ot_iterations)
    ms = {name: median_ms(fn, (src, trg), device, repeats, warmup) for name, fn in fns.items()}
    if device.type == "cuda":
        peak = {name: cuda_peak_mib(fn, (src, trg), device) for name, fn in fns.items()}
        method = "cuda.max_memory_allocated - allocated_before"
    else:
        peak = {name: cpu_peak_mib(fn, (src, trg)) for name, fn in fns.items()}
        method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS before"
    space_mib = round(space.bin_ids.numel() * space.bin_ids.element_size() / MIB, 1)
    return [Row(device=str(device), map_hw=f"{h}x{w}", channels=channels, n_hyperpixels=h * w, matcher=name,
                ms=round(ms[name], 3), over_nn=round(ms[name] / ms["nn"], 2), peak_mib=round(peak[name], 1),
                hough_build_ms=round(build_ms, 3) if "rhm" in name else float("nan"),
                hough_space_mib=space_mib if "rhm" in name else float("nan"), memory_method=method, repeats=repeats,
                threads=torch.get_num_threads(), torch_version=torch.__version__) for name in fns]


def markdown(rows: list[Row]) -> str:
    cols = ["device", "map_hw", "channels", "matcher", "ms", "over_nn", "peak_mib", "hough_build_ms", "hough_space_mib"]
    return markdown_table(rows, cols)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                        help="base-map sizes as HxW:C (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per matcher and size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ot-iterations", type=int, default=OT_ITERATIONS, help="Sinkhorn iterations (hpf.ot_iterations)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/matching.csv"))
    args = parser.parse_args(argv)

    device = resolve_device(args.device)  # 'auto' = CUDA when present; clear error for missing CUDA

    rows = [r for h, w, c in args.sizes
            for r in bench_one(h, w, c, device, args.repeats, args.warmup, args.seed, args.ot_iterations)]
    print(markdown(rows))
    print(f"\nmemory: {rows[0].memory_method}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    save_rows(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
