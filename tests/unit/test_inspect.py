import numpy as np
import zarr

from pipeline_lib.__main__ import main
from pipeline_lib.inspect import describe, pca_rgb


def make_store(path):
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update({"backbone": "toy", "image_ids": ["a/1"], "default_layer": "L1", "longer_side": 8,
                       "layers": [{"name": "L1", "channels": 4, "stride": 2.0, "receptive_field": 3}],
                       "provenance": {"config": {"seed": 3}, "seed": 3}})
    g = root.create_group("images").create_group("00000")
    g.attrs.update({"image_id": "a/1", "original_hw": [8, 8], "resized_hw": [8, 8]})
    g.create_array("L1", data=np.random.default_rng(0).normal(size=(4, 4, 4)).astype("float32"))
    return path


def test_describe_lists_arrays_attributes_and_config(tmp_path):
    text = describe(make_store(tmp_path / "f.zarr"))
    assert "@provenance" in text and '"seed": 3' in text
    assert "L1: shape=(4, 4, 4) dtype=float32" in text and "image_id" in text


def test_cli_saves_a_pca_picture(tmp_path, capsys):
    store = make_store(tmp_path / "f.zarr")
    png = tmp_path / "pca.png"
    assert main(["inspect", str(store), "--save", str(png)]) == 0
    assert png.stat().st_size > 0 and "saved" in capsys.readouterr().out


def test_pca_colours_separate_two_planted_feature_groups():
    feat = np.zeros((8, 4, 4))
    feat[0, :, :2] = 1.0  # left half: one feature vector, right half: another
    feat[1, :, 2:] = 1.0
    rgb = pca_rgb(feat)
    assert rgb.shape == (4, 4, 3) and 0 <= rgb.min() and rgb.max() <= 1
    assert np.abs(rgb[:, :2].mean((0, 1)) - rgb[:, 2:].mean((0, 1))).max() > 0.5


def test_describe_a_training_checkpoint(tmp_path):
    import torch
    from torch import nn

    from pipeline_lib.training import TrainConfig, fit

    fit(nn.Linear(2, 1), lambda m, b: (m(b) ** 2).mean(), lambda e, g: [torch.ones(3, 2)],
        TrainConfig(epochs=2, lr=0.1), tmp_path, torch.device("cpu"))
    text = describe(tmp_path / "checkpoints" / "epoch_0001.pt")
    assert "torch checkpoint, 2 tensors, 3 values" in text
    assert "epoch 1: loss" in text and "epoch 2: loss" in text and "weight: (1, 2)" in text
