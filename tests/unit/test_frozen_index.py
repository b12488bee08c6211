"""The frozen index: the index stage's validated dataset is what every later stage reads, not the live files."""

import csv
import json

import numpy as np
import pytest

from pipeline_lib.config import validate_config
from pipeline_lib.datasets import DatasetIndex, ImageRecord, Pair, SkippedPair, open_dataset
from pipeline_lib.datasets.frozen import freeze, thaw
from pipeline_lib.datasets.stage import index_dataset
from pipeline_lib.stage_io import dataset_files, frozen_index_path, load_dataset, load_images
from tests.unit.test_datasets import damage_pixels, make_willow


def assert_same_index(a: DatasetIndex, b: DatasetIndex):
    assert (a.name, a.kind, a.split_dropped, a.flow_store) == (b.name, b.kind, b.split_dropped, b.flow_store)
    assert a.images == b.images and list(a.images) == list(b.images)
    assert a.skipped == b.skipped
    assert len(a.pairs) == len(b.pairs)
    for p, q in zip(a.pairs, b.pairs):
        assert (p.pair_id, p.category, p.src, p.trg, p.split) == (q.pair_id, q.category, q.src, q.trg, q.split)
        for name in ("src_kps", "trg_kps", "valid", "src_box", "trg_box"):
            x, y = getattr(p, name), getattr(q, name)
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype and x.shape == y.shape
                np.testing.assert_array_equal(x, y)  # NaN where NaN, every other value bit-equal


def test_freeze_and_thaw_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    kps = rng.uniform(0, 100, (5, 2)) / 3.0  # doubles with full mantissas
    kps[3] = np.nan
    images = {"a": ImageRecord("a", tmp_path / "a.png", "c", 40, 60, tmp_path / "a_mask.png"),
              "b": ImageRecord("b", tmp_path / "b.png", "c", 41, 61)}
    pairs = [Pair("a-b", "c", "a", "b", kps, kps[::-1].copy(), np.array([1, 1, 1, 0, 1], bool), split="train",
                  src_box=np.array([0.5, 1.0, 30.25, 20.0]), trg_box=None),
             Pair("b-a", "c", "b", "a", kps.astype(np.float32), kps.astype(np.float32), np.ones(5, bool))]
    index = DatasetIndex("d", "pf-willow", images, pairs, [SkippedPair("x.csv row 3", "NaN keypoint", "c")],
                         {"c": 2}, tmp_path / "flow.zarr")
    back = thaw(json.loads(json.dumps(freeze(index))))
    assert_same_index(index, back)


def test_an_older_record_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="forcerun index_dataset"):
        thaw({"format": 0}, "x.json")


def willow_cfg(tmp_path, root, **dataset):
    return validate_config({"results_dir": str(tmp_path / "results"),
                            "dataset": {"kind": "pf-willow", "name": "w", "root": str(root), **dataset}})


def run_index(cfg):
    out = frozen_index_path(cfg).parent
    index_dataset(cfg, out / "pairs.csv", out / "meta.json", files=dataset_files(cfg), frozen=out / "dataset.json")


def drop_csv_rows(root, keep):
    path = root / "test_pairs.csv"
    rows = list(csv.reader(path.open()))
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows[:1] + rows[1:keep + 1])


def test_later_stages_read_the_frozen_index_not_the_live_files(tmp_path):
    """Pair rows deleted after the index stage ran (e.g. while a run is under way) change nothing a later stage
    reads; the live files are read again when the frozen index is for another dataset config, or is absent."""
    root = make_willow(tmp_path / "data")
    cfg = willow_cfg(tmp_path, root, split={"mode": "image_disjoint", "train_fraction": 0.34})
    live = load_dataset(cfg)
    run_index(cfg)
    assert frozen_index_path(cfg).is_file()
    drop_csv_rows(root, keep=3)
    assert_same_index(load_dataset(cfg), live)
    # another view of the same dataset (split mode) reads the same frozen pairs
    assert len(load_dataset(willow_cfg(tmp_path, root)).pairs) == 12
    # another dataset config (a category subset) is not what was frozen: read live
    sub = willow_cfg(tmp_path, root, categories=["car(G)"])
    assert len(load_dataset(sub).pairs) == 3
    # feature extraction reads the images' live list (it reruns on the images' content, not on the index)
    assert len(load_images(cfg).pairs) == 3
    frozen_index_path(cfg).unlink()
    assert len(load_dataset(cfg).pairs) < len(live.pairs)


def test_the_frozen_index_keeps_what_skip_mode_validated(tmp_path):
    """In skip mode the index stage decodes every image once; a later stage reads the verdict from the frozen
    index instead of decoding again (an image damaged after the index ran is not looked at)."""
    root = make_willow(tmp_path / "data")
    damage_pixels(root / "car(G)" / "img1.png")
    cfg = willow_cfg(tmp_path, root, on_bad_pair="skip")
    run_index(cfg)
    damage_pixels(root / "duck(S)" / "img0.png")
    index = load_dataset(cfg)
    assert len(index.pairs) == 8 and len(index.skipped) == 4
    assert all("car(G)/img1.png" in s.reason for s in index.skipped)
    assert len(open_dataset("pf-willow", root, on_bad_pair="skip").pairs) == 4  # the live files now lose more


def test_a_folds_index_reads_the_frozen_dataset(tmp_path):
    root = make_willow(tmp_path / "data", classes=("a", "b", "c"))
    cfg = willow_cfg(tmp_path, root, split={"mode": "category_folds", "folds": 3})
    run_index(cfg)
    drop_csv_rows(root, keep=1)
    fold = json.loads(json.dumps(cfg))
    fold["dataset"]["split"]["fold"] = 0
    out = tmp_path / "fold0"
    index_dataset(fold, out / "pairs.csv", out / "meta.json")
    assert json.loads((out / "meta.json").read_text())["n_pairs"] == 18
    assert not (out / "dataset.json").exists()


def test_a_new_record_layout_reruns_the_index_rule(repo):
    """The index rule's params carry the record's FORMAT: code that reads a new layout rewrites the frozen index
    before any stage reads it (instead of every stage stopping on the old one)."""
    rule = (repo / "workflow" / "rules" / "data.smk").read_text()
    assert "index_format=FROZEN_FORMAT" in rule.split("rule index_dataset:")[1].split("\nrule ")[0]
