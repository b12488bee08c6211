"""The SFNet and WeakAlign workflow stages: schema defaults, and the weights + sidecar they write."""

import json

import pytest
import torch
from torch import nn

from pipeline_lib.config import validate_config
from pipeline_lib.sfnet import SFNetConfig, SyntheticConfig
from pipeline_lib.sfnet import stage as sfnet_stage
from pipeline_lib.stage_io import save_trained
from pipeline_lib.training import load_trained
from pipeline_lib.sfnet.losses import SFNetLossConfig
from pipeline_lib.sfnet.train import PAPER_BATCH_SIZE, PAPER_LR
from pipeline_lib.training import TrainResult
from pipeline_lib.weakalign import AugmentConfig, WeakAlignConfig, WeakAlignLossConfig
from pipeline_lib.weakalign import stage as weakalign_stage


def test_schema_defaults_are_the_papers_settings():
    cfg = validate_config({})
    s = sfnet_stage.settings(cfg)
    assert (s.model, s.synthetic, s.loss, s.mask_source) == (SFNetConfig(), SyntheticConfig(), SFNetLossConfig(),
                                                              "auto")
    assert (s.train.lr, s.train.batch_size, s.train.epochs) == (PAPER_LR, PAPER_BATCH_SIZE, 40)  # Lee et al. 4.2
    w = weakalign_stage.settings(cfg)
    assert (w.model, w.augment, w.loss, w.transfer) == (WeakAlignConfig(), AugmentConfig(), WeakAlignLossConfig(),
                                                        "swap")
    assert (w.train.batch_size, w.train.weight_decay, w.train.epochs) == (16, 0.0, 13)  # Rocco et al. 4.1


@pytest.mark.parametrize("method", ["sfnet", "weakalign", "fcss"])
def test_saved_weights_load_back_with_their_sidecar(tmp_path, method):
    cfg = validate_config({"seed": 3})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    result = TrainResult(epochs_run=2, resumed_from=1, history=[{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}])
    out = tmp_path / method / "model.pt"
    learned = {"pairs": ["a->b"], "images": ["a", "b"]}
    save_trained(cfg, method, model, result, out, torch.device("cpu"), learned, n_pairs=7)
    meta = json.loads((tmp_path / method / "train_meta.json").read_text())
    assert meta["learned_from"] == learned
    assert meta["method"] == method and meta["seed"] == 3 and meta["n_pairs"] == 7
    assert meta["resumed_from_epoch"] == 1 and [h["loss"] for h in meta["history"]] == [2.0, 1.0]
    assert meta["config"][method] == cfg[method]
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
    loaded = load_trained(fresh, out, torch.device("cpu"))
    assert not loaded.training
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.load(out, weights_only=False)["meta"][method] == cfg[method]
