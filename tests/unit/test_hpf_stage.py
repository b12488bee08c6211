"""Hyperpixel Flow on a feature store: matcher, search space, split guard."""

import numpy as np
import pytest
import torch
import zarr

from pipeline_lib.config import validate_config
from pipeline_lib.features import FeatureStore
from pipeline_lib.hpf.matcher import HyperpixelMatcher, MatchParams
from pipeline_lib.hpf.search import search_space
from pipeline_lib.hpf.stage import search
from pipeline_lib.settings import DemoSection

SIDE, GRID = 64, 16  # 4 px per cell on the base layer


def write_store(path, feats_by_image, strides=(4.0, 8.0)):
    root = zarr.open_group(str(path), mode="w")
    names = [f"L{i}" for i in range(len(strides))]
    root.attrs.update({"image_ids": sorted(feats_by_image), "default_layer": "L0", "longer_side": SIDE,
                       "layers": [{"name": n, "channels": 8, "stride": s, "receptive_field": 4 * s}
                                  for n, s in zip(names, strides)]})
    g = root.create_group("images")
    for i, key in enumerate(sorted(feats_by_image)):
        sub = g.create_group(f"{i:05d}")
        sub.attrs.update({"image_id": key, "original_hw": [SIDE, SIDE], "resized_hw": [SIDE, SIDE]})
        for n, f in zip(names, feats_by_image[key]):
            sub.create_array(n, data=f.astype("float32"))
    return FeatureStore(path)


def test_matcher_recovers_a_translation_from_stored_layers(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(8, GRID, GRID))
    coarse = rng.normal(size=(8, GRID // 2, GRID // 2))
    shift = (2, 3)  # cells down, right on the base grid (coarse layer shifted by half)
    trg = [np.roll(base, shift, axis=(1, 2)), np.roll(coarse, (1, 1), axis=(1, 2))]
    store = write_store(tmp_path / "f.zarr", {"a": [base, coarse], "b": trg})
    matcher = HyperpixelMatcher(store, torch.device("cpu"), MatchParams(transfer_radius_px=2.0))
    kps = np.array([[22.5, 26.5], [34.5, 30.5]])  # cell centres away from the wrap-around border
    for kind in ("rhm", "nn"):
        out = matcher.transfer("a", "b", kps, (0,), kind)
        np.testing.assert_allclose(out, kps + [3 * 4, 2 * 4], atol=1e-4)
    assert matcher.layer_names((0, 1)) == ["L0", "L1"]
    with pytest.raises(ValueError, match="unknown matcher"):
        matcher.transfer("a", "b", kps, (0,), "sinkhorn")


def test_search_space_restricts_base_layers_by_stride():
    layers = [{"stride": s} for s in (2, 4, 8, 8, 16, 32)]
    sp = search_space(layers, 8, 16)
    assert sp.candidates == tuple(range(6)) and sp.base_candidates == (2, 3, 4)
    with pytest.raises(ValueError, match=r"strides are \[2.0, 4.0, 8.0, 16.0, 32.0\]"):
        search_space(layers, 64, 128)


def test_search_refuses_to_look_at_test_pairs(tmp_path):
    cfg = validate_config({"dataset": {"kind": "demo", "name": "x", "split": {"mode": "given"}},
                           "results_dir": str(tmp_path),
                           "hpf": {"search_split": "val"}, "evaluation": {"split": "all"}})
    from pipeline_lib.datasets import demo_synthesis

    demo_synthesis.generate(tmp_path / "x" / "data", DemoSection(photos=("coffee",), images_per_category=3,
                                                       image_size=64), seed=0)
    with pytest.raises(ValueError, match="overlaps the evaluation split"):
        search(cfg, tmp_path / "none.zarr", tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "s.png",
               torch.device("cpu"))


def test_predictor_refuses_a_search_record_of_other_features(tmp_path):
    import json

    from pipeline_lib.hpf.stage import predictor
    from pipeline_lib.methods.registry import method as registry_entry

    rng = np.random.default_rng(0)
    store = write_store(tmp_path / "f.zarr", {"a": [rng.normal(size=(8, GRID, GRID)),
                                                    rng.normal(size=(8, GRID // 2, GRID // 2))]})
    cfg = validate_config({"dataset": {"kind": "demo", "name": "x"}})
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"layer_names": ["L0", "L1"], "best_layers": ["L0", "L1"], "best_single_rhm": ["L0"],
                                "best_nn_layer": "L1"}))
    for method in ("hpf", "gaur_hpf"):  # gaur_hpf runs as hpf on another store
        _, params = predictor(registry_entry(method).variant, cfg, store, good, torch.device("cpu"))
        assert params == {"layers": ["L0", "L1"], "matcher": "rhm", "target": "cell"}
    _, params = predictor("hpf_single", cfg, store, good, torch.device("cpu"))
    assert params == {"layers": ["L0"], "matcher": "rhm", "target": "cell"}
    with pytest.raises(ValueError, match="unknown Hyperpixel Flow variant 'gaur_hpf'; known: nn_best_layer, hpf"):
        predictor("gaur_hpf", cfg, store, good, torch.device("cpu"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"layer_names": ["block04"], "best_layers": ["block04"],
                                 "best_single_rhm": ["block04"], "best_nn_layer": "block04"}))
    with pytest.raises(ValueError, match="was searched on other features"):
        predictor("hpf", cfg, store, other, torch.device("cpu"))
