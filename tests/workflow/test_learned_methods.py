"""SFNet, WeakAlign and FCSS as workflow stages: train, predict, evaluate into the PCK table, and
resume training from the last checkpoint when only more epochs are asked for."""

import copy
import csv
import importlib
import json

import numpy as np
import pytest
import torch

from pipeline_lib.config import validate_config
from pipeline_lib.match import match_images
from pipeline_lib.methods.registry import evaluated_methods

from .test_workflow import run_workflow

METHODS = ["sfnet", "cnngeometric", "weakalign", "fcss"]
TRAINED_STAGES = {"sfnet": "sfnet", "cnngeometric": "weakalign", "weakalign": "weakalign", "fcss": "fcss"}
TINY = {"dataset": {"name": "tiny_learned", "kind": "demo", "split": {"mode": "given"}},
        "demo": {"photos": ["chelsea", "coffee"], "images_per_category": 3, "image_size": 64},
        "image": {"longer_side": 64}, "device": "cpu", "methods": METHODS, "manifold": {"run": False},
        "sfnet": {"image_size": 64, "epochs": 1, "batch_size": 4, "lr": 0.001},
        "cnngeometric": {"epochs": 1, "batch_size": 4},
        "weakalign": {"image_size": 64, "epochs": 1, "batch_size": 4},
        "fcss": {"n_patterns": 8, "epochs": 1, "batch_size": 3,
                 "train": {"longer_side": 48, "n_samples": 64}}}


@pytest.fixture(scope="module")
def learned_run(repo, tmp_path_factory):
    return run_workflow(repo, tmp_path_factory.mktemp("learned"), TINY)


@pytest.mark.slow
def test_each_method_trains_predicts_and_has_pck_rows(learned_run):
    base = learned_run / "results" / "tiny_learned" / "efficientnet_lite0"
    rows = [r for r in csv.DictReader((base / "pck_summary.csv").open()) if r["category"] == "all"]
    rows_methods = evaluated_methods(METHODS)  # each trained method, then its @init row
    assert [r["method"] for r in rows] == [m for m in rows_methods for _ in range(3)]  # config order, 3 alphas
    assert all(int(r["n_pairs"]) == 4 for r in rows)  # 2 test pairs per category
    cg = torch.load(base / "cnngeometric" / "model.pt", weights_only=False)["model"]
    wa_init = torch.load(base / "weakalign" / "init.pt", weights_only=False)["model"]
    assert all(torch.equal(v, cg[k]) for k, v in wa_init.items())  # weakalign starts from cnngeometric
    for m in rows_methods:
        meta = json.loads((base / "methods" / m / "predict_meta.json").read_text())
        assert meta["method"] == m and meta["n_pairs"] == 4
    for m in METHODS:
        preds = list(csv.DictReader((base / "methods" / m / "predictions.csv").open()))
        assert {p["pair_id"] for p in preds} and all(p["pred_x"] != "nan" for p in preds)
        meta = json.loads((base / "methods" / m / "predict_meta.json").read_text())
        assert meta["method"] == m and meta["n_pairs"] == 4 and meta["ms_per_pair"] > 0
        train = json.loads((base / m / "train_meta.json").read_text())
        assert train["method"] == m and len(train["history"]) == 1 and train["resumed_from_epoch"] == 0
        assert (base / m / "loss_curve.png").stat().st_size > 0
        assert [r["epoch"] for r in csv.DictReader((base / m / "train_log.csv").open())] == ["1"]
    # the dense flows (sfnet, cnngeometric, weakalign; not fcss's descriptors) as warped images, per category
    assert sorted(p.name for p in (base / "warps").glob("*.png")) == [f"{c}.png" for c in TINY["demo"]["photos"]]


@pytest.mark.slow
def test_match_runs_fcss_with_the_runs_weights(learned_run, tmp_path):
    cfg = validate_config({**copy.deepcopy(TINY), "results_dir": str(learned_run / "results")})
    images = sorted((learned_run / "results" / "tiny_learned" / "data" / "coffee").glob("*.png"))
    res = match_images(cfg, images[0], images[1], "fcss", grid=3, out_dir=tmp_path / "fcss")
    assert res.trg_points.shape == (9, 2) and np.isfinite(res.trg_points).all()
    assert res.artifacts["weights"].endswith("tiny_learned/efficientnet_lite0/fcss/model.pt")


@pytest.mark.slow
# weakalign before cnngeometric: resuming cnngeometric rewrites its model.pt, which is weakalign's starting
# point (keyed by sha256), so weakalign would then rightly start afresh instead of resuming.
@pytest.mark.parametrize("method", sorted(METHODS, key=lambda m: m == "cnngeometric"))
def test_more_epochs_resume_from_the_workflows_checkpoint(learned_run, method):
    """The stage (as the rule calls it) continues the run's checkpoint when only ``epochs`` grows."""
    stage = importlib.import_module(f"pipeline_lib.{TRAINED_STAGES[method]}.stage")
    cfg = validate_config({**copy.deepcopy(TINY), "results_dir": str(learned_run / "results")})
    cfg[method]["epochs"] = 2
    base = learned_run / "results" / "tiny_learned" / "efficientnet_lite0"
    out = base / method
    if method == "cnngeometric":
        stage.train_cnngeometric(cfg, "efficientnet_lite0", out / "model.pt")
    elif method == "weakalign":
        stage.train(cfg, "efficientnet_lite0", out / "model.pt", init_from=base / "cnngeometric" / "model.pt")
    else:
        stage.train(cfg, "efficientnet_lite0", out / "model.pt")
    train = json.loads((out / "train_meta.json").read_text())
    assert train["resumed_from_epoch"] == 1 and [h["epoch"] for h in train["history"]] == [1, 2]
    assert [r["epoch"] for r in csv.DictReader((out / "train_log.csv").open())] == ["1", "2"]
