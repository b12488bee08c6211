"""A folder of unlabelled images (kind ``folder``) runs Gaur & Manjunath's label-free chain: features, manifold,
pseudo flow, Siamese training and the trained encoder's features; nothing is searched, predicted or scored."""

import shutil

import pytest
import zarr

from pipeline_lib.datasets import demo_synthesis
from pipeline_lib.settings import DemoSection

from .test_workflow import run_workflow, snakemake


@pytest.fixture(scope="module")
def folder_run(repo, tmp_path_factory):
    work = tmp_path_factory.mktemp("folder")
    demo_synthesis.generate(work / "gen", DemoSection(photos=("chelsea",), images_per_category=3, image_size=64), seed=1)
    folder = work / "photos" / "cats"
    folder.mkdir(parents=True)
    for p in sorted((work / "gen" / "chelsea").glob("chelsea_?.png")):  # the images only, no masks or keypoints
        shutil.copy(p, folder / p.name.replace("chelsea_", "cat"))
    cfg = {"dataset": {"name": "mine", "kind": "folder", "root": str(work / "photos")},
           "image": {"longer_side": 64}, "device": "cpu", "methods": ["siamese", "hpf"],
           "manifold": {"grid_size": 8, "max_iter": 2, "n_clusters": 4},
           "siamese": {"input_size": 64, "epochs": 1, "batch_size": 2, "max_train_pairs": 2}}
    r = snakemake(repo, work, "-n", config=cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    return run_workflow(repo, work, cfg), r.stdout + r.stderr


@pytest.mark.slow
def test_the_label_free_chain_runs_on_unlabelled_images_and_says_what_it_skips(folder_run):
    work, plan = folder_run
    assert "has no keypoints" in plan and "skipped" in plan
    for rule in ("extract_features", "learn_manifold", "make_pseudo_flow", "train_siamese", "extract_siamese_features"):
        assert f"rule {rule}:" in plan, rule
    for rule in ("search_hyperpixel_layers", "predict_", "evaluate", "score_pseudo_flow"):
        assert f"rule {rule}" not in plan, rule
    base = work / "results" / "mine" / "efficientnet_lite0"
    store = zarr.open_group(str(base / "manifold" / "cats" / "manifold.zarr"), mode="r")
    assert sorted(store.attrs["image_ids"]) == ["cats/cat0", "cats/cat1", "cats/cat2"]
    assert store["label_maps"].shape[1:] == (3, 8, 8)
    assert (base / "siamese" / "model.pt").is_file() and (base / "chain" / "features.zarr" / "zarr.json").is_file()
    assert not (base / "pck_summary.csv").exists()
