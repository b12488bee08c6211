"""Each config section's settings class mirrors the schema: the same keys, the schema's defaults (the schema
is the one place a default is written), nested sections as nested classes; the typed view reads a section only
when a stage asks for it."""

from dataclasses import MISSING, fields, is_dataclass

import pytest

from pipeline_lib.config import ConfigError, load_config, load_schema, schema_default, section, validate_config
from pipeline_lib.settings import SECTIONS, HPFSection, Settings, SFNetSection
from pipeline_lib.snakemake_adapter import RecordingConfig


def as_default(value):
    return tuple(value) if isinstance(value, list) else value


def compare(cls, schema_node, where):
    props = schema_node["properties"]
    by_name = {f.name: f for f in fields(cls)}
    assert set(by_name) == set(props), f"{where}: {sorted(set(by_name) ^ set(props))}"
    for key, f in by_name.items():
        if f.default is MISSING:  # a nested section: its class, checked against its sub-schema
            assert is_dataclass(f.default_factory), f"{where}.{key} has no default"
            compare(f.default_factory, props[key], f"{where}.{key}")
        else:
            assert f.default == as_default(props[key]["default"]), f"{where}.{key}: {f.default!r} vs the schema"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_each_section_class_has_the_schema_keys_and_defaults(name):
    compare(SECTIONS[name], load_schema()["properties"][name], name)


def test_every_object_section_of_the_schema_has_a_class():
    objects = {k for k, v in load_schema()["properties"].items() if v.get("type") == "object" and v.get("properties")}
    assert objects == set(SECTIONS)


def test_schema_default_reads_the_schema_and_every_key_has_one():
    assert schema_default("hpf", "beam_width") == 4
    assert schema_default("evaluation", "alphas") == (0.05, 0.1, 0.15)

    def missing(path, node):
        for key, sub in node.get("properties", {}).items():
            yield from ([".".join(path + [key])] if "default" not in sub else [])
            yield from missing(path + [key], sub)

    assert list(missing([], load_schema())) == []  # validate_config fills every key: none is left to code


def test_the_view_types_sections_nested_ones_included_and_reads_only_what_is_asked():
    cfg = RecordingConfig(validate_config({"sfnet": {"synthetic": {"flip_prob": 0.25}, "epochs": 3},
                                           "hpf": {"layers": ["a", "b"]}}))
    s = Settings(cfg)
    assert isinstance(s.sfnet, SFNetSection) and s.sfnet.epochs == 3 and s.sfnet.synthetic.flip_prob == 0.25
    assert s.sfnet.synthetic.scale_range == (0.85, 1.15)  # a list in the config, a tuple here
    assert s.hpf.layers == ("a", "b") and s.sfnet is s.sfnet  # built once
    assert cfg.read == {"sfnet", "hpf"}


def test_the_shipped_configs_build_every_section():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml")):
        if path.name == "schema.yaml":
            continue
        s = Settings(load_config(path))
        for name in SECTIONS:
            assert is_dataclass(getattr(s, name)), (path.name, name)


def test_section_rejects_unknown_keys_naming_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['beam'\] for HPFSection"):
        section(HPFSection, {"beam": 3})
    assert section(HPFSection, {"beam_width": 2}).beam_width == 2


def test_where_the_schema_takes_a_papers_value_it_equals_the_named_constant():
    """A default the schema takes from a paper and the cited constant of the code cannot drift apart."""
    from pipeline_lib.kernels.rhm import N_BINS_PER_SIDE
    from pipeline_lib.kernels import soft_argmax
    from pipeline_lib.sfnet import losses as sfnet_losses
    from pipeline_lib.sfnet import model as sfnet_model
    from pipeline_lib.sfnet import train as sfnet_train
    from pipeline_lib.weakalign import model as weakalign_model
    from pipeline_lib.weakalign import synthetic as cnngeometric
    from pipeline_lib.weakalign import train as weakalign_train

    pairs = {("hpf", "n_bins_per_side"): N_BINS_PER_SIDE,
             ("sfnet", "lr"): sfnet_train.PAPER_LR, ("sfnet", "batch_size"): sfnet_train.PAPER_BATCH_SIZE,
             ("sfnet", "beta"): soft_argmax.BETA, ("sfnet", "kernel_sigma_cells"): soft_argmax.KERNEL_SIGMA_CELLS,
             ("sfnet", "image_size"): sfnet_model.PAPER_IMAGE_SIZE,
             ("sfnet", "adaptation_kernel_sizes"): sfnet_model.ADAPTATION_KERNEL_SIZES,
             ("sfnet", "lambda_mask"): sfnet_losses.LAMBDA_MASK, ("sfnet", "lambda_flow"): sfnet_losses.LAMBDA_FLOW,
             ("sfnet", "lambda_smooth"): sfnet_losses.LAMBDA_SMOOTH,
             ("weakalign", "lr"): weakalign_train.PAPER_LR, ("weakalign", "batch_size"): weakalign_train.PAPER_BATCH_SIZE,
             ("weakalign", "image_size"): weakalign_model.PAPER_IMAGE_SIZE,
             ("weakalign", "tps_grid_size"): weakalign_model.TPS_GRID_SIZE,
             ("cnngeometric", "lr"): cnngeometric.PAPER_LR, ("cnngeometric", "batch_size"): cnngeometric.PAPER_BATCH_SIZE}
    for path, constant in pairs.items():
        assert schema_default(*path) == constant, path


def test_reads_of_finds_the_declaration_without_importing_and_names_a_missing_one(tmp_path, monkeypatch):
    import sys

    from pipeline_lib import settings

    sys.modules.pop("pipeline_lib.fcss.stage", None)
    assert settings.reads_of("pipeline_lib.hpf.stage:search_layers") == ("seed", "dataset", "hpf", "evaluation")
    assert settings.reads_of("pipeline_lib.fcss.stage:predict")[-1] == "dataset"
    assert "pipeline_lib.fcss.stage" not in sys.modules  # read from the source, not imported
    with pytest.raises(ValueError, match=r"pipeline_lib.hpf.stage:predictor .* declares no @reads"):
        settings.reads_of("pipeline_lib.hpf.stage:predictor")
    with pytest.raises(ValueError, match="no function nope"):
        settings.reads_of("pipeline_lib.hpf.stage:nope")
    assert settings.reads("seed", "hpf")(lambda cfg: None).config_sections == ("seed", "hpf")


def test_the_algorithm_parameter_classes_default_to_the_schema():
    """Classes a stage builds from a section (Gaur et al.'s Algorithm 1 parameters) keep cited defaults of
    their own for direct use; they must equal the schema's."""
    from pipeline_lib.manifold.algorithm1 import ManifoldConfig

    props = load_schema()["properties"]["manifold"]["properties"]
    shared = [f for f in fields(ManifoldConfig) if f.name in props]
    assert len(shared) == len(fields(ManifoldConfig)) - 1  # all but the seed (top-level)
    for f in shared:
        assert f.default == schema_default("manifold", f.name), f.name
