"""The full chain's encoder: a Siamese checkpoint as a backbone, its keyed feature store, stale stores refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline_lib.backbones import BackboneError, build_backbone, build_from_checkpoint, checkpoint_key
from pipeline_lib.config import load_config
from pipeline_lib.datasets import load_rgb
from pipeline_lib.datasets.stage import generate_demo
from pipeline_lib.features import FeatureStore, StaleFeaturesError, open_encoder_store, resize_image, store_key
from pipeline_lib.features.stage import extract_encoder
from pipeline_lib.hpf.stage import search_layers
from pipeline_lib.methods.stage import predict
from pipeline_lib.stage_io import dataset_root, load_dataset
from pipeline_lib.siamese.model import SiameseFlowNet
from pipeline_lib.training import save_weights

BASE = "efficientnet_lite0"


def trained_like(seed: int) -> SiameseFlowNet:
    """A SiameseFlowNet whose encoder differs from any fresh build: perturbed weights, updated BN statistics."""
    torch.manual_seed(seed)
    model = SiameseFlowNet(build_backbone(BASE, pretrained=False))
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))  # moves the BN running statistics
        for p in model.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def save(model, path):
    save_weights(model, path, {"backbone": BASE, "n_pairs": 1})
    learned = {"learned_from": {"pairs": [], "images": []}}  # as train_siamese records it: here, nothing
    (path.parent / "train_meta.json").write_text(json.dumps(learned))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    a, b = trained_like(0), trained_like(1)
    return {"a": save(a, d / "a" / "model.pt"), "b": save(b, d / "b" / "model.pt"), "model_a": a}


def test_checkpoint_backbone_rebuilds_the_exact_encoder(ckpt):
    enc = build_from_checkpoint(ckpt["a"])
    trained = ckpt["model_a"].backbone
    assert enc.name == f"siamese_{BASE}" and enc.layer_names == trained.layer_names and not enc.training
    x = torch.rand(2, 3, 72, 56, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got, want = enc(x), trained(x)
        fresh = build_backbone(BASE, pretrained=False)(x)
    for name in trained.layer_names:
        assert torch.equal(got[name], want[name]), name
    assert not torch.allclose(got[trained.layer_names[-1]], fresh[trained.layer_names[-1]])


def test_checkpoint_backbone_carries_the_trained_match_adapters(tmp_path):
    """A correlation-fusion network's match adapters become the rebuilt encoder's output adapters: the adapted
    layers give what the network matched with, every other layer (and the stages after them) stays as trained."""
    torch.manual_seed(0)
    model = SiameseFlowNet(build_backbone(BASE, pretrained=False), fusion="correlation", match_adapter=True).eval()
    with torch.no_grad():
        for adapter in model.match_adapters.values():
            adapter.out.weight.normal_(0, 0.1)
    enc = build_from_checkpoint(save(model, tmp_path / "m" / "model.pt"))
    assert set(enc.adapters) == set(model.match_layers)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, plain = enc(x), model.backbone(x)
        for name in enc.layer_names:
            want = model.match_adapters[name](plain[name]) if name in model.match_adapters else plain[name]
            assert torch.allclose(got[name], want, atol=1e-6), name
    assert not torch.allclose(got[model.match_layers[0]], plain[model.match_layers[0]])


def test_checkpoint_key_is_the_content_not_the_path(ckpt, tmp_path):
    copy = tmp_path / "elsewhere.pt"
    shutil.copy(ckpt["a"], copy)
    key = checkpoint_key(ckpt["a"])
    assert len(key) == 16 and int(key, 16) >= 0
    assert checkpoint_key(copy) == key and checkpoint_key(ckpt["b"]) != key


def test_bad_checkpoints_are_clear_errors_naming_the_file(ckpt, tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(BackboneError, match=f"checkpoint not found: {missing}"):
        build_from_checkpoint(missing)
    with pytest.raises(BackboneError, match=f"checkpoint not found: {missing}"):
        checkpoint_key(missing)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(BackboneError, match=f"{foreign} is not a Siamese flow network checkpoint"):
        build_from_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match=f"cannot read checkpoint {garbage}"):
        build_from_checkpoint(garbage)
    wrong = tmp_path / "wrong.pt"
    state = torch.load(ckpt["a"], weights_only=False)
    torch.save({"model": state["model"], "meta": {"backbone": "resnet50"}}, wrong)
    with pytest.raises(BackboneError, match=f"encoder weights of {wrong} do not fit backbone 'resnet50'"):
        build_from_checkpoint(wrong)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    path = d / "c.yaml"
    path.write_text(yaml.safe_dump({
        "results_dir": str(d / "results"), "device": "cpu",
        "dataset": {"name": "tiny_chain", "kind": "demo", "split": {"mode": "given"}},
        "demo": {"photos": ["rocket"], "images_per_category": 3, "image_size": 64},
        "image": {"longer_side": 64}, "hpf": {"max_layers": 1, "beam_width": 1}}))
    c = load_config(path)
    generate_demo(c, dataset_root(c))
    return c


@pytest.fixture(scope="module")
def encoder_store(cfg, ckpt):
    out = Path(cfg["results_dir"]) / "chain" / "features.zarr"
    extract_encoder(cfg, ckpt["a"], out)
    return out


def test_encoder_store_carries_the_key_and_the_encoder_features(cfg, ckpt, encoder_store):
    out = encoder_store
    store = open_encoder_store(out, ckpt["a"])
    assert store.attrs["checkpoint"] == {"path": str(ckpt["a"]), "sha256": checkpoint_key(ckpt["a"])}
    assert store.attrs["backbone"] == f"siamese_{BASE}"
    image_id = store.image_ids[0]
    rec = load_dataset(cfg).images[image_id]
    with torch.inference_mode():
        want = ckpt["model_a"].backbone(resize_image(load_rgb(rec.path), 64)[None])
    layer = store.attrs["default_layer"]
    np.testing.assert_allclose(store.get(image_id, [layer])[layer], want[layer][0].numpy(), rtol=1e-5, atol=1e-5)


def test_stale_store_and_stale_search_are_refused(cfg, ckpt, encoder_store, tmp_path):
    out = encoder_store
    key_a, key_b = checkpoint_key(ckpt["a"]), checkpoint_key(ckpt["b"])
    with pytest.raises(StaleFeaturesError, match=f"{out} was made from checkpoint key '{key_a}'.*{key_b}"):
        open_encoder_store(out, ckpt["b"])
    with pytest.raises(StaleFeaturesError):
        search_layers(cfg, out, tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "s.png",
                             checkpoint=ckpt["b"])
    assert not (tmp_path / "s.json").exists()
    # A search record of the right store passes; one made from another checkpoint is refused by predict.
    search_layers(cfg, out, tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "s.png", checkpoint=ckpt["a"])
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["checkpoint_sha256"] == key_a and record["backbone"] == f"siamese_{BASE}"
    predict(cfg, "gaur_hpf", out, tmp_path / "p.csv", tmp_path / "p.json", search_json=tmp_path / "s.json",
                   checkpoint=ckpt["a"])
    meta = json.loads((tmp_path / "p.json").read_text())
    assert meta["method"] == "gaur_hpf" and meta["params"]["checkpoint_sha256"] == key_a
    assert meta["params"]["layers"] == record["best_layers"] and meta["params"]["matcher"] == "rhm"
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**record, "checkpoint_sha256": key_b}))
    with pytest.raises(StaleFeaturesError, match=f"{stale} was made from checkpoint key '{key_b}'"):
        predict(cfg, "gaur_hpf", out, tmp_path / "q.csv", tmp_path / "q.json", search_json=stale,
                       checkpoint=ckpt["a"])
    with pytest.raises(ValueError, match="give its checkpoint"):
        predict(cfg, "gaur_hpf", out, tmp_path / "q.csv", tmp_path / "q.json", search_json=tmp_path / "s.json")
    assert not (tmp_path / "q.csv").exists()


def test_an_imagenet_store_is_not_an_encoder_store(tmp_path, ckpt):
    import zarr

    root = zarr.open_group(str(tmp_path / "imagenet.zarr"), mode="w")
    root.attrs.update({"image_ids": [], "layers": [], "backbone": BASE})
    assert store_key(FeatureStore(tmp_path / "imagenet.zarr")) is None
    with pytest.raises(StaleFeaturesError, match="checkpoint key None"):
        open_encoder_store(tmp_path / "imagenet.zarr", ckpt["a"])


def test_the_chain_starts_from_the_imagenet_encoder(tmp_path):
    """gaur_hpf's @init row is hpf: an untrained Siamese checkpoint rebuilds exactly the ImageNet backbone,
    so its features, layer search and RHM are those of the hpf row of the same table."""
    imagenet = build_backbone(BASE).eval()
    init = save(SiameseFlowNet(build_backbone(BASE)).eval(), tmp_path / "init.pt")
    enc = build_from_checkpoint(init)
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got, want = enc(x), imagenet(x)
    for name in imagenet.layer_names:
        assert torch.equal(got[name], want[name]), name
