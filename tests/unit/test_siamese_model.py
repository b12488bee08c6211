"""SiameseFlowNet: layer choice from the measured layer table, shapes, weight sharing, freezing; retrieval."""

import pytest
import torch

from pipeline_lib.backbones import build_backbone, describe_layers
from pipeline_lib.siamese.model import SiameseFlowNet, auto_layers
from pipeline_lib.siamese.predict import global_descriptor, retrieve_top_k


# One intra-op thread: on a shared, oversubscribed CPU, spinning OpenMP threads made these tests ~5x slower
# (measured 138 s vs 24 s for test_siamese_model.py at load 10 on 2 cores).
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return build_backbone("efficientnet_lite0", pretrained=False)


def randomise_head(m):
    """The flow head starts at zero (identity flow); give it weights to see what reaches it."""
    torch.nn.init.normal_(m.head.weight, std=0.01, generator=torch.Generator().manual_seed(0))
    return m


@pytest.fixture(scope="module")
def infos(lite0):
    return describe_layers(lite0, probe_size=64)  # measured once, shared (construction would redo it)


@pytest.fixture(scope="module")
def model(lite0):
    torch.manual_seed(0)
    with torch.no_grad():  # construction measures the layer table with gradients even under no_grad
        return randomise_head(SiameseFlowNet(lite0)).eval()


def test_initial_flow_is_zero(lite0, infos):
    with torch.no_grad():
        m = SiameseFlowNet(lite0, layer_infos=infos)
        assert torch.count_nonzero(m(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))) == 0


def test_auto_layers_are_the_last_of_each_stride(lite0, infos, model):
    layers = model.layers
    assert layers == auto_layers(lite0)
    strides = [next(i.stride for i in infos if i.name == n) for n in layers]
    assert strides == sorted(set(i.stride for i in infos))
    for name, stride in zip(layers, strides):
        same = [i.name for i in infos if i.stride == stride]
        assert name == same[-1]
    assert layers[-1] == lite0.layer_names[-1]  # the deepest layer is the bottleneck


@pytest.mark.parametrize("hw", [(64, 64), (72, 96)])
def test_flow_at_input_resolution(model, hw):
    src, trg = torch.rand(2, 3, *hw), torch.rand(2, 3, *hw)
    with torch.no_grad():
        flow = model(src, trg)
    assert flow.shape == (2, *hw, 2) and flow.dtype == torch.float32 and torch.isfinite(flow).all()


def test_weights_are_shared_and_both_images_matter(lite0, model):
    assert model.backbone is lite0
    n_backbone = sum(p.numel() for p in lite0.parameters())
    n_rest = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
    assert sum(p.numel() for p in model.parameters()) == n_backbone + n_rest  # one encoder, not two
    g = torch.Generator().manual_seed(1)
    src, trg = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        a, b = model(src, trg), model(src, torch.rand(1, 3, 64, 64, generator=g))
    assert not torch.allclose(a, b)


def test_fine_tuning_reaches_the_encoder_and_freezing_stops_it(infos):
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", pretrained=False)
    x = torch.rand(1, 3, 32, 32)
    tuned = randomise_head(SiameseFlowNet(backbone, layer_infos=infos)).train()
    tuned(x, x.flip(-1)).square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
    backbone.zero_grad(set_to_none=True)
    frozen = randomise_head(SiameseFlowNet(backbone, freeze_backbone=True, layer_infos=infos)).train()
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not frozen.backbone.training and frozen.decoder.training
    frozen(x, x.flip(-1)).square().mean().backward()
    assert frozen.head.weight.grad is not None and all(p.grad is None for p in backbone.parameters())


def test_explicit_layers_target_skips_and_errors(lite0, infos):
    m = SiameseFlowNet(lite0, skip_layers=("block02", "block10"), decoder_channels=(16,), skip_target=True,
                       layer_infos=infos)
    assert m.strides == (4, 16)
    with torch.no_grad():
        assert m(torch.rand(1, 3, 40, 56), torch.rand(1, 3, 40, 56)).shape == (1, 40, 56, 2)
    with pytest.raises(ValueError, match="unknown layer"):
        SiameseFlowNet(lite0, skip_layers=("nope",))
    with pytest.raises(ValueError, match="shallow to deep"):
        SiameseFlowNet(lite0, skip_layers=("block10", "block02"))
    with pytest.raises(ValueError, match="decoder_channels"):
        SiameseFlowNet(lite0, skip_layers=("block02", "block10"), decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="layer_infos"):
        SiameseFlowNet(lite0, layer_infos=infos[:3])
    with pytest.raises(ValueError, match="one size"):
        m(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 64, 64))


@pytest.mark.gpu
def test_runs_on_cuda(lite0, infos):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    m = SiameseFlowNet(lite0, layer_infos=infos).to("cuda")
    out = m(torch.rand(1, 3, 72, 96, device="cuda"), torch.rand(1, 3, 72, 96, device="cuda"))
    assert out.device.type == "cuda" and out.shape == (1, 72, 96, 2)
    lite0.to("cpu")


def test_retrieve_top_k_hand_made():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.1]])
    idx = retrieve_top_k(torch.tensor([1.0, 0.0]), gallery, k=3)
    assert idx.tolist() == [0, 3, 2]  # cosine, scale-free: [2, .1] is nearly parallel
    assert retrieve_top_k(torch.tensor([1.0, 0.0]), gallery, k=10).shape == (4,)
    assert retrieve_top_k(torch.tensor([1.0, 0.0]), gallery[:0], k=3).shape == (0,)


def test_near_duplicate_is_ranked_first(lite0):
    g = torch.Generator().manual_seed(3)
    # smooth random "photos" so that pooled features differ between images
    photos = torch.nn.functional.interpolate(torch.rand(8, 3, 8, 8, generator=g), size=(64, 64), mode="bicubic",
                                             align_corners=False).clamp(0, 1)
    query = photos[5]
    near_dup = (query + 0.02 * torch.randn(query.shape, generator=g)).clamp(0, 1)
    gallery = torch.cat([photos[:5], photos[6:], near_dup[None]])  # near duplicate at index 7
    with torch.no_grad():
        feats = lite0(torch.cat([query[None], gallery]))[lite0.default_layer]
    pooled = global_descriptor(feats)
    assert pooled.shape == (9, feats.shape[1])
    top = retrieve_top_k(feats[0], feats[1:], k=3)
    assert top[0].item() == 7 and len(top) == 3


def correlation_model(lite0, infos, **kw):
    with torch.no_grad():
        return SiameseFlowNet(lite0, layer_infos=infos, fusion="correlation", **kw).eval()


def test_correlation_match_recovers_a_planted_cell_shift(lite0, infos):
    m = correlation_model(lite0, infos, match_layers=("block04",))
    g = torch.Generator().manual_seed(0)
    src = torch.randn(1, 40, 8, 8, generator=g)  # block04: 40 channels, an 8 x 8 grid of a 64 px input
    trg = torch.roll(src, shifts=1, dims=3)  # target cell (i, j + 1) shows source cell (i, j)
    flow, conf = m.match(m.correlate({"block04": src}, {"block04": trg}), (64, 64))
    assert flow.shape == (1, 2, 8, 8) and conf.shape == (1, 1, 8, 8)
    assert torch.allclose(flow[0, 0, :, :7], torch.tensor(8.0), atol=1e-3)  # one 8 px cell right
    assert torch.allclose(flow[0, 1], torch.tensor(0.0), atol=1e-3)
    assert torch.allclose(conf, torch.tensor(1.0), atol=1e-5)  # cosine of identical hyperpixels


def test_untrained_correlation_model_outputs_the_matched_flow(lite0, infos):
    m = correlation_model(lite0, infos)
    assert m.match_layers == m.layers[-3:-1]  # auto: the two skip layers above the bottleneck
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = m(x, x)
        feats = m.encode(x)
        coarse, _ = m.match(m.correlate(feats, feats), (64, 64))
    expect = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(out, expect.permute(0, 2, 3, 1), atol=1e-4)  # zero head: residual 0
    assert out.abs().max() < 2.0  # an image matched to itself stays (soft argmax: sub-cell)
    with pytest.raises(ValueError, match="fusion"):
        SiameseFlowNet(lite0, layer_infos=infos, fusion="sum")
    with pytest.raises(ValueError, match="match_layers"):
        SiameseFlowNet(lite0, layer_infos=infos, fusion="correlation", match_layers=("nope",))
    with pytest.raises(ValueError, match="match_adapter.*fusion 'correlation'"):
        SiameseFlowNet(lite0, layer_infos=infos, fusion="stack", match_adapter=True)


def test_match_adapter_is_the_identity_until_trained(lite0, infos):
    """Zero-initialised residual adapters: the untrained network equals the one without them, and a
    matching loss on the correlation reaches the adapters."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    plain = correlation_model(lite0, infos)
    torch.manual_seed(0)
    adapted = correlation_model(lite0, infos, match_adapter=True)
    assert set(adapted.match_adapters) == set(adapted.match_layers)
    with torch.no_grad():
        assert torch.equal(plain(x[:1], x[1:]), adapted(x[:1], x[1:]))
    flow, corr = adapted.forward_with_correlation(x[:1], x[1:])
    assert corr.shape[0] == 1 and corr.ndim == 5
    corr.sum().backward()
    for adapter in adapted.match_adapters.values():
        assert adapter.out.weight.grad is not None and adapter.out.weight.grad.abs().sum() > 0
    adapted.zero_grad(set_to_none=True)
