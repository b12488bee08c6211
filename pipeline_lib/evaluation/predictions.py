"""Predictions of any method: one CSV row per transferred keypoint, in original target pixels."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from ..atomic import write_text
from ..datasets.base import Pair

HEADER = ("pair_id", "kp", "pred_x", "pred_y")


def oriented(pairs: Iterable[Pair], direction: str) -> list[Pair]:
    """Pairs as a method sees them: ``target_to_source`` swaps the roles of the two images."""
    if direction == "source_to_target":
        return list(pairs)
    if direction == "target_to_source":
        return [replace(p, pair_id=f"{p.pair_id}[swapped]", src=p.trg, trg=p.src, src_kps=p.trg_kps,
                        trg_kps=p.src_kps, src_box=p.trg_box, trg_box=p.src_box) for p in pairs]
    raise ValueError(f"unknown direction '{direction}'; use source_to_target or target_to_source.")


def write_predictions(path: str | Path, preds: dict[str, np.ndarray]) -> None:
    """``preds``: pair_id -> (K, 2) predicted target keypoints (NaN where the keypoint is invalid)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    for pair_id, kps in preds.items():
        for k, (x, y) in enumerate(np.asarray(kps, dtype=np.float64)):
            w.writerow((pair_id, k, f"{x:.4f}", f"{y:.4f}"))
    write_text(path, buf.getvalue())


def read_predictions(path: str | Path) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["pair_id"], []).append((int(row["kp"]), float(row["pred_x"]), float(row["pred_y"])))
    return {k: np.array([(x, y) for _, x, y in sorted(v)]) for k, v in out.items()}
