"""The Snakemake workflow: dry run, a real tiny run of the whole chain, no-op rerun and a targeted --forcerun."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline_lib.methods.registry import evaluated_methods

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# The full chain in miniature: features -> manifold -> pseudo flow -> Siamese training -> encoder features ->
# layer search -> gaur_hpf, evaluated next to nn, hpf and the Siamese network's own flow.
TINY = {"dataset": {"name": "tiny", "kind": "demo", "split": {"mode": "given"}},
        "demo": {"photos": ["chelsea", "coffee"], "images_per_category": 3, "image_size": 64},
        "image": {"longer_side": 64}, "device": "cpu", "methods": ["nn", "hpf", "hpf_ot", "siamese", "gaur_hpf"],
        "hpf": {"max_layers": 2, "beam_width": 2},
        "manifold": {"grid_size": 8, "max_iter": 2, "n_clusters": 4},
        "siamese": {"input_size": 64, "epochs": 1, "batch_size": 2, "max_train_pairs": 2}}
METHODS = TINY["methods"]


def snakemake(repo, workdir, *args, config=None):
    cmd = [SNAKEMAKE, "-s", str(repo / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    if config is not None:  # last: --configfile takes several values, so a target after it would be one
        path = workdir / "test-config.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def run_workflow(repo, work, config):
    """A real run in ``work`` that must succeed (its output tail in the failure message)."""
    r = snakemake(repo, work, config=config)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work


def test_dry_run_of_the_default_config(repo, tmp_path):
    r = snakemake(repo, tmp_path, "-n")
    assert r.returncode == 0, r.stderr
    for rule in ("generate_demo", "index_dataset", "extract_features", "predict_nn", "search_hyperpixel_layers",
                 "predict_hpf", "evaluate"):
        assert f"rule {rule}:" in r.stdout + r.stderr


def test_bad_config_value_stops_before_any_job(repo, tmp_path):
    r = snakemake(repo, tmp_path, config={**TINY, "evaluation": {"threshold": "box"}})
    assert r.returncode != 0
    assert "'box' is not one of ['bbox', 'img']" in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(repo, tmp_path_factory):
    return run_workflow(repo, tmp_path_factory.mktemp("wf"), TINY)


@pytest.mark.slow
def test_tiny_run_writes_the_result_contract(tiny_run):
    base = tiny_run / "results" / "tiny" / "efficientnet_lite0"
    rows = list(csv.DictReader((base / "pck_summary.csv").open()))
    for col in ("method", "category", "alpha", "threshold", "pck_per_pair", "pck_per_keypoint", "n_pairs",
                "n_keypoints"):
        assert col in rows[0]
    overall = [r for r in rows if r["category"] == "all"]
    rows_of = evaluated_methods(METHODS)  # config order, each trained method followed by its @init row
    assert "siamese@init" in rows_of
    assert [float(r["alpha"]) for r in overall] == [0.05, 0.1, 0.15] * len(rows_of)
    assert [r["method"] for r in overall] == [m for m in rows_of for _ in range(3)]
    assert all(int(r["n_pairs"]) == 4 for r in overall)  # 2 test pairs per category
    pcks = [float(r["pck_per_pair"]) for r in overall if r["method"] == "nn"]
    assert pcks == sorted(pcks) and pcks[-1] > 0
    assert (base / "pck_summary.md").read_text().startswith("| method |")
    meta = json.loads((base / "methods" / "nn" / "predict_meta.json").read_text())
    assert meta["seed"] == 0 and meta["config"]["dataset"]["name"] == "tiny"
    per_pair = list(csv.DictReader((base / "methods" / "nn" / "pck_per_pair.csv").open()))
    assert len(per_pair) == 4 * 3
    search = json.loads((base / "hpf" / "search.json").read_text())
    assert 1 <= len(search["best_layers"]) <= 2 and search["n_pairs"] == 2  # one val pair per category
    assert (base / "hpf" / "search_trace.png").stat().st_size > 0
    assert sorted(p.name for p in (base / "pictures").glob("*.png")) == [f"{c}.png" for c in TINY["demo"]["photos"]]
    # the Siamese network's dense flow as warped images, one picture per category
    assert sorted(p.name for p in (base / "warps").glob("*.png")) == [f"{c}.png" for c in TINY["demo"]["photos"]]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["siamese", "gaur_hpf"])
def test_match_runs_the_chains_methods_with_the_runs_artifacts(tiny_run, tmp_path, method):
    """Two images of the tiny run through the Siamese network, and through hpf on its encoder's features with
    the chain's searched layers: every grid point matched inside the target, the artifacts recorded."""
    from pipeline_lib.config import validate_config
    from pipeline_lib.match import match_images

    cfg = validate_config({**TINY, "results_dir": str(tiny_run / "results")})
    images = sorted((tiny_run / "results" / "tiny" / "data" / "chelsea").glob("*.png"))
    res = match_images(cfg, images[0], images[1], method, grid=4, out_dir=tmp_path / method)
    assert res.trg_points.shape == (16, 2) and np.isfinite(res.trg_points).all()
    assert (res.trg_points >= -0.5).all() and (res.trg_points <= 63.5).all()
    base = tiny_run / "results" / "tiny" / "efficientnet_lite0"
    if method == "gaur_hpf":
        assert res.artifacts["search"] == str(base / "chain" / "search.json")
        assert res.artifacts["encoder"] == str(base / "siamese" / "model.pt")
    else:
        assert res.artifacts["weights"] == str(base / "siamese" / "model.pt")
    assert (tmp_path / method / "warp.png").stat().st_size > 0


@pytest.mark.slow
def test_tiny_run_builds_every_stage_of_the_chain(tiny_run):
    from pipeline_lib.backbones import checkpoint_key
    from pipeline_lib.features import FeatureStore

    base = tiny_run / "results" / "tiny" / "efficientnet_lite0"
    features = tiny_run / "results" / "features" / "tiny" / "64px-float32" / "efficientnet_lite0.zarr"
    assert (features / "zarr.json").is_file()
    for cat in TINY["demo"]["photos"]:
        assert (base / "manifold" / cat / "manifold.zarr" / "zarr.json").is_file()
        assert (base / "pseudo_flow" / cat / "pseudo_flow.zarr" / "zarr.json").is_file()
    assert (base / "manifold" / "summary.csv").is_file() and (base / "pseudo_flow" / "quality_summary.csv").is_file()
    model = base / "siamese" / "model.pt"
    store = FeatureStore(base / "chain" / "features.zarr")
    assert store.attrs["checkpoint"]["sha256"] == checkpoint_key(model)
    assert store.attrs["backbone"] == "siamese_efficientnet_lite0"
    search = json.loads((base / "chain" / "search.json").read_text())
    assert search["checkpoint_sha256"] == checkpoint_key(model) and 1 <= len(search["best_layers"]) <= 2
    meta = json.loads((base / "methods" / "gaur_hpf" / "predict_meta.json").read_text())
    assert meta["method"] == "gaur_hpf" and meta["params"]["layers"] == search["best_layers"]
    for m in METHODS:
        assert len(list(csv.DictReader((base / "methods" / m / "predictions.csv").open()))) > 0


@pytest.mark.slow
def test_rerun_recomputes_nothing_and_forcerun_only_what_depends(repo, tiny_run):
    r = snakemake(repo, tiny_run, "-n", config=TINY)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr
    base = tiny_run / "results" / "tiny"
    data_mtime = (base / "data" / "pairs.csv").stat().st_mtime_ns
    feat_store = tiny_run / "results" / "features" / "tiny" / "64px-float32" / "efficientnet_lite0.zarr"
    feat_mtime = (feat_store / "zarr.json").stat().st_mtime_ns
    pred_mtime = (base / "efficientnet_lite0" / "methods" / "nn" / "predictions.csv").stat().st_mtime_ns
    # One call forces two stages (one snakemake start, one evaluation): the nn prediction, and the Siamese
    # training. Retraining the Siamese network reruns exactly the chain after it, nothing of the ImageNet
    # features, and (same commit, config and machine) reproduces the encoder's weights and the result table bit
    # for bit (the manifold before it: test_manifold_algorithm1.py::test_run_manifold_is_deterministic).
    table = base / "efficientnet_lite0" / "pck_summary.csv"
    weights = base / "efficientnet_lite0" / "siamese" / "model.pt"
    before = ([{k: v for k, v in row.items() if k != "ms_per_pair"} for row in csv.DictReader(table.open())],
              torch.load(weights, weights_only=True)["model"])
    r = snakemake(repo, tiny_run, "--forcerun", "predict_nn", "train_siamese", config=TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (base / "data" / "pairs.csv").stat().st_mtime_ns == data_mtime
    assert (feat_store / "zarr.json").stat().st_mtime_ns == feat_mtime
    assert (base / "efficientnet_lite0" / "methods" / "nn" / "predictions.csv").stat().st_mtime_ns > pred_mtime
    log = r.stdout + r.stderr
    for rule in ("predict_nn", "train_siamese", "extract_siamese_features", "search_gaur_layers", "predict_gaur_hpf",
                 "predict_siamese", "evaluate", "draw_test_pairs", "draw_flow_warps"):
        assert f"rule {rule}:" in log, rule
    for rule in ("generate_demo", "extract_features", "learn_manifold", "make_pseudo_flow", "search_hyperpixel_layers",
                 "predict_hpf"):
        assert f"rule {rule}:" not in log, rule
    after = ([{k: v for k, v in row.items() if k != "ms_per_pair"} for row in csv.DictReader(table.open())],
             torch.load(weights, weights_only=True)["model"])
    assert after[0] == before[0]
    assert before[1].keys() == after[1].keys() and all(torch.equal(before[1][k], after[1][k]) for k in before[1])


@pytest.mark.slow
def test_prediction_only_settings_do_not_retrain(repo, tiny_run):
    """Asking for the paper's top-K protocol reruns the Siamese prediction, not its training."""
    cfg = {**TINY, "siamese": {**TINY["siamese"], "retrieval_top_k": 2}}
    r = snakemake(repo, tiny_run, "-n", config=cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    log = r.stdout + r.stderr
    assert "rule predict_siamese:" in log
    assert "rule train_siamese:" not in log and "rule extract_siamese_features:" not in log


@pytest.mark.slow
def test_new_table_alphas_rescore_the_stored_predictions(repo, tiny_run):
    """Alphas only score: the layer search (its own hpf.search_alpha), the pseudo flow, training and
    prediction stay; the predictions and the stored pseudo flow are scored again."""
    cfg = {**TINY, "evaluation": {"alphas": [0.1, 0.2]}}
    r = snakemake(repo, tiny_run, "-n", config=cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    log = r.stdout + r.stderr
    for rule in ("evaluate", "score_pseudo_flow"):
        assert f"rule {rule}:" in log, rule
    for rule in ("predict_", "train_", "search_", "extract_", "make_pseudo_flow", "learn_manifold"):
        assert f"rule {rule}" not in log, rule


@pytest.mark.slow
def test_adapters_trained_on_stored_features_sit_on_the_searched_layers(repo, tiny_run, tmp_path):
    """siamese.train_on: features + match_layers: search: train_siamese reads the feature store and the hpf search
    record, its checkpoint records the searched layers, and the chain runs on to gaur_hpf's predictions."""
    import shutil

    work = tmp_path / "wf"
    shutil.copytree(tiny_run, work, symlinks=True)
    siamese = {**TINY["siamese"], "train_on": "features", "match_layers": "search", "fusion": "correlation",
               "match_adapter": True, "freeze_backbone": True, "flow_loss_weight": 0.0, "match_loss_weight": 1.0}
    cfg = {**TINY, "siamese": siamese}
    dry = snakemake(repo, work, "-n", config=cfg)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "rule train_siamese:" in dry.stdout + dry.stderr
    assert "rule extract_features:" not in dry.stdout + dry.stderr and "rule search_hyperpixel_layers:" not in dry.stdout
    r = snakemake(repo, work, "--until", "predict_gaur_hpf", config=cfg)  # the chain only: no pictures, no table
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    base = work / "results" / "tiny" / "efficientnet_lite0"
    searched = json.loads((base / "hpf" / "search.json").read_text())["best_layers"]
    meta = torch.load(base / "siamese" / "model.pt", weights_only=True)["meta"]
    assert list(meta["siamese"]["match_layers"]) == searched and meta["siamese"]["train_on"] == "features"
    chain = json.loads((base / "chain" / "search.json").read_text())
    assert chain["checkpoint_sha256"] and (base / "methods" / "gaur_hpf" / "predictions.csv").stat().st_size > 0


COMPOSITE = "efficientnet_lite0+mobilenet_v2"


def test_a_composite_backbone_beside_a_trained_method_stops_before_any_job(repo, tmp_path):
    r = snakemake(repo, tmp_path, "-n", config={**TINY, "backbones": [COMPOSITE]})
    assert r.returncode != 0
    assert f"backbones ['{COMPOSITE}'] are composite" in r.stdout + r.stderr and "'siamese'" in r.stdout + r.stderr


def test_a_composite_backbone_plans_its_own_store_search_and_table(repo, tmp_path):
    """The '+' in the backbone wildcard: one store, one search and one table under the composite's name (the run
    itself is tests/unit/test_composite_backbone.py, in-process)."""
    cfg = {**TINY, "backbones": [COMPOSITE], "methods": ["nn_stage_ends", "hpf"], "manifold": {"run": False}}
    r = snakemake(repo, tmp_path, "-n", "-p", config=cfg)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for path in (f"features/tiny/64px-float32/{COMPOSITE}.zarr", f"tiny/{COMPOSITE}/hpf/search.json",
                 f"tiny/{COMPOSITE}/pck_summary.csv"):
        assert path in out
    assert "rule train_" not in out and "rule manifold" not in out
