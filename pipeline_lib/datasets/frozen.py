"""A validated dataset index as plain JSON-able data and back: what the index stage freezes and every later
stage reads instead of the live annotation files (so a stage never sees pairs its index did not list).

Arrays keep their dtype and shape; float64 values round-trip exactly (JSON writes the shortest repr that
reads back to the same double; NaN is written as ``NaN``, which :mod:`json` reads back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .base import DatasetIndex, ImageRecord, Pair, SkippedPair

# Bumped when the record's layout changes (2: per-category split_dropped). The index rule's params carry it, so
# a new layout reruns the index by itself; an older record read outside the workflow is refused with the fix.
FORMAT = 2


def _array(a: np.ndarray | None) -> dict | None:
    if a is None:
        return None
    a = np.asarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.ravel().tolist()}


def _unarray(d: Mapping | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.asarray(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])


def _path(p: Path | None) -> str | None:
    return None if p is None else str(p)


def freeze(index: DatasetIndex) -> dict[str, Any]:
    """``index`` as plain data (lists, dicts, strings, numbers), for ``json.dumps``."""
    return {
        "format": FORMAT,
        "name": index.name,
        "kind": index.kind,
        "images": [{"image_id": r.image_id, "path": str(r.path), "category": r.category, "height": r.height,
                    "width": r.width, "mask_path": _path(r.mask_path)} for r in index.images.values()],
        "pairs": [{"pair_id": p.pair_id, "category": p.category, "src": p.src, "trg": p.trg, "split": p.split,
                   "src_kps": _array(p.src_kps), "trg_kps": _array(p.trg_kps), "valid": _array(p.valid),
                   "src_box": _array(p.src_box), "trg_box": _array(p.trg_box)} for p in index.pairs],
        "skipped": [list(s) for s in index.skipped],
        "split_dropped": dict(index.split_dropped),
        "flow_store": _path(index.flow_store),
    }


def thaw(record: Mapping[str, Any], source: str = "frozen index") -> DatasetIndex:
    """The :class:`DatasetIndex` of :func:`freeze`'s ``record`` (``source`` names it in the error)."""
    if record.get("format") != FORMAT:
        raise ValueError(f"{source} has format {record.get('format')!r}, this version reads {FORMAT}; rerun the "
                         f"index stage (snakemake --forcerun index_dataset).")
    images = {}
    for r in record["images"]:
        images[r["image_id"]] = ImageRecord(r["image_id"], Path(r["path"]), r["category"], int(r["height"]),
                                            int(r["width"]), None if r["mask_path"] is None else Path(r["mask_path"]))
    pairs = [Pair(p["pair_id"], p["category"], p["src"], p["trg"], _unarray(p["src_kps"]), _unarray(p["trg_kps"]),
                  _unarray(p["valid"]), split=p["split"], src_box=_unarray(p["src_box"]),
                  trg_box=_unarray(p["trg_box"])) for p in record["pairs"]]
    return DatasetIndex(name=record["name"], kind=record["kind"], images=images, pairs=pairs,
                        skipped=[SkippedPair(*s) for s in record["skipped"]],
                        split_dropped={c: int(n) for c, n in record["split_dropped"].items()},
                        flow_store=None if record["flow_store"] is None else Path(record["flow_store"]))


__all__ = ["FORMAT", "freeze", "thaw"]
