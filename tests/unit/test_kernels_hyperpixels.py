"""Hyperpixel construction: shapes, per-layer normalisation, resizing, errors, cell centres."""

import pytest
import torch

from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.kernels.hyperpixels import build_hyperpixels, flatten_hyperpixels


def _maps(generator, batch=None):
    shapes = [(8, 12, 16), (4, 6, 8), (6, 3, 4)]
    lead = () if batch is None else (batch,)
    return [torch.randn(*lead, *s, generator=generator) * (10.0**i) for i, s in enumerate(shapes)]


def test_shape_and_per_layer_unit_norm():
    g = torch.Generator().manual_seed(0)
    maps = _maps(g)
    hyper = build_hyperpixels(maps)
    assert hyper.shape == (8 + 4 + 6, 12, 16)
    # every layer block has unit norm at every cell, whatever its activation scale
    for block in torch.split(hyper, [8, 4, 6], dim=0):
        torch.testing.assert_close(block.norm(dim=0), torch.ones(12, 16))
    torch.testing.assert_close(hyper.norm(dim=0), torch.full((12, 16), 3.0).sqrt())


def test_base_map_is_not_resized_only_normalised():
    g = torch.Generator().manual_seed(1)
    maps = _maps(g)
    hyper = build_hyperpixels(maps)
    torch.testing.assert_close(hyper[:8], maps[0] / maps[0].norm(dim=0, keepdim=True))


def test_constant_coarse_map_stays_constant_after_upsampling():
    base = torch.randn(3, 10, 10)
    coarse = torch.tensor([3.0, 4.0]).view(2, 1, 1).expand(2, 5, 5).contiguous()
    hyper = build_hyperpixels([base, coarse])
    torch.testing.assert_close(hyper[3:], torch.tensor([0.6, 0.8]).view(2, 1, 1).expand(2, 10, 10))


def test_batched_equals_per_image():
    g = torch.Generator().manual_seed(2)
    maps = _maps(g, batch=3)
    batched = build_hyperpixels(maps)
    assert batched.shape == (3, 18, 12, 16)
    for b in range(3):
        torch.testing.assert_close(batched[b], build_hyperpixels([m[b] for m in maps]))


def test_dtype_follows_input():
    maps = [torch.randn(4, 6, 6, dtype=torch.float64), torch.randn(2, 3, 3, dtype=torch.float64)]
    assert build_hyperpixels(maps).dtype == torch.float64


@pytest.mark.parametrize(
    "maps",
    [
        [],
        [torch.randn(6, 6)],
        [torch.randn(4, 6, 6), torch.randn(1, 4, 3, 3)],
        [torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3)],
    ],
    ids=["empty", "2d", "mixed-ndim", "batch-mismatch"],
)
def test_bad_shapes_raise(maps):
    with pytest.raises(ValueError):
        build_hyperpixels(maps)


def test_empty_batch_and_empty_channels():
    out = build_hyperpixels([torch.zeros(0, 4, 6, 6), torch.zeros(0, 2, 3, 3)])
    assert out.shape == (0, 6, 6, 6)
    out = build_hyperpixels([torch.randn(4, 6, 6), torch.zeros(0, 3, 3)])
    assert out.shape == (4, 6, 6)


def test_flatten_is_row_major_like_cell_centres():
    hyper = torch.arange(2 * 2 * 3, dtype=torch.float32).view(2, 2, 3)
    flat = flatten_hyperpixels(hyper)
    assert flat.shape == (6, 2)
    torch.testing.assert_close(flat[4], hyper[:, 1, 1])  # row i=1, col j=1 -> index 1*3+1


def test_cell_centres_known_values():
    # 2x4 map over a 20x40 image: cells are 10x10 px; pixel centres at integers (package convention)
    c = cell_centres(2, 4, (20, 40))
    assert c.shape == (8, 2)
    torch.testing.assert_close(c[0], torch.tensor([4.5, 4.5]))
    torch.testing.assert_close(c[1], torch.tensor([14.5, 4.5]))
    torch.testing.assert_close(c[4], torch.tensor([4.5, 14.5]))
    torch.testing.assert_close(c[7], torch.tensor([34.5, 14.5]))
    # a single cell sits at the image centre
    torch.testing.assert_close(cell_centres(1, 1, (9, 5))[0], torch.tensor([2.0, 4.0]))
    assert cell_centres(0, 4, (20, 40)).shape == (0, 2)
    with pytest.raises(ValueError):
        cell_centres(2, 2, (0, 10))
