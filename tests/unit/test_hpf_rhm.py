"""Regularized Hough matching: known answers on synthetic hyperpixels."""

import pytest
import torch

from pipeline_lib.hpf import (
    appearance_similarity,
    assign,
    build_hough_space,
    hough_kernel,
    hough_votes,
    nn_match,
    offset_bin_ids,
    rhm,
    rhm_scores,
)
from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.kernels.hyperpixels import build_hyperpixels, flatten_hyperpixels

GRID = 10  # cells per side
STRIDE = 8  # px per cell
SIDE = GRID * STRIDE  # image side, px
SHIFT = (2, 1)  # planted translation in cells, (dx, dy)


def _translated_pair_with_decoys(seed=0, n_channels=64):
    """Target = source shifted by SHIFT; some source cells also appear verbatim at a wrong
    target cell (a repeated pattern) while their true match is a noisy copy.

    Returns src (N, C), trg (M, C), the decoyed source ids, all source ids with a true match,
    and the true target id of every source id.
    """
    g = torch.Generator().manual_seed(seed)
    dx, dy = SHIFT
    src = torch.randn(GRID, GRID, n_channels, generator=g)
    trg = torch.randn(GRID, GRID, n_channels, generator=g)
    trg[dy:, dx:] = src[: GRID - dy, : GRID - dx]
    decoyed = [(0, 0), (2, 3), (4, 4), (5, 1), (7, 6), (8, 2)]
    # decoy copies go to target cells that no source cell maps to (row 0 or columns 0-1)
    decoy_cells = [(0, 1), (0, 4), (0, 7), (3, 0), (6, 1), (9, 0)]
    for (i, j), (a, b) in zip(decoyed, decoy_cells):
        trg[a, b] = src[i, j]
        noise = torch.randn(n_channels, generator=g) * src[i, j].norm() / n_channels**0.5
        trg[i + dy, j + dx] = src[i, j] + 0.5 * noise  # cos ~ 0.9 < 1 = cos with the decoy
    ids = lambda cells: torch.tensor([i * GRID + j for i, j in cells])  # noqa: E731
    valid = [(i, j) for i in range(GRID - dy) for j in range(GRID - dx)]
    true_trg = torch.arange(GRID * GRID) + dy * GRID + dx
    return src.reshape(-1, n_channels), trg.reshape(-1, n_channels), ids(decoyed), ids(valid), true_trg


def test_appearance_similarity_is_relu_cos_cubed():
    src = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    trg = torch.tensor([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    expected = torch.tensor([[1.0, 0.5**1.5, 0.0], [0.0, 0.5**1.5, 0.0]])
    torch.testing.assert_close(appearance_similarity(src, trg), expected)
    torch.testing.assert_close(appearance_similarity(src, trg, exponent=1)[0, 1], torch.tensor(0.5**0.5))


def test_rhm_fixes_repeated_pattern_that_fools_nn():
    src, trg, decoyed, valid, true_trg = _translated_pair_with_decoys()
    pos = cell_centres(GRID, GRID, (SIDE, SIDE))
    nn = nn_match(src, trg)
    ours = assign(rhm(src, trg, pos, pos, (SIDE, SIDE)))
    nn_acc = (nn[decoyed] == true_trg[decoyed]).float().mean().item()
    rhm_acc = (ours[decoyed] == true_trg[decoyed]).float().mean().item()
    assert nn_acc < 1.0
    assert rhm_acc == 1.0
    assert torch.equal(ours[valid], true_trg[valid])  # and nothing else breaks


def test_identity_assignment_on_own_hyperpixels():
    g = torch.Generator().manual_seed(3)
    maps = [torch.randn(16, 12, 12, generator=g), torch.randn(32, 6, 6, generator=g)]
    feats = flatten_hyperpixels(build_hyperpixels(maps))
    pos = cell_centres(12, 12, (48, 48))
    identity = torch.arange(144)
    assert torch.equal(assign(rhm(feats, feats, pos, pos, (48, 48))), identity)
    assert torch.equal(nn_match(feats, feats), identity)


def test_offset_bin_ids_hand_computed():
    # 80x80 image, 10 bins per side over [-80, 80]: 16 px bins
    offsets = torch.tensor([[16.0, 8.0], [-80.0, -80.0], [79.9, 79.9], [500.0, -500.0], [0.0, 0.0]])
    bins = offset_bin_ids(offsets, (SIDE, SIDE), n_bins_per_side=10)
    # (16, 8): ix = floor(96/16) = 6, iy = floor(88/16) = 5 -> 5*10 + 6
    assert bins.tolist() == [56, 0, 99, 9, 55]


def test_offset_range_follows_both_image_sizes():
    # source 40 wide, target 120 wide: x range [-40, 120], 4 bins of 40 px
    bins = offset_bin_ids(torch.tensor([[-1.0, 0.0], [0.0, 0.0], [119.0, 0.0]]), (10, 40),
                          trg_image_size=(10, 120), n_bins_per_side=4)
    assert (bins % 4).tolist() == [0, 1, 3]


@pytest.mark.parametrize(("kernel", "size"), [("gaussian", 7), ("gaussian", 3), ("box", 1)])
def test_hough_maximum_in_bin_of_planted_offset(kernel, size):
    # (a wider box kernel turns an isolated peak into a plateau, so it has no unique maximum)
    src, trg, *_ = _translated_pair_with_decoys(seed=4)
    pos = cell_centres(GRID, GRID, (SIDE, SIDE))
    space = build_hough_space(pos, pos, (SIDE, SIDE), n_bins_per_side=10, kernel_size=size, kernel=kernel)
    votes = hough_votes(appearance_similarity(src, trg), space)
    assert votes.shape == (10, 10)
    # planted offset (dx, dy) = (16, 8) px -> bin 56 (see test_offset_bin_ids_hand_computed)
    assert votes.flatten().argmax().item() == 56


def test_hough_maximum_with_default_binning():
    src, trg, *_ = _translated_pair_with_decoys(seed=5)
    pos = cell_centres(GRID, GRID, (SIDE, SIDE))
    space = build_hough_space(pos, pos, (SIDE, SIDE))
    votes = hough_votes(appearance_similarity(src, trg), space)
    planted = torch.tensor([SHIFT[0] * STRIDE, SHIFT[1] * STRIDE], dtype=torch.float32)
    assert votes.flatten().argmax().item() == offset_bin_ids(planted, (SIDE, SIDE)).item()


def test_votes_conserve_mass_with_unit_kernel():
    sim = torch.rand(5, 7)
    pos_s, pos_t = torch.rand(5, 2) * 30, torch.rand(7, 2) * 30
    space = build_hough_space(pos_s, pos_t, (30, 30), n_bins_per_side=6, kernel_size=1)
    torch.testing.assert_close(hough_votes(sim, space).sum(), sim.sum())


def test_batched_rhm_equals_per_pair():
    g = torch.Generator().manual_seed(5)
    src, trg = torch.randn(3, 36, 8, generator=g), torch.randn(3, 36, 8, generator=g)
    pos = cell_centres(6, 6, (24, 24))
    space = build_hough_space(pos, pos, (24, 24))
    batched = rhm_scores(src, trg, space)
    assert batched.shape == (3, 36, 36)
    for b in range(3):
        torch.testing.assert_close(batched[b], rhm_scores(src[b], trg[b], space))


def test_dtype_follows_input_and_empty_inputs():
    pos = cell_centres(3, 3, (12, 12), dtype=torch.float64)
    feats = torch.randn(9, 4, dtype=torch.float64)
    assert rhm(feats, feats, pos, pos, (12, 12)).dtype == torch.float64
    empty = rhm(feats[:0], feats, pos[:0], pos, (12, 12))
    assert empty.shape == (0, 9)
    assert assign(empty).shape == (0,)
    assert nn_match(feats[:0], feats).shape == (0,)


def test_shape_errors():
    pos = cell_centres(3, 3, (12, 12))
    feats = torch.randn(9, 4)
    with pytest.raises(ValueError):
        appearance_similarity(feats, torch.randn(9, 5))
    with pytest.raises(ValueError):
        build_hough_space(pos[:, :1], pos, (12, 12))
    with pytest.raises(ValueError):
        rhm_scores(feats[:4], feats, build_hough_space(pos, pos, (12, 12)))
    with pytest.raises(ValueError):
        hough_kernel(4)
    with pytest.raises(ValueError):
        assign(torch.zeros(3, 0))


@pytest.mark.parametrize("grid", [True, False], ids=["grid", "scattered"])
def test_precomputed_bins_equal_direct_offset_binning(grid):
    g = torch.Generator().manual_seed(6)
    if grid:
        src_pos, trg_pos = cell_centres(9, 12, (36, 48)), cell_centres(7, 5, (28, 20))
    else:
        src_pos, trg_pos = torch.rand(40, 2, generator=g) * 48, torch.rand(30, 2, generator=g) * 20
    space = build_hough_space(src_pos, trg_pos, (36, 48), trg_image_size=(28, 20), n_bins_per_side=13)
    direct = offset_bin_ids(trg_pos[None] - src_pos[:, None], (36, 48), trg_image_size=(28, 20),
                            n_bins_per_side=13)
    assert torch.equal(space.bin_ids, direct)


def test_gradients_flow_and_match_no_grad_result():
    g = torch.Generator().manual_seed(7)
    src = torch.randn(16, 5, generator=g, dtype=torch.float64, requires_grad=True)
    trg = torch.randn(16, 5, generator=g, dtype=torch.float64)
    pos = cell_centres(4, 4, (16, 16), dtype=torch.float64)
    scores = rhm(src, trg, pos, pos, (16, 16))
    scores.sum().backward()
    assert src.grad is not None and torch.isfinite(src.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(rhm(src, trg, pos, pos, (16, 16)), scores.detach())


def test_rows_return_those_rows_of_the_full_scores():
    src, trg, *_ = _translated_pair_with_decoys()
    pos = cell_centres(GRID, GRID, (SIDE, SIDE))
    space = build_hough_space(pos, pos, (SIDE, SIDE))
    rows = torch.tensor([0, 7, 42, 99])
    torch.testing.assert_close(rhm_scores(src, trg, space, rows=rows), rhm_scores(src, trg, space)[rows])
