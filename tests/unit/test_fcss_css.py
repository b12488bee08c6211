"""The CSS layer: known self-similarities, the invariances its formula implies, shift equivariance,
and gradients reaching the learned shifts and bandwidth."""

import pytest
import torch

from pipeline_lib.fcss.css import CSSLayer, self_similarity, shift_grid, shifted


def layer_with_offsets(src, trg, normalise_input=False, pool_size=3):
    layer = CSSLayer(n_patterns=len(src), normalise_input=normalise_input, pool_size=pool_size)
    with torch.no_grad():
        layer.src_offsets.copy_(torch.tensor(src, dtype=torch.float32))
        layer.trg_offsets.copy_(torch.tensor(trg, dtype=torch.float32))
    return layer


def random_feat(c=5, h=20, w=24, seed=0):
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_shifted_reads_the_offset_cell_and_clamps_at_the_border():
    feat = torch.arange(12.0).view(1, 1, 3, 4)  # value = 4 * row + col
    out = shifted(feat, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]]))
    assert out.shape == (1, 1, 3, 3, 4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([[1.0, 2, 3, 3], [5, 6, 7, 7], [9, 10, 11, 11]]))
    torch.testing.assert_close(out[0, 0, 1], torch.tensor([[4.0, 5, 6, 7], [8, 9, 10, 11], [8, 9, 10, 11]]))
    torch.testing.assert_close(out[0, 0, 2, 0], torch.tensor([0.5, 1.5, 2.5, 3.0]))  # bilinear half cell


def test_self_similarity_of_a_ramp_is_the_squared_step():
    feat = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 2, 4, 6).contiguous()  # two channels, A = column
    dist = self_similarity(feat, torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
    # interior: 2 channels x (2 columns)^2 = 8; the last two columns clamp at the border
    torch.testing.assert_close(dist[0, 0, :, :4], torch.full((4, 4), 8.0))
    torch.testing.assert_close(dist[0, 0, 0, 4:], torch.tensor([2.0, 0.0]))


def test_output_is_invariant_to_an_additive_constant_in_the_features():
    torch.manual_seed(0)
    layer = CSSLayer(n_patterns=16, init_shift_std_cells=3.0, normalise_input=False)  # fractional shifts
    feat = random_feat()
    offset = torch.randn(1, 5, 1, 1) * 10  # per-channel constant, the same at every cell
    with torch.no_grad():
        torch.testing.assert_close(layer(feat + offset), layer(feat), atol=2e-5, rtol=1e-4)


def test_input_normalisation_trades_additive_for_multiplicative_invariance():
    torch.manual_seed(0)
    layer = CSSLayer(n_patterns=16, init_shift_std_cells=3.0, normalise_input=True)
    feat = random_feat()
    gain = torch.rand(1, 1, 20, 24) * 5 + 0.1  # any positive gain per cell
    with torch.no_grad():
        torch.testing.assert_close(layer(feat * gain), layer(feat), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(layer(feat + 3.0), layer(feat), atol=1e-3)  # an honest limit, not a claim


def test_output_changes_under_a_shift_and_follows_it_in_the_interior():
    layer = layer_with_offsets([[2.0, 0.0], [0.0, -1.0], [1.0, 1.0]], [[0.0, 0.0], [-2.0, 1.0], [-1.0, 0.0]])
    feat = random_feat(h=30, w=30)
    dy, dx = 3, 2
    moved = torch.roll(feat, shifts=(dy, dx), dims=(2, 3))
    with torch.no_grad():
        out, out_moved = layer(feat), layer(moved)
    assert not torch.allclose(out, out_moved, atol=1e-3)
    margin = 2 + 1 + max(dy, dx)  # largest offset + pool radius + the roll's wrap-around
    inner = (slice(None), slice(None), slice(margin, 30 - margin), slice(margin, 30 - margin))
    expected = torch.roll(out, shifts=(dy, dx), dims=(2, 3))
    torch.testing.assert_close(out_moved[inner], expected[inner], atol=1e-4, rtol=1e-4)  # float32 grid rounding


def test_output_shape_upsampling_and_unit_norm():
    layer = CSSLayer(n_patterns=8)
    feat = random_feat(c=3, h=9, w=12)
    out = layer(feat)
    assert out.shape == (1, 8, 9, 12)
    up = layer(feat, out_hw=(18, 24))
    assert up.shape == (1, 8, 18, 24)
    torch.testing.assert_close(up.norm(dim=1), torch.ones(1, 18, 24))


def test_gradients_reach_the_shifts_and_the_bandwidth():
    torch.manual_seed(0)
    layer = CSSLayer(n_patterns=4, init_shift_std_cells=2.0)
    layer(random_feat()).pow(2).mean().backward()
    layer.zero_grad()
    (layer(random_feat())[:, 0] * torch.randn(1, 20, 24)).sum().backward()
    assert layer.src_offsets.grad.abs().sum() > 0 and layer.trg_offsets.grad.abs().sum() > 0
    assert layer.log_lambda.grad is not None and layer.log_lambda.grad.abs() > 0


def test_self_similarity_gradcheck_float64():
    feat = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    src = torch.tensor([[0.3, -0.4], [1.2, 0.7]], dtype=torch.float64, requires_grad=True)
    trg = torch.tensor([[-0.6, 0.2], [0.45, -1.3]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(self_similarity, (feat, src, trg), eps=1e-6, atol=1e-5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="odd"):
        CSSLayer(pool_size=2)
    with pytest.raises(ValueError, match="lambda_init"):
        CSSLayer(lambda_init=0.0)
    with pytest.raises(ValueError, match="B, C, h, w"):
        CSSLayer(n_patterns=2)(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="P, 2"):
        shift_grid(3, 3, torch.zeros(3))
