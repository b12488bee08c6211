"""The FCSS workflow stage: one config section -> model, supervision and loop settings."""

from dataclasses import fields

import pytest

from pipeline_lib.config import ConfigError, load_schema, validate_config
from pipeline_lib.fcss import FCSSConfig, FCSSTrainConfig
from pipeline_lib.fcss.stage import predict_longer_side, settings_from_config


def schema_defaults(props):
    return {k: (tuple(v["default"]) if isinstance(v["default"], list) else v["default"]) for k, v in props.items()}


def test_schema_defaults_are_the_dataclass_defaults():
    props = load_schema()["properties"]["fcss"]["properties"]
    model = schema_defaults({k: v for k, v in props.items() if k in {f.name for f in fields(FCSSConfig)}})
    assert model == {f.name: f.default for f in fields(FCSSConfig) if f.name != "seed"}
    supervision = schema_defaults(props["train"]["properties"])
    assert supervision == {f.name: f.default for f in fields(FCSSTrainConfig) if f.name != "split"}
    s = settings_from_config(validate_config({})["fcss"], seed=0)
    assert s.model == FCSSConfig() and s.supervision == FCSSTrainConfig()


def test_section_is_split_and_seeded():
    s = settings_from_config({"n_patterns": 8, "layers": ["block00"], "epochs": 2, "lr": 0.01, "longer_side": 96,
                              "train": {"longer_side": 64, "n_samples": 32, "region": "box"}}, seed=5)
    assert s.model.n_patterns == 8 and s.model.layers == ("block00",) and s.model.seed == 5
    assert (s.train.epochs, s.train.lr, s.train.seed) == (2, 0.01, 5)
    assert (s.supervision.longer_side, s.supervision.n_samples, s.supervision.region) == (64, 32, "box")
    assert s.supervision.split == "train" and s.longer_side == 96


def test_unknown_keys_and_a_training_split_other_than_train_are_refused():
    with pytest.raises(ConfigError, match="bogus"):
        settings_from_config({"bogus": 1})
    with pytest.raises(ConfigError, match="train split only"):
        settings_from_config({"train": {"split": "test"}})
    with pytest.raises(ConfigError, match="unknown key"):
        settings_from_config({"train": {"bogus": 1}})


def test_prediction_resolution_falls_back_to_the_image_section():
    cfg = validate_config({"image": {"longer_side": 200}})
    assert predict_longer_side(cfg) == 200
    cfg["fcss"]["longer_side"] = 120
    assert predict_longer_side(cfg) == 120
