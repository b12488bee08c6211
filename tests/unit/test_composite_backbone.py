"""Several backbones as one (issue 17: layers of more than one backbone in one hyperpixel set): a composite
backbone's forward, layer table and feature store, the stage-end bar on it, and what the workflow refuses."""

import json

import numpy as np
import pytest
import torch

from pipeline_lib.backbones import (BackboneError, CompositeBackbone, build_backbone, composite_members,
                                    config_weights, describe_layers, layer_member)
from pipeline_lib.config import validate_config
from pipeline_lib.hpf.stage import search
from pipeline_lib.datasets import demo_synthesis, open_dataset
from pipeline_lib.features import FeatureStore, extract_features
from pipeline_lib.hpf.search import search_space
from pipeline_lib.methods import stage_end_layers
from pipeline_lib.methods.registry import check_backbones
from pipeline_lib.settings import DemoSection

NAME = "efficientnet_lite0+mobilenet_v2"


@pytest.fixture(scope="module")
def members():
    torch.manual_seed(0)
    return build_backbone("efficientnet_lite0", pretrained=False), build_backbone("mobilenet_v2", pretrained=False)


@pytest.fixture(scope="module")
def composite(members):
    return CompositeBackbone(list(members)).eval()


def test_forward_returns_every_members_layers_under_qualified_names(members, composite):
    lite0, mnv2 = members
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out, a, b = composite(x), lite0(x), mnv2(x)
    assert composite.name == NAME
    assert sorted(out) == sorted([f"efficientnet_lite0:{n}" for n in lite0.layer_names] +
                                 [f"mobilenet_v2:{n}" for n in mnv2.layer_names])
    assert list(out) == list(composite.layer_names)
    torch.testing.assert_close(out["efficientnet_lite0:block10"], a["block10"])  # each member's own normalisation
    torch.testing.assert_close(out["mobilenet_v2:features.13"], b["features.13"])
    assert composite.default_layer == f"efficientnet_lite0:{lite0.default_layer}"


def test_layers_are_ordered_by_stride_so_a_search_can_add_either_members_layers_to_a_base(members, composite):
    strides = [x.stride for x in describe_layers(composite, probe_size=64)]
    assert strides == sorted(strides)
    for m in members:  # each member's layers keep their network order
        mine = [n.split(":", 1)[1] for n in composite.layer_names if n.startswith(m.name + ":")]
        assert mine == list(m.layer_names)
    base = composite.layer_names.index("mobilenet_v2:features.6")  # stride 8
    after = {n.split(":")[0] for n in composite.layer_names[base + 1:]}
    assert after == {"efficientnet_lite0", "mobilenet_v2"}


def test_upto_computes_the_layers_up_to_that_one_in_the_composites_order(composite):
    x = torch.rand(1, 3, 64, 64)
    for upto in ("efficientnet_lite0:block02", "mobilenet_v2:features.3", "efficientnet_lite0:block15"):
        with torch.inference_mode():
            got = composite(x, upto=upto)
        pos = composite.layer_names.index(upto)
        assert list(got) == list(composite.layer_names[:pos + 1])
    with pytest.raises(KeyError, match="not a layer of"):
        composite(x, upto="block02")


def test_layer_table_is_measured_per_member(members, composite):
    table = {x.name: x for x in describe_layers(composite, probe_size=64)}
    for m in members:
        for info in describe_layers(m, probe_size=64):
            q = table[f"{m.name}:{info.name}"]
            assert (q.channels, q.stride, q.receptive_field) == (info.channels, info.stride, info.receptive_field)


def test_names_are_checked():
    assert composite_members("efficientnet_lite0") == ("efficientnet_lite0",)
    assert composite_members(NAME) == ("efficientnet_lite0", "mobilenet_v2")
    with pytest.raises(BackboneError, match="unknown: \\['nope'\\]"):
        composite_members("efficientnet_lite0+nope")
    with pytest.raises(BackboneError, match="distinct"):
        composite_members("efficientnet_lite0+efficientnet_lite0")
    with pytest.raises(BackboneError, match="at least two distinct"):
        CompositeBackbone([build_backbone("efficientnet_lite0", pretrained=False)])
    assert layer_member("mobilenet_v2:features.13") == "mobilenet_v2" and layer_member("block10") == ""


def test_each_member_takes_its_own_weights_file(tmp_path):
    weights = {"mobilenet_v2": str(tmp_path / "missing.pth"), "vgg16": "/elsewhere.pth"}
    assert config_weights(weights, NAME) is weights and config_weights(weights, "vgg16") == "/elsewhere.pth"
    with pytest.raises(BackboneError, match="'mobilenet_v2' not found: .*missing.pth"):
        build_backbone(NAME, weights_path=config_weights(weights, NAME))


def test_one_store_holds_both_members_and_the_bar_takes_each_members_stage_ends(composite, members, tmp_path):
    root = tmp_path / "data"
    demo_synthesis.generate(root, DemoSection(photos=("rocket",), images_per_category=2, image_size=64), seed=1)
    index = open_dataset("demo", root, split_mode="given")
    out = tmp_path / f"{NAME}.zarr"
    extract_features(index, composite, out, longer_side=64, batch_size=2, device=torch.device("cpu"))
    store = FeatureStore(out)
    assert store.attrs["backbone"] == NAME and store.layer_names == list(composite.layer_names)
    key = store.image_ids[0]
    got = store.get(key, ["mobilenet_v2:features.13", "efficientnet_lite0:block10"])
    assert got["mobilenet_v2:features.13"].shape[0] == 96 and got["efficientnet_lite0:block10"].shape[0] == 112
    bar = stage_end_layers(store.layers)  # each member's own bar, stride by stride
    own = [[f"{m.name}:{n}" for n in stage_end_layers([x.__dict__ for x in describe_layers(m, probe_size=64)])]
           for m in members]
    assert bar == [n for pair in zip(*own) for n in pair] and len(bar) == 6
    strides = {x["name"]: x["stride"] for x in store.layers}
    assert [strides[n] for n in bar] == [8, 8, 16, 16, 32, 32]
    space = search_space(store.layers, 8, 16)  # the search picks bases and layers from both members
    bases = {layer_member(store.layer_names[i]) for i in space.base_candidates}
    assert bases == {"efficientnet_lite0", "mobilenet_v2"} and len(space.candidates) == len(store.layer_names)
    assert np.isfinite(got["efficientnet_lite0:block10"]).all()


def test_the_workflow_refuses_a_composite_beside_methods_of_one_backbone():
    check_backbones(["efficientnet_lite0"], ["siamese", "hpf"], True)  # no composite: nothing to refuse
    check_backbones([NAME], ["nn", "nn_stage_ends", "hpf", "hpf_ot", "nn_best_layer"], False)
    with pytest.raises(ValueError, match=r"composite .*not \['siamese', 'fcss'\]"):
        check_backbones(["efficientnet_lite0", NAME], ["hpf", "siamese", "fcss"], False)
    with pytest.raises(ValueError, match="manifold.run: true"):
        check_backbones([NAME], ["hpf"], True)


def test_the_layer_search_of_a_composite_seeds_the_joint_beam_with_each_members_set(composite, tmp_path):
    """hpf's search stage on a composite's store (random weights, the demo's tiny pairs): each member's layers
    searched alone, the joint search at least as good as either on the validation pairs, its sets from both."""
    cfg = validate_config({"dataset": {"name": "tiny", "kind": "demo", "split": {"mode": "given"}},
                           "demo": {"photos": ["chelsea", "coffee"], "images_per_category": 3, "image_size": 64},
                           "image": {"longer_side": 64}, "results_dir": str(tmp_path), "device": "cpu",
                           "backbones": [NAME], "methods": ["nn_stage_ends", "hpf"], "manifold": {"run": False},
                           "hpf": {"max_layers": 2, "beam_width": 2}})
    root = tmp_path / "tiny" / "data"
    demo_synthesis.generate(root, DemoSection(photos=("chelsea", "coffee"), images_per_category=3, image_size=64),
                            seed=0)
    store = tmp_path / "store.zarr"
    extract_features(open_dataset("demo", root, split_mode="given"), composite, store, longer_side=64, batch_size=3,
                     device=torch.device("cpu"))
    out = tmp_path / "search.json"
    search(cfg, FeatureStore(store), out, tmp_path / "trace.csv", tmp_path / "trace.png", torch.device("cpu"))
    record = json.loads(out.read_text())
    members = record["member_searches"]
    assert set(members) == {"efficientnet_lite0", "mobilenet_v2"}
    for m, found in members.items():
        assert found["best_layers"] and all(layer_member(n) == m for n in found["best_layers"])
        assert record["best_score"] >= found["best_score"]
    evaluated = {tuple(s) for st in record["trace"] for s, _ in st["evaluated"]}
    assert any(len({layer_member(n) for n in s}) == 2 for s in evaluated)  # sets across both members were scored
