"""The cross-dataset protocol on real data: search (and train: the same index) on classes of ../shared/data/pf-willow,
evaluate on a second PF-WILLOW-layout root built from other classes. (An image in both datasets stopping the
index: tests/unit/test_category_folds.py, through the same load_dataset.)"""

import csv
import json
import shutil

import pytest

from .test_workflow import run_workflow

TRAIN_CLASSES = ["car(S)"]
EVAL_CLASSES = ["motorbike(G)", "winebottle(M)"]
N_EVAL_IMAGES = 3  # per class: 6 ordered pairs each


def second_root(pf_willow_root, dest, classes):
    """A PF-WILLOW-layout root (images + .mat keypoints, no pair list) from the first images of ``classes``."""
    for c in classes:
        (dest / c).mkdir(parents=True)
        for png in sorted((pf_willow_root / c).glob("*.png"))[:N_EVAL_IMAGES]:
            shutil.copy(png, dest / c)
            shutil.copy(png.with_suffix(".mat"), dest / c)
    return dest


def config(eval_root, train_root, train_classes):
    return {"dataset": {"name": "willow_cross", "kind": "pf-willow", "root": str(eval_root)},
            "train_dataset": {"root": str(train_root), "categories": train_classes, "val_fraction": 0.1},
            "image": {"longer_side": 96}, "device": "cpu", "methods": ["nn", "hpf"],
            "hpf": {"max_layers": 2, "beam_width": 2, "max_search_pairs": 4}}


@pytest.fixture(scope="module")
def cross_run(repo, pf_willow_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("cross")
    eval_root = second_root(pf_willow_root, work / "willow2", EVAL_CLASSES)
    return run_workflow(repo, work, config(eval_root, pf_willow_root, TRAIN_CLASSES))


@pytest.mark.slow
def test_search_and_training_read_only_the_training_dataset(cross_run):
    base = cross_run / "results" / "willow_cross" / "efficientnet_lite0"
    rows = list(csv.DictReader((base / "pck_summary.csv").open()))
    assert {r["protocol"] for r in rows} == {"cross_dataset"}
    assert {r["category"] for r in rows} == {"all", *EVAL_CLASSES}
    assert all(int(r["n_pairs"]) == len(EVAL_CLASSES) * N_EVAL_IMAGES * (N_EVAL_IMAGES - 1)
               for r in rows if r["category"] == "all")
    searched = json.loads((base / "hpf" / "search.json").read_text())["learned_from"]
    assert searched["images"] and {i.split("/")[0] for i in searched["images"]} == set(TRAIN_CLASSES)
    evaluated = {i for r in csv.DictReader((base / "methods" / "hpf" / "pck_per_pair.csv").open())
                 for i in (r["src"], r["trg"])}
    assert {i.split("/")[0] for i in evaluated} == set(EVAL_CLASSES)


@pytest.mark.slow
def test_each_dataset_keeps_its_own_feature_cache_which_single_dataset_runs_reuse(cross_run, repo):
    """The cross-dataset run extracted one store per dataset; a single-dataset config over the evaluation root
    (another dataset name, same images and resolution) finds its features already there and extracts nothing."""
    from .test_workflow import snakemake

    stores = sorted(p.relative_to(cross_run / "results" / "features").parts[0]
                    for p in (cross_run / "results" / "features").glob("*/*/efficientnet_lite0.zarr"))
    assert len(stores) == 2
    cfg = config(cross_run / "willow2", None, None)
    cfg = {**cfg, "dataset": {**cfg["dataset"], "name": "willow_alone"}, "methods": ["nn"]}
    del cfg["train_dataset"]
    r = snakemake(repo, cross_run, "-n", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rule extract_features:" not in r.stdout + r.stderr and "rule predict_nn:" in r.stdout + r.stderr
