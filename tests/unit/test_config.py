import pytest
import yaml

from pipeline_lib.config import ConfigError, load_config, validate_config


def test_defaults_are_filled_and_shipped_configs_validate(repo):
    cfg = validate_config({})
    assert cfg["evaluation"]["alphas"] == [0.05, 0.1, 0.15] and cfg["dataset"]["split"]["mode"] == "all_test"
    shipped = sorted((repo / "config").glob("*.yaml"))
    assert {"config.yaml", "demo-stack.yaml", "pf-willow-folds.yaml"} <= {p.name for p in shipped}
    for path in shipped:
        if path.name != "schema.yaml":
            load_config(path)


def test_snakemake_validation_fills_the_same_defaults():
    from snakemake.utils import validate

    from pipeline_lib.config import SCHEMA_PATH

    cfg = {}
    validate(cfg, str(SCHEMA_PATH))
    assert cfg == validate_config({})


def test_bad_value_and_unknown_key_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"evaluation": {"threshold": "box"}}))
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid value at 'evaluation/threshold': 'box' is not one of"):
        load_config(bad)
    with pytest.raises(ConfigError, match="Additional properties are not allowed .'alpha' was unexpected"):
        validate_config({"evaluation": {"alpha": [0.1]}})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", ""])
def test_a_dataset_name_is_one_folder_under_results(name):
    with pytest.raises(ConfigError, match="invalid value at 'dataset/name'"):
        validate_config({"dataset": {"name": name}})


def test_alpha_above_one_is_refused():
    with pytest.raises(ConfigError, match=r"invalid value at 'evaluation/alphas/1': 1.5 is greater than the maximum of 1"):
        validate_config({"evaluation": {"alphas": [0.1, 1.5]}})


def test_match_settings_need_the_correlation_fusion():
    """The match adapters and the matching loss act on the correlation: with fusion stack the config is refused
    before any job runs, naming the key."""
    with pytest.raises(ConfigError, match="siamese/match_adapter"):
        validate_config({"siamese": {"match_adapter": True}})
    with pytest.raises(ConfigError, match="siamese/match_loss_weight"):
        validate_config({"siamese": {"fusion": "stack", "match_loss_weight": 1.0}})
    ok = validate_config({"siamese": {"fusion": "correlation", "match_adapter": True, "match_loss_weight": 1.0}})
    assert ok["siamese"]["match_adapter"] is True
