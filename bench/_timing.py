"""Timing and peak-memory helpers shared by the bench/ scripts (run as `python bench/<script>.py`).

Speed: median wall time of repeated calls, with CUDA synchronisation. Memory: peak CUDA allocation
above the baseline, or on CPU the peak-RSS growth of one call (Linux: VmHWM reset through
/proc/self/clear_refs after malloc_trim; nan elsewhere; tracemalloc cannot see torch's allocations).
"""

from __future__ import annotations

import csv
import ctypes
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

MIB = 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, args, device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(*args)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def cuda_peak_mib(fn, args, device: torch.device) -> float:
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn(*args)
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / MIB


def _proc_status_mib(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise OSError(f"{key} not in /proc/self/status")


def cpu_peak_mib(fn, args) -> float:
    """Peak RSS growth over one call (Linux only; nan elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so reuse is not invisible
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _proc_status_mib("VmRSS")
    except (OSError, AttributeError):
        return float("nan")
    fn(*args)
    return _proc_status_mib("VmHWM") - before


def save_rows(path: Path, rows) -> None:
    """Write benchmark rows (dataclasses) as CSV, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def markdown_table(rows, cols) -> str:
    """A Markdown table of ``cols`` from benchmark rows (dataclasses or dicts; a missing key prints empty)."""
    def cell(r, c):
        return str(r.get(c, "") if isinstance(r, dict) else getattr(r, c))

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
