"""Workflow stages of the data: generate the embedded demo, and validate a dataset into its pair index."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from ..atomic import write_text
from ..evaluation.summary import write_csv
from ..settings import Settings, reads
from ..stage_io import load_dataset, manifest, read_sources, write_frozen_index, write_meta
from . import demo_synthesis

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("pair_id", "category", "split", "src", "trg", "n_keypoints")


@reads("seed", "demo")
def generate_demo(cfg: Mapping, out_dir: str | Path) -> None:
    s = Settings(cfg)
    demo_synthesis.generate(out_dir, s.demo, seed=s.seed)


@reads("seed", "dataset")
def index_dataset(cfg: Mapping, pairs_csv: str | Path, meta_json: str | Path, files=None,
                  frozen: str | Path | None = None) -> None:
    """Validate the dataset and write its pair list with splits (and the skipped pairs) for inspection;
    ``files`` (the dataset's, :func:`stage_io.dataset_files`) go into ``manifest.json`` beside them. Under
    the cross-dataset protocol an image in both datasets, by name or content, stops it here.

    ``frozen``: read the live files and freeze what was validated there (:func:`stage_io.write_frozen_index`),
    the index every later stage reads; without it (a category fold's index) the frozen index is read."""
    sources = read_sources(cfg, live=frozen is not None)
    index = load_dataset(cfg, check_content=True, sources=sources)
    if frozen is not None:
        write_frozen_index(frozen, cfg, sources)
    if files:
        write_text(Path(meta_json).with_name("manifest.json"), json.dumps(manifest(files), indent=1))
    rows = [{"pair_id": p.pair_id, "category": p.category, "split": p.split, "src": p.src, "trg": p.trg,
             "n_keypoints": int(p.valid.sum())} for p in index.pairs]
    write_csv(pairs_csv, rows, INDEX_COLUMNS)
    counts = {s: sum(1 for p in index.pairs if p.split == s) for s in ("train", "val", "test")}
    write_meta(meta_json, cfg, n_images=len(index.images), n_pairs=len(index.pairs), split_counts=counts,
               categories=index.categories(), n_split_dropped=index.n_split_dropped,
               split_dropped=index.split_dropped,
               skipped=[{"pair": s.where, "category": s.category, "reason": s.reason} for s in index.skipped])
    log.info("dataset %s: %d images, %d pairs %s, %d skipped", index.name, len(index.images), len(index.pairs),
             counts, len(index.skipped))
