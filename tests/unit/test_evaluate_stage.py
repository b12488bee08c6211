"""The evaluate stage: every method's predictions scored in one pass, per-method files and the table."""

import csv
import json

import numpy as np
import pytest

from pipeline_lib.evaluation import stage as evaluation_stage
from pipeline_lib.config import validate_config
from pipeline_lib.datasets import demo_synthesis
from pipeline_lib.evaluation.predictions import write_predictions
from pipeline_lib.stage_io import eval_pairs, load_dataset
from pipeline_lib.settings import DemoSection


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    cfg = validate_config({"results_dir": str(results), "dataset": {"name": "demo", "kind": "demo",
                                                                    "split": {"mode": "given"}},
                           "demo": {"photos": ["chelsea", "coffee"], "images_per_category": 3, "image_size": 96,
                                    "n_keypoints": 6},
                           "image": {"longer_side": 96}})
    demo_synthesis.generate(results / "demo" / "data", DemoSection(photos=("chelsea", "coffee"), images_per_category=3,
                                                         image_size=96, n_keypoints=6), seed=0)
    return cfg


def _write(tmp_path, name, preds):
    pred, meta = tmp_path / f"{name}.csv", tmp_path / f"{name}.json"
    write_predictions(pred, preds)
    meta.write_text(json.dumps({"ms_per_pair": 1.5}))
    return pred, meta


def test_every_method_scored_against_the_truth_and_side_by_side(demo_cfg, tmp_path):
    _, pairs = eval_pairs(demo_cfg, load_dataset(demo_cfg))
    exact = {p.pair_id: np.where(p.valid[:, None], p.trg_kps, np.nan) for p in pairs}
    far = {k: v + 1000.0 for k, v in exact.items()}  # every keypoint far outside any threshold
    methods = ["exact", "far"]
    inputs = [_write(tmp_path, m, preds) for m, preds in zip(methods, (exact, far))]
    per_pair = [tmp_path / m / "pck_per_pair.csv" for m in methods]
    summaries = [tmp_path / m / "pck_summary.csv" for m in methods]
    table = tmp_path / "pck_summary.csv"
    evaluation_stage.evaluate_and_aggregate(demo_cfg, methods, "efficientnet_lite0", [i[0] for i in inputs],
                                  [i[1] for i in inputs], per_pair, summaries, table, tmp_path / "t.md",
                                  tmp_path / "t.png", tmp_path / "t.html")
    rows = [r for r in csv.DictReader(table.open()) if r["category"] == "all"]
    pck = {(r["method"], float(r["alpha"])): float(r["pck_per_pair"]) for r in rows}
    assert all(pck[("exact", a)] == 100.0 and pck[("far", a)] == 0.0 for a in (0.05, 0.1, 0.15))
    assert [r["method"] for r in rows] == ["exact"] * 3 + ["far"] * 3  # the order of the methods list
    for m, path in zip(methods, per_pair):  # each method's own files, one row per pair and alpha
        own = list(csv.DictReader(path.open()))
        assert {r["method"] for r in own} == {m} and len(own) == 3 * len(pairs)
    assert float(next(csv.DictReader(summaries[0].open()))["ms_per_pair"]) == 1.5


def test_a_missing_pair_or_a_mismatched_list_is_an_error(demo_cfg, tmp_path):
    _, pairs = eval_pairs(demo_cfg, load_dataset(demo_cfg))
    partial = {p.pair_id: p.trg_kps for p in pairs[1:]}
    pred, meta = _write(tmp_path, "partial", partial)
    out = [tmp_path / "a.csv"], [tmp_path / "b.csv"]
    with pytest.raises(KeyError, match=pairs[0].pair_id.replace(">", ".")):
        evaluation_stage.evaluate(demo_cfg, ["partial"], "b", [pred], [meta], *out)
    with pytest.raises(ValueError, match="2 methods"):
        evaluation_stage.evaluate(demo_cfg, ["partial", "other"], "b", [pred], [meta], *out)


def test_skipped_pairs_are_counted_per_category_and_a_fully_skipped_category_keeps_its_rows():
    from pipeline_lib.datasets import SkippedPair
    from pipeline_lib.evaluation.summary import account_skipped, markdown_table, summarise

    per_pair = [{"method": "nn", "pair_id": f"p{i}", "category": "cat", "alpha": 0.1, "threshold": "bbox",
                 "n_keypoints": 4, "n_correct": 2, "pck": 50.0} for i in range(3)]
    skipped = [SkippedPair("f.csv, row 2", "NaN", "cat"), SkippedPair("f.csv, row 5", "missing", "dog"),
               SkippedPair("f.csv, row 6", "missing", "dog"), SkippedPair("f.csv, row 9", "short row", "")]
    rows = account_skipped(summarise(per_pair), skipped)
    by_cat = {r["category"]: r for r in rows}
    assert [r["category"] for r in rows] == ["cat", "dog", "all"]
    assert (by_cat["cat"]["n_skipped"], by_cat["dog"]["n_skipped"], by_cat["all"]["n_skipped"]) == (1, 2, 4)
    assert by_cat["dog"]["n_pairs"] == 0 and np.isnan(by_cat["dog"]["pck_per_pair"])
    assert by_cat["all"]["n_pairs"] == 3 and by_cat["all"]["pck_per_pair"] == 50.0  # the overall row is unchanged
    assert "| nn | 50.0 | 50.0 | - |" in markdown_table(rows)
    assert [r["category"] for r in account_skipped(summarise(per_pair), skipped, add_vanished=False)] == ["cat", "all"]
    dropped = account_skipped(summarise(per_pair), skipped, split_dropped={"cat": 5, "dog": 1})
    assert [(r["category"], r["n_split_dropped"]) for r in dropped] == [("cat", 5), ("dog", 1), ("all", 6)]
    assert "(skipped: 4; 6 left out by the image-disjoint split)" in markdown_table(dropped)


def test_pictures_show_each_categorys_first_pairs_and_are_reproducible(demo_cfg, tmp_path):
    from PIL import Image

    from pipeline_lib.evaluation.pictures import CORRECT, WRONG, pairs_to_draw

    _, pairs = eval_pairs(demo_cfg, load_dataset(demo_cfg))
    chosen = pairs_to_draw(pairs, 2)
    assert list(chosen) == ["chelsea", "coffee"]
    for cat, drawn in chosen.items():  # the first two by pair id, every rerun the same
        assert [p.pair_id for p in drawn] == sorted(p.pair_id for p in pairs if p.category == cat)[:2]
    exact = {p.pair_id: np.where(p.valid[:, None], p.trg_kps, np.nan) for p in pairs}
    far = {k: v + 1000.0 for k, v in exact.items()}
    inputs = [_write(tmp_path, m, preds)[0] for m, preds in (("exact", exact), ("far", far))]
    evaluation_stage.draw_test_pairs(demo_cfg, ["exact", "far"], inputs, tmp_path / "pics")
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["chelsea.png", "coffee.png"]
    rgb = np.asarray(Image.open(tmp_path / "pics" / "chelsea.png").convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (CORRECT, WRONG)}
    found = {c for c in colours if (rgb == c).all(1).any()}
    assert tuple(int(CORRECT[i:i + 2], 16) for i in (1, 3, 5)) in found  # the exact method's dots are green
    evaluation_stage.draw_test_pairs(demo_cfg, ["exact", "far"], inputs, tmp_path / "again")
    assert (tmp_path / "again" / "coffee.png").read_bytes() == (tmp_path / "pics" / "coffee.png").read_bytes()
