"""The method registry: every trained method gets its @init row next to it, and the workflow knows them."""

import re
from pathlib import Path

import yaml

from pipeline_lib.methods.registry import TRAINED_METHODS, base_method, evaluated_methods

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
