"""Optimal-transport matching (SCOT): Sinkhorn's marginals, known assignments, and the OT matchers in the
keypoint transfer."""

import pytest
import torch

from pipeline_lib.kernels.dense_match import HoughCache, MatchParams, match_transfer
from pipeline_lib.kernels.grids import cell_centres
from pipeline_lib.kernels.optimal_transport import sinkhorn, transport_similarity
from pipeline_lib.kernels.rhm import assign, build_hough_space, hough_regularize, nn_match, rhm_scores
from tests.unit.test_hpf_rhm import GRID, SIDE, _translated_pair_with_decoys


def test_rows_meet_their_marginal_and_columns_converge_to_theirs():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(30, 20, generator=g, dtype=torch.float64)
    mu = torch.rand(30, generator=g, dtype=torch.float64)
    mu /= mu.sum()
    col_err = []
    for iterations in (1, 5, 50):
        plan = sinkhorn(cost, 0.1, iterations, mu=mu)
        torch.testing.assert_close(plan.sum(-1), mu)
        col_err.append((plan.sum(-2) - 1 / 20).abs().max().item())
        assert (plan > 0).all()
    assert col_err[0] > col_err[1] > col_err[2] and col_err[2] < 1e-10


def test_two_sources_that_nn_sends_to_one_target_are_sent_to_two():
    """cos: source 0 prefers target 0 (0.95 vs 0.2); source 1 prefers it too (0.9) but target 1 is almost as good
    (0.85): NN collides, the plan at SCOT's epsilon assigns a permutation."""
    sim = torch.tensor([[0.95, 0.2], [0.9, 0.85]])
    assert assign(sim).tolist() == [0, 0]
    plan = sinkhorn(1 - sim, epsilon=0.05, iterations=20)
    assert assign(plan).tolist() == [0, 1]


def test_at_a_small_epsilon_the_plan_is_the_optimal_permutation():
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(12, generator=g)
    cost = torch.rand(12, 12, generator=g, dtype=torch.float64) * 0.5 + 0.5
    cost[torch.arange(12), perm] = 0.0
    plan = sinkhorn(cost, epsilon=0.03, iterations=200)
    torch.testing.assert_close(plan, torch.zeros_like(plan).index_put_((torch.arange(12), perm),
                                                                          torch.tensor(1 / 12, dtype=torch.float64)),
                               atol=1e-6, rtol=0)


def test_transport_similarity_rows_sum_to_one_and_batches_equal_single_pairs():
    g = torch.Generator().manual_seed(2)
    src, trg = torch.randn(2, 15, 8, generator=g), torch.randn(2, 11, 8, generator=g)
    sim = transport_similarity(src, trg, exponent=1.0)
    torch.testing.assert_close(sim.sum(-1), torch.ones(2, 15))
    for b in range(2):
        torch.testing.assert_close(transport_similarity(src[b], trg[b]), transport_similarity(src, trg)[b])


def test_ot_with_the_hough_prior_fixes_the_repeated_pattern_that_fools_nn():
    src, trg, decoyed, valid, true_trg = _translated_pair_with_decoys()
    pos = cell_centres(GRID, GRID, (SIDE, SIDE))
    space = build_hough_space(pos, pos, (SIDE, SIDE))
    assert (nn_match(src, trg)[decoyed] != true_trg[decoyed]).any()
    ours = assign(hough_regularize(transport_similarity(src, trg), space))
    assert torch.equal(ours[valid], true_trg[valid])
    # hough_regularize is what rhm_scores applies to ReLU(cos)^3
    torch.testing.assert_close(rhm_scores(src, trg, space), hough_regularize(
        torch.nn.functional.normalize(src, dim=-1).matmul(torch.nn.functional.normalize(trg, dim=-1).T)
        .clamp_min(0).pow(3), space))


@pytest.mark.parametrize("matcher", ["ot", "ot_rhm"])
def test_a_pure_translation_moves_keypoints_by_it_with_the_ot_matchers(matcher):
    src, trg, _, _, _ = _translated_pair_with_decoys(seed=4)
    g = torch.Generator().manual_seed(5)
    trg = torch.randn(GRID, GRID, src.shape[1], generator=g)
    grid = src.reshape(GRID, GRID, -1)
    trg[1:, 2:] = grid[:-1, :-2]  # shift (dx, dy) = (2, 1) cells, no decoys
    stride = SIDE // GRID
    kps = torch.tensor([[20.0, 20.0], [36.0, 44.0], [44.0, 28.0]])
    out = match_transfer(src, trg.reshape(GRID * GRID, -1), kps, (SIDE, SIDE), (SIDE, SIDE), (GRID, GRID),
                         (GRID, GRID), HoughCache(MatchParams(), torch.device("cpu")), stride / 2, matcher)
    torch.testing.assert_close(out, kps + torch.tensor([2.0 * stride, 1.0 * stride]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        sinkhorn(torch.zeros(3, 3), epsilon=0.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, M\)"):
        sinkhorn(torch.zeros(3))
    with pytest.raises(FloatingPointError, match="raise hpf.ot_epsilon"):
        sinkhorn(torch.full((3, 3), 2.0), epsilon=0.01)
    with pytest.raises(ValueError, match="ot_rhm"):
        match_transfer(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(1, 2), (16, 16), (16, 16), (2, 2), (2, 2),
                       HoughCache(MatchParams(), torch.device("cpu")), 4.0, "sinkhorn")


def test_the_in_place_path_gives_the_same_plan_and_gradients_still_flow():
    g = torch.Generator().manual_seed(6)
    src, trg = torch.randn(9, 5, generator=g), torch.randn(7, 5, generator=g)
    cost = torch.rand(9, 7, generator=g)
    torch.testing.assert_close(sinkhorn(cost.clone(), overwrite=True), sinkhorn(cost))
    src.requires_grad_(True)
    sim = transport_similarity(src, trg)
    sim.sum().backward()
    assert src.grad is not None and torch.isfinite(src.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(transport_similarity(src, trg), sim.detach())
