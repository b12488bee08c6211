"""Category folds, category subsets, pooled fold tables and the refusal to test on what was learned from."""

import json
import numpy as np
import pytest
import torch

from pipeline_lib.config import validate_config
from pipeline_lib.datasets import DatasetError, DatasetIndex, ImageRecord, Pair, keep_categories
from pipeline_lib.datasets.pairs import assign_category_fold_split, category_folds
from pipeline_lib.evaluation.summary import pool_folds
from pipeline_lib.protocols import SeenError, fold_names, fold_view, learned_from, merge_learned, refuse_seen

CATS = [f"c{i}" for i in range(7)]


def toy_pairs(cats=CATS, n_images=4):
    pairs = []
    for c in cats:
        ids = [f"{c}/{i}" for i in range(n_images)]
        pairs += [Pair(f"{a}->{b}", c, a, b, np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1, bool))
                  for a in ids for b in ids if a != b]
    return pairs


def test_folds_are_seeded_balanced_and_cover_every_category():
    folds = category_folds(CATS, 3, seed=0)
    assert set(folds) == set(CATS) and sorted(set(folds.values())) == [0, 1, 2]
    sizes = sorted(list(folds.values()).count(f) for f in range(3))
    assert sizes == [2, 2, 3]
    assert category_folds(list(reversed(CATS)), 3, seed=0) == folds  # names, not their order, decide
    assert any(category_folds(CATS, 3, seed=s) != folds for s in range(1, 5))
    for bad in (1, 8):
        with pytest.raises(DatasetError, match="2 <= folds <= number of categories"):
            category_folds(CATS, bad, seed=0)


def test_every_pair_is_tested_in_exactly_one_fold_and_never_trained_on_there():
    pairs = toy_pairs()
    folds = category_folds(CATS, 3, seed=0)
    tested: dict[str, int] = {}
    for f in range(3):
        split = assign_category_fold_split(pairs, f, folds, val_fraction=0.25, seed=0)
        assert [p.pair_id for p in split] == [p.pair_id for p in pairs]  # nothing dropped, order kept
        test_cats = {c for c, g in folds.items() if g == f}
        for p in split:
            assert (p.split == "test") == (p.category in test_cats)
            if p.split == "test":
                assert p.pair_id not in tested
                tested[p.pair_id] = f
        learned = {i for p in split if p.split != "test" for i in (p.src, p.trg)}
        assert not learned & {i for p in split if p.split == "test" for i in (p.src, p.trg)}
        n_val = sum(p.split == "val" for p in split)
        assert n_val == 3 * (len(CATS) - len(test_cats))  # round(0.25 x 12) per training category
    assert set(tested) == {p.pair_id for p in pairs}


def test_a_training_category_holds_out_the_same_pairs_in_every_fold():
    pairs = toy_pairs()
    folds = category_folds(CATS, 3, seed=0)
    free = {p.pair_id: p.split for p in assign_category_fold_split(pairs, None, folds, 0.25, seed=0)}
    assert set(free.values()) == {"train", "val"}  # the fold-free view tests nothing
    for f in range(3):
        for p in assign_category_fold_split(pairs, f, folds, 0.25, seed=0):
            if p.split != "test":
                assert p.split == free[p.pair_id]
    with pytest.raises(DatasetError, match="fold = 5 but there are 3 folds"):
        assign_category_fold_split(pairs, 5, folds, 0.25, seed=0)


def test_keep_categories_filters_images_and_pairs_and_names_unknown_ones():
    pairs = toy_pairs(["a", "b"], 3)
    images = {i: ImageRecord(i, None, i.split("/")[0], 10, 10) for p in pairs for i in (p.src, p.trg)}
    index = keep_categories(DatasetIndex("toy", "demo", dict(images), list(pairs)), ["b"])
    assert index.categories() == ["b"] and {p.category for p in index.pairs} == {"b"}
    with pytest.raises(DatasetError, match=r"dataset.categories names \['z'\]"):
        keep_categories(DatasetIndex("toy", "demo", dict(images), list(pairs)), ["b", "z"])


def test_pooling_needs_every_pair_exactly_once():
    rows = {"fold0": [{"pair_id": "p1", "pck": 50}], "fold1": [{"pair_id": "p2", "pck": 100}]}
    pooled = pool_folds(rows, ["p1", "p2"])
    assert [(r["pair_id"], r["fold"]) for r in pooled] == [("p1", "fold0"), ("p2", "fold1")]
    with pytest.raises(ValueError, match="p1 is tested in fold0 and in fold1"):
        pool_folds({**rows, "fold1": rows["fold1"] + [{"pair_id": "p1"}]}, ["p1", "p2"])
    with pytest.raises(ValueError, match="1 never tested"):
        pool_folds(rows, ["p1", "p2", "p3"])


def test_fold_view_and_names_follow_the_config():
    cfg = validate_config({"dataset": {"kind": "demo", "name": "x", "split": {"mode": "category_folds", "folds": 2}}})
    assert fold_names(cfg) == ["fold0", "fold1"]
    view = fold_view(cfg, "fold1")
    assert view["dataset"]["split"]["fold"] == 1 and cfg["dataset"]["split"]["fold"] is None
    assert fold_names(validate_config({})) == []
    with pytest.raises(ValueError, match="fold 'fold0' given but"):
        fold_view(validate_config({}), "fold0")


def write_artifact(path, pairs=(), images=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "train_meta.json").write_text(json.dumps({"learned_from": learned_from(pairs, images)}))
    return path


def test_a_planted_overlap_is_refused_naming_the_image(tmp_path):
    pairs = toy_pairs(["a"], 3)
    train, test = pairs[:2], pairs[2:]
    cfg = validate_config({"dataset": {"kind": "demo", "name": "x", "split": {"mode": "image_disjoint"}}})
    clean = write_artifact(tmp_path / "clean" / "model.pt", images=["b/0"])
    assert refuse_seen(cfg, [p for p in test if "a/0" not in (p.src, p.trg)], clean)["images"] == ["b/0"]
    leaky = write_artifact(tmp_path / "leaky" / "model.pt", train)  # a/0, a/1, a/2: every test image
    with pytest.raises(SeenError, match=r"evaluation image 'a/\d' \(pair a/\d->a/\d\) was seen"):
        refuse_seen(cfg, test, leaky)
    # A split over pairs (the demo's "given"): shared images are fine, a shared pair is not.
    given = validate_config({"dataset": {"kind": "demo", "name": "x", "split": {"mode": "given"}}})
    assert refuse_seen(given, test, leaky)["pairs"] == sorted(p.pair_id for p in train)
    with pytest.raises(SeenError, match=f"evaluation pair {train[0].pair_id} was a search/training pair"):
        refuse_seen(given, [train[0]], leaky)
    strict = {**given, "evaluation": {**given["evaluation"], "unseen": "images"}}
    with pytest.raises(SeenError, match="was seen"):
        refuse_seen(strict, test, leaky)
    assert merge_learned(learned_from(train), None, {"pairs": ["z"], "images": ["q"]})["pairs"][-1] == "z"


def test_an_artifact_without_its_record_is_refused(tmp_path):
    cfg = validate_config({})
    bare = tmp_path / "m" / "model.pt"
    with pytest.raises(FileNotFoundError, match="train_meta.json: the record of what .* learned from is missing"):
        refuse_seen(cfg, [], bare)
    bare.parent.mkdir()
    (bare.parent / "train_meta.json").write_text("{}")
    with pytest.raises(SeenError, match="does not say which images and pairs it learned from"):
        refuse_seen(cfg, [], bare)


def test_fixed_layers_need_no_validation_pairs(tiny_demo_store, tmp_path):
    """Hyperpixel Flow's protocol: layers searched elsewhere, every pair a test pair (split all_test)."""
    from pipeline_lib.hpf.stage import predictor, search

    index, store = tiny_demo_store
    root = store.path.parent
    layers = store.layer_names[1:3]
    cfg = validate_config({"results_dir": str(root.parent), "dataset": {"kind": "demo", "name": root.name,
                                                                        "split": {"mode": "all_test"}},
                           "hpf": {"layers": layers}, "evaluation": {"split": "test"}})
    out = tmp_path / "s.json"
    search(cfg, store, out, tmp_path / "s.csv", tmp_path / "s.png", torch.device("cpu"))
    record = json.loads(out.read_text())
    assert record["best_layers"] == layers and record["n_pairs"] == 0
    assert record["learned_from"] == {"pairs": [], "images": []}
    _, params = predictor("hpf", cfg, store, out, torch.device("cpu"))
    assert params["layers"] == layers
    with pytest.raises(ValueError, match="nn_best_layer needs single layers scored on validation pairs"):
        predictor("nn_best_layer", cfg, store, out, torch.device("cpu"))
    # ... while a search proper still needs them.
    with pytest.raises(ValueError, match="no 'val' pairs to search"):
        search({**cfg, "hpf": {**cfg["hpf"], "layers": "search"}}, store, out, tmp_path / "s.csv",
               tmp_path / "s.png", torch.device("cpu"))


def test_cross_dataset_index_joins_train_pairs_and_refuses_shared_images(tmp_path):
    from pipeline_lib.stage_io import categories, feature_key, load_dataset
    from tests.conftest import write_png
    from tests.unit.test_datasets import make_willow

    evaluated = make_willow(tmp_path / "eval", classes=("car(G)",), with_csv=False)
    train = make_willow(tmp_path / "train", classes=("duck(S)", "wine(M)"), n=4, with_csv=False)

    def cfg(**train_keys):
        return validate_config({"dataset": {"name": "x", "kind": "pf-willow", "root": str(evaluated)},
                                "train_dataset": {"root": str(train), "val_fraction": 0.25, **train_keys}})

    # make_willow draws every class's images from the same seeds: the same pictures under other names.
    with pytest.raises(SeenError, match=r"evaluation image 'car\(G\)/img0' .* same content as training image"):
        load_dataset(cfg(), check_content=True)  # as the index stage reads it
    for i in range(3):
        write_png(evaluated / "car(G)" / f"img{i}.png", 40, 60, seed=10 + i)
    index = load_dataset(cfg())
    splits = {(p.category, p.split) for p in index.pairs}
    assert splits == {("car(G)", "test"), ("duck(S)", "train"), ("duck(S)", "val"), ("wine(M)", "train"),
                      ("wine(M)", "val")}
    assert sum(p.split == "val" for p in index.pairs) == 2 * 3  # round(0.25 x 12) per training class
    assert categories(cfg()) == ["duck(S)", "wine(M)"]  # the manifold learns where training happens
    # the evaluation dataset's feature cache is the one a single-dataset config over it uses
    assert feature_key(cfg()) == feature_key(validate_config({"dataset": {"name": "x", "kind": "pf-willow",
                                                                          "root": str(evaluated)}}))
    # The same class folder in both roots: refused by name.
    make_willow(train, classes=("car(G)",), with_csv=False)
    with pytest.raises(SeenError, match=r"image 'car\(G\)/img0' is in the evaluation dataset"):
        load_dataset(cfg())
    assert len(load_dataset(cfg(categories=["duck(S)"])).images) == 3 + 4
    bad = {**cfg(), "dataset": {**cfg()["dataset"], "split": {**cfg()["dataset"]["split"], "mode": "image_disjoint"}}}
    with pytest.raises(ValueError, match="set dataset.split.mode: all_test"):
        load_dataset(bad)
