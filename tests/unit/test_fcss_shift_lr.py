"""FCSS sampling shifts in their own learning-rate group (TrainConfig.lr_groups): they move at their
rate, stay put at rate zero, and their mean displacement is logged per epoch; init.pt is the
untrained model."""

import csv

import pytest
import torch

from pipeline_lib.backbones import build_backbone
from pipeline_lib.config import validate_config
from pipeline_lib.fcss import stage
from pipeline_lib.fcss.model import FCSSConfig, build_fcss
from pipeline_lib.fcss.train import (FCSSTrainConfig, build_training_pairs, shift_displacement, shift_parameters,
                                     train_fcss, with_shift_lr)
from pipeline_lib.training import TrainConfig, param_groups

from .test_fcss_train import tiny_index


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def model_of(layers=("block00", "block01")):
    torch.manual_seed(0)
    return build_fcss(FCSSConfig(layers=layers, n_patterns=8),
                      build_backbone("efficientnet_lite0", pretrained=False))


def test_shift_groups_hold_exactly_the_shifts():
    model = model_of()
    cfg = with_shift_lr(TrainConfig(lr=1e-4), model, 0.05)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    shifts = {id(p) for p in shift_parameters(model).values()}
    assert len(shifts) == 4  # two CSS layers x (W_s, W_t)
    in_shift_groups = {id(p) for name, g in groups.items() if name != "default" for p in g["params"]}
    assert in_shift_groups == shifts and all(g["lr"] == 0.05 for n, g in groups.items() if n != "default")
    assert groups["default"]["lr"] == 1e-4 and not shifts & {id(p) for p in groups["default"]["params"]}
    assert with_shift_lr(TrainConfig(), model, None) == TrainConfig()
    with pytest.raises(ValueError, match="shift_lr"):
        with_shift_lr(TrainConfig(), model, -1.0)


def test_displacement_is_the_mean_distance_from_the_start():
    model = model_of()
    start = {k: v.detach().clone() for k, v in shift_parameters(model).items()}
    assert shift_displacement(model, start).item() == 0.0
    with torch.no_grad():
        for p in shift_parameters(model).values():
            p[:, 0] += 3.0
            p[:, 1] += 4.0
    assert shift_displacement(model, start).item() == pytest.approx(5.0)


def _train(tmp_path, shift_lr):
    model = model_of()
    start = {k: v.detach().clone() for k, v in shift_parameters(model).items()}
    cfg = FCSSTrainConfig(longer_side=64, n_samples=128)
    pairs = build_training_pairs(tiny_index(tmp_path, n_images=3), cfg)
    train_cfg = with_shift_lr(TrainConfig(epochs=2, lr=1e-4, batch_size=3), model, shift_lr)
    res = train_fcss(model, pairs, train_cfg, cfg, tmp_path / f"run_{shift_lr}", torch.device("cpu"))
    return model, start, res


def test_shifts_move_with_their_own_rate_and_not_with_zero(tmp_path):
    moved, start, res = _train(tmp_path, 0.1)
    d = shift_displacement(moved, start).item()
    assert d > 0.05  # Adam: about lr cells per step, 4 steps
    logged = [h["shift_displacement_cells"] for h in res.history]  # epoch means, measured before each step
    assert 0 < logged[0] < logged[1] <= d
    rows = list(csv.DictReader((tmp_path / "run_0.1" / "train_log.csv").open()))
    assert "shift_displacement_cells" in rows[0] and float(rows[1]["shift_displacement_cells"]) > 0
    frozen, start0, _ = _train(tmp_path, 0.0)
    assert shift_displacement(frozen, start0).item() == 0.0
    base = sum(float((p - q).abs().sum()) for p, q in zip(frozen.backbone.parameters(), model_of().backbone.parameters()))
    assert base > 0  # the rest still trains at the base rate


def test_schema_default_and_section_key():
    s = stage.settings_from_config(validate_config({})["fcss"])
    assert s.shift_lr == stage.SHIFT_LR
    assert stage.settings_from_config({"shift_lr": None}).shift_lr is None


@pytest.mark.slow
def test_train_stage_saves_the_untrained_model_as_init(tmp_path):
    from pipeline_lib.datasets.stage import generate_demo
    from pipeline_lib.stage_io import dataset_root

    cfg = validate_config({"dataset": {"name": "tiny_fcss", "kind": "demo", "split": {"mode": "given"}},
                           "demo": {"photos": ["chelsea"], "images_per_category": 3, "image_size": 64},
                           "image": {"longer_side": 64}, "device": "cpu", "results_dir": str(tmp_path / "r"),
                           "fcss": {"n_patterns": 8, "epochs": 1, "batch_size": 3, "layers": ["block01", "block02"],
                                    "train": {"longer_side": 48, "n_samples": 64}}})
    generate_demo(cfg, dataset_root(cfg))
    stage.train(cfg, "efficientnet_lite0", tmp_path / "fcss" / "model.pt", out_init=tmp_path / "fcss" / "init.pt")
    untrained = stage.build(cfg, "efficientnet_lite0").state_dict()
    init = torch.load(tmp_path / "fcss" / "init.pt", weights_only=False)["model"]
    trained = torch.load(tmp_path / "fcss" / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(v, untrained[k]) for k, v in init.items())
    assert any(not torch.equal(v, untrained[k]) for k, v in trained.items() if k.endswith("_offsets"))
