"""FCSS network: layer choice by stride, descriptor shapes and norms, frozen normalisation statistics."""

import pytest
import torch

from pipeline_lib.backbones import LayerInfo, build_backbone, layers_by_stride, measure_strides
from pipeline_lib.fcss.model import FCSS, PAPER_LAYER_STRIDES, FCSSConfig, build_fcss

# VGG-19 up to conv3-4 (the paper's network): strides of the conv stages, pooling joined to the next stage
VGG19_TABLE = [LayerInfo(n, 0, s, 0) for n, s in (
    ("conv1_1", 1), ("conv1_2", 1), ("conv2_1", 2), ("conv2_2", 2),
    ("conv3_1", 4), ("conv3_2", 4), ("conv3_3", 4), ("conv3_4", 4))]

LITE0_LAYERS = ("block00", "block01", "block02")  # strides 2, 4, 4 on efficientnet_lite0


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return build_backbone("efficientnet_lite0", pretrained=False)


def test_layers_by_stride_reproduces_the_paper_on_vgg19():
    assert layers_by_stride(VGG19_TABLE, PAPER_LAYER_STRIDES) == ("conv2_2", "conv3_2", "conv3_4")
    # VGG-16 has no conv3_4
    assert layers_by_stride(VGG19_TABLE[:7], PAPER_LAYER_STRIDES) == ("conv2_2", "conv3_2", "conv3_3")


def test_layers_by_stride_on_lite0_and_too_few_layers(lite0):
    strides = measure_strides(lite0, probe_size=64)
    # EfficientNet-Lite0: stem and block00 at stride 2, then 2, 2, 6 and 5 blocks at strides 4, 8, 16, 32
    expected = [2.0] * 2 + [4.0] * 2 + [8.0] * 2 + [16.0] * 6 + [32.0] * 5
    assert list(strides) == list(lite0.layer_names) and list(strides.values()) == expected
    assert layers_by_stride(strides, PAPER_LAYER_STRIDES) == LITE0_LAYERS
    assert build_fcss(FCSSConfig(n_patterns=4), lite0).layers == LITE0_LAYERS  # empty layers = by stride
    with pytest.raises(ValueError, match="stride 4"):
        layers_by_stride(VGG19_TABLE[:4], PAPER_LAYER_STRIDES)


@pytest.mark.parametrize("hw, map_hw", [((64, 64), (32, 32)), ((72, 96), (36, 48))])
def test_descriptor_shapes_and_unit_norm(lite0, hw, map_hw):
    model = build_fcss(FCSSConfig(layers=LITE0_LAYERS, n_patterns=16), lite0)
    with torch.no_grad():
        desc = model(torch.rand(2, 3, *hw))
        levels = model.layer_outputs(torch.rand(1, 3, *hw))
        up = model(torch.rand(1, 3, *hw), out_hw=hw)
    assert desc.shape == (2, 3 * 16, *map_hw) and model.descriptor_dim == 48
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2, *map_hw))
    assert [tuple(x.shape) for x in levels] == [(1, 16, *map_hw)] * 3
    assert up.shape == (1, 48, *hw)


def test_explicit_layers_and_config_validation(lite0):
    model = build_fcss(FCSSConfig(layers=("block01", "block03"), n_patterns=8, init_shift_std_cells=(2.0,)), lite0)
    assert model.layers == ("block01", "block03") and model.last_layer == "block03"
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 16, 16, 16)
    with pytest.raises(ValueError, match="unknown layer"):
        FCSS(lite0, ["conv9"])
    with pytest.raises(ValueError, match="odd"):
        FCSSConfig(pool_size=4)


def test_patterns_are_seeded_and_backbone_statistics_stay_frozen(lite0):
    a = build_fcss(FCSSConfig(layers=LITE0_LAYERS, n_patterns=4, seed=3), lite0)
    b = build_fcss(FCSSConfig(layers=LITE0_LAYERS, n_patterns=4, seed=3), lite0)
    torch.testing.assert_close(a.css[0].src_offsets, b.css[0].src_offsets)
    a.train()
    assert a.training and a.css[0].training and not a.backbone.training
    frozen = build_fcss(FCSSConfig(layers=LITE0_LAYERS, n_patterns=4, train_backbone=False),
                        build_backbone("efficientnet_lite0", False))
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.css.parameters())
