"""Editing the dataset reruns exactly what depends on it (issue: results that cannot go stale): the content of
its files is the index's rerun trigger, the images' content the features'; touching files reruns nothing."""

import csv
import os

import pytest

from tests.conftest import write_png
from tests.unit.test_datasets import make_willow

from .test_workflow import run_workflow, snakemake

CFG = {"dataset": {"name": "edited", "kind": "pf-willow", "pairs_csv": "test_pairs.csv"},
       "image": {"longer_side": 64}, "device": "cpu", "methods": ["nn"]}


def planned(r) -> set[str]:
    return {line.split()[1].rstrip(":") for line in (r.stdout + r.stderr).splitlines()
            if line.startswith(("rule ", "localrule "))} - {"all"}


@pytest.fixture(scope="module")
def edited_run(repo, tmp_path_factory):
    work = tmp_path_factory.mktemp("edited")
    root = make_willow(work / "willow")
    cfg = {**CFG, "dataset": {**CFG["dataset"], "root": str(root)}}
    return run_workflow(repo, work, cfg), root, cfg


def n_pairs(work):
    rows = csv.DictReader((work / "results" / "edited" / "efficientnet_lite0" / "pck_summary.csv").open())
    return {int(r["n_pairs"]) for r in rows if r["category"] == "all"}


@pytest.mark.slow
def test_touching_reruns_nothing_editing_a_row_reruns_the_index_and_after(repo, edited_run):
    work, root, cfg = edited_run
    for path in root.rglob("*"):  # a fresh copy of the same files: newer times, same content
        os.utime(path)
    r = snakemake(repo, work, "-n", config=cfg)
    assert r.returncode == 0 and planned(r) == set(), r.stdout[-2000:]
    assert n_pairs(work) == {12}
    lines = (root / "test_pairs.csv").read_text().splitlines(keepends=True)
    (root / "test_pairs.csv").write_text("".join(lines[:-1]))  # one pair row fewer
    r = snakemake(repo, work, "-n", config=cfg)
    assert planned(r) == {"index_dataset", "predict_nn", "evaluate", "draw_test_pairs"}, r.stdout[-2000:]
    assert snakemake(repo, work, config=cfg).returncode == 0
    assert n_pairs(work) == {11}
    write_png(root / "duck(S)" / "img1.png", 40, 60, seed=99)  # another picture under the same name
    r = snakemake(repo, work, "-n", config=cfg)
    assert planned(r) == {"index_dataset", "extract_features", "predict_nn", "evaluate", "draw_test_pairs"}, r.stdout[-2000:]
