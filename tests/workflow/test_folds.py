"""The category-fold protocol end to end on a tiny demo: every pair tested once, pooled tables, and a
planted overlap between a fold's training and its test images stops prediction, naming the image."""

import csv
import json

import pytest

from .test_workflow import run_workflow, snakemake

PHOTOS = ["chelsea", "coffee"]
TINY = {"dataset": {"name": "tiny_folds", "kind": "demo",
                    "split": {"mode": "category_folds", "folds": 2, "val_fraction": 0.34}},
        "demo": {"photos": PHOTOS, "images_per_category": 3, "image_size": 64},
        "image": {"longer_side": 64}, "device": "cpu", "methods": ["nn", "hpf", "fcss"],
        "manifold": {"run": False}, "hpf": {"max_layers": 2, "beam_width": 2},
        "fcss": {"n_patterns": 8, "epochs": 1, "batch_size": 3, "train": {"longer_side": 48, "n_samples": 64}}}
N_PAIRS = len(PHOTOS) * 3 * 2  # every ordered pair of 3 images per category


@pytest.fixture(scope="module")
def folds_run(repo, tmp_path_factory):
    return run_workflow(repo, tmp_path_factory.mktemp("folds"), TINY)


@pytest.mark.slow
def test_folds_pool_every_pair_once_with_the_protocol_column(folds_run):
    base = folds_run / "results" / "tiny_folds" / "efficientnet_lite0"
    rows = list(csv.DictReader((base / "pck_summary.csv").open()))
    assert {r["method"] for r in rows} == {"nn", "hpf", "fcss", "fcss@init"}
    assert {r["protocol"] for r in rows} == {"category_folds"}
    for r in rows:
        if r["category"] == "all":
            assert int(r["n_pairs"]) == N_PAIRS
    folds = list(csv.DictReader((base / "folds.csv").open()))
    assert sorted(c for f in folds for c in f["test_categories"].split()) == sorted(PHOTOS)
    for f in folds:  # each fold trains on the other category: 6 pairs, 2 held out for the search
        assert (int(f["train_pairs"]), int(f["val_pairs"]), int(f["test_pairs"])) == (4, 2, 6)
    per_pair = list(csv.DictReader((base / "methods" / "fcss" / "pck_per_pair.csv").open()))
    assert len({r["pair_id"] for r in per_pair}) == N_PAIRS
    for f in folds:
        fold_dir = folds_run / "results" / "tiny_folds" / "folds" / f["fold"] / "efficientnet_lite0"
        learned = json.loads((fold_dir / "fcss" / "train_meta.json").read_text())["learned_from"]
        searched = json.loads((fold_dir / "hpf" / "search.json").read_text())["learned_from"]
        tested = {i for r in per_pair if r["fold"] == f["fold"] for i in (r["src"], r["trg"])}
        assert tested and not tested & (set(learned["images"]) | set(searched["images"]))
        assert {i.split("/")[0] for i in learned["images"]} == set(PHOTOS) - set(f["test_categories"].split())
        assert sorted(p.stem for p in (fold_dir / "pictures").glob("*.png")) == sorted(f["test_categories"].split())


@pytest.mark.slow
def test_a_planted_overlap_stops_prediction_naming_the_image(repo, folds_run):
    fold_dir = folds_run / "results" / "tiny_folds" / "folds" / "fold0" / "efficientnet_lite0"
    meta_path = fold_dir / "fcss" / "train_meta.json"
    meta = json.loads(meta_path.read_text())
    tested = next(csv.DictReader((fold_dir / "methods" / "fcss" / "pck_per_pair.csv").open()))["src"]
    meta["learned_from"]["images"].append(tested)
    meta_path.write_text(json.dumps(meta))
    r = snakemake(repo, folds_run, "--forcerun", "predict_fcss", config=TINY)
    assert r.returncode != 0
    assert f"evaluation image '{tested}'" in r.stdout + r.stderr
