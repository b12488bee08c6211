"""The method registry: every trained method gets its @init row next to it, and the workflow knows them."""

import re
from pathlib import Path

import pytest
import yaml

from pipeline_lib.methods.registry import (METHOD_NAMES, METHODS, PSEUDO_GT_METHODS, TRAINED_METHODS, base_method,
                                           evaluated_methods, match_factory, method, predict_stage, predicted_by,
                                           predictor_factory)

ROOT = Path(__file__).resolve().parents[2]


def test_each_trained_method_is_followed_by_its_init_row():
    assert evaluated_methods(["nn", "siamese", "hpf", "sfnet"]) == ["nn", "siamese", "siamese@init", "hpf", "sfnet",
                                                                     "sfnet@init"]
    assert evaluated_methods(["nn", "hpf"]) == ["nn", "hpf"]
    assert base_method("weakalign@init") == "weakalign" and base_method("hpf") == "hpf"


def test_trained_methods_are_schema_methods_with_train_and_init_outputs():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    enum = set(schema["properties"]["methods"]["items"]["enum"])
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    for m in TRAINED_METHODS:
        assert m in enum, m
        # the train rule writes the initial weights, and a predict rule reads them for the @init row
        assert re.search(rf"init=f\"{{DATA}}/{{{{backbone}}}}/{m}/init\.pt\"", rules), m
        assert re.search(rf"\*\*trained_inputs\(\"{m}\"\)", rules), m  # reads model.pt and init.pt
        assert re.search(rf"\*\*trained_outputs\(\"{m}\"\)", rules), m  # writes <m> and <m>@init


def rule_blocks() -> dict[str, str]:
    """Every rule of the workflow (also those under ``if FOLDS:``) and its text."""
    blocks = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for part in re.split(r"\n(?=\s*rule \w+:)", path.read_text()):
            m = re.match(r"\s*rule (\w+):", part)
            if m:
                blocks[m.group(1)] = part
    return blocks


def test_the_schema_lists_exactly_the_registry_methods():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert schema["properties"]["methods"]["items"]["enum"] == list(METHOD_NAMES)
    description = " ".join(schema["properties"]["methods"]["description"].split())
    for name in METHOD_NAMES:  # each method is explained where a user picks it
        assert f"{name} - " in description, name


def test_every_method_is_predicted_by_an_existing_rule_that_writes_it():
    blocks = rule_blocks()
    for m in METHODS:
        block = blocks.get(m.rule)
        assert block is not None, f"{m.name}: rule {m.rule} does not exist"
        if len(predicted_by(m.rule)) == 1:  # the rule names the method it writes
            assert f'method="{m.name}"' in block, (m.name, m.rule)
        else:  # a {method} wildcard constrained to the registry's methods of this rule
            assert 'method="|".join(predicted_by("' + m.rule + '"))' in block, m.rule
        script = re.search(r'"\.\./scripts/(\w+\.py)"', block).group(1)
        assert script == ("predict_trained.py" if m.trained else "predict.py"), (m.name, script)


def test_every_method_resolves_to_its_stage_function():
    for m in METHODS:
        if m.trained:
            assert m.predictor is None and callable(predict_stage(m.name)), m.name
            assert callable(match_factory(m.name)), m.name  # match and the warp pictures run every trained method
            with pytest.raises(ValueError, match="has no|not feature-based"):
                predictor_factory(m.name)
        else:
            assert m.predict is None and callable(predictor_factory(m.name)), m.name
            assert not m.dense_flow, m.name  # a dense flow comes from a model of its own
            with pytest.raises(ValueError, match="from cached features"):
                predict_stage(m.name)
            with pytest.raises(ValueError, match="match runs it from features"):
                match_factory(m.name)
    assert method("siamese@init").name == "siamese"
    with pytest.raises(ValueError, match="unknown method 'nope'; known: nn, "):
        method("nope")


def test_artifacts_the_registry_names_decide_the_targets_and_the_feature_stage():
    assert PSEUDO_GT_METHODS == {"siamese", "gaur_hpf"}  # both need the manifold's pseudo flow
    assert predicted_by("predict_hpf") == ("nn_best_layer", "hpf", "hpf_nn", "hpf_single", "hpf_ot", "hpf_ot_only")
    assert method("gaur_hpf").variant == "hpf" and method("hpf_nn").variant == "hpf_nn"
