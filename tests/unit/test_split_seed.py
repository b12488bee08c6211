"""``dataset.split.seed``: the split has a seed of its own, so training runs can differ in the top-level seed
(initialisation, batches, random warps) while every one of them sees the same train/val/test pairs."""

from pipeline_lib.config import validate_config
from pipeline_lib.settings import Settings
from pipeline_lib.stage_io import fold_table, load_dataset
from tests.unit.test_datasets import make_willow


def cfg_for(tmp_path, root, seed, split):
    return validate_config({"seed": seed, "results_dir": str(tmp_path / "results"),
                            "dataset": {"kind": "pf-willow", "name": "w", "root": str(root), "split": split}})


def split_of(cfg):
    return {p.pair_id: p.split for p in load_dataset(cfg).pairs}


def test_a_null_split_seed_follows_the_top_level_seed_and_a_set_one_holds_the_split(tmp_path):
    root = make_willow(tmp_path / "data", n=6)
    disjoint = {"mode": "image_disjoint", "train_fraction": 0.34, "val_fraction": 0.17}
    by_seed = [split_of(cfg_for(tmp_path, root, s, disjoint)) for s in range(4)]
    assert any(b != by_seed[0] for b in by_seed[1:])  # the top-level seed draws the split (null split seed)
    assert Settings(cfg_for(tmp_path, root, 3, disjoint)).split_seed == 3
    held = [split_of(cfg_for(tmp_path, root, s, {**disjoint, "seed": 0})) for s in range(4)]
    assert all(h == by_seed[0] for h in held)  # split seed 0: seed 0's split whatever the top-level seed
    assert Settings(cfg_for(tmp_path, root, 3, {**disjoint, "seed": 0})).split_seed == 0


def test_the_fold_assignment_follows_the_split_seed(tmp_path):
    classes = tuple(f"c{i}" for i in range(6))
    root = make_willow(tmp_path / "data", classes=classes, n=2)
    folds = {"mode": "category_folds", "folds": 3}
    tables = [fold_table(cfg_for(tmp_path, root, s, folds)) for s in range(6)]
    assert any(t != tables[0] for t in tables[1:])
    assert all(fold_table(cfg_for(tmp_path, root, s, {**folds, "seed": 0})) == tables[0] for s in range(6))
