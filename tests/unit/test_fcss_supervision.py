"""Forward-backward consistency (Kim et al. Sec. 3.4) on a hand-made descriptor pair.

Scalar descriptors on 2x2 maps (flat, row-major):
    source [0.0, 1.0, 2.0, 5.0]    target [0.1, 1.1, 4.0, 10.0]
source -> target: s0->t0->s0 ok, s1->t1->s1 ok, s2->t1->s1 NOT, s3->t2->s3 ok
target -> source: t0->s0->t0 ok, t1->s1->t1 ok, t2->s3->t2 ok, t3->s3->t2 NOT
"""

import pytest
import torch

from pipeline_lib.fcss.supervision import (ConsistencySets, consistency_sets, mutual_nearest, nearest_neighbours,
                                          sample_pairs)

SRC = torch.tensor([0.0, 1.0, 2.0, 5.0]).view(1, 2, 2)
TRG = torch.tensor([0.1, 1.1, 4.0, 10.0]).view(1, 2, 2)
FULL = torch.ones(2, 2, dtype=torch.bool)


def as_set(src, trg):
    return set(zip(src.tolist(), trg.tolist()))


def test_positives_are_consistent_pairs_and_negatives_the_rest():
    sets = consistency_sets(SRC, TRG, FULL, FULL, tolerance_cells=0.0)  # Kim et al.'s exact reading
    assert as_set(sets.pos_src, sets.pos_trg) == {(0, 0), (1, 1), (3, 2)}
    assert as_set(sets.neg_src, sets.neg_trg) == {(2, 1), (3, 3)}


def test_one_direction_only_keeps_the_source_side_negatives():
    sets = consistency_sets(SRC, TRG, FULL, FULL, tolerance_cells=0.0, both_directions=False)
    assert as_set(sets.pos_src, sets.pos_trg) == {(0, 0), (1, 1), (3, 2)}
    assert as_set(sets.neg_src, sets.neg_trg) == {(2, 1)}


def test_masks_restrict_both_searches():
    # without s1 and t2: s2->t1->s2 becomes consistent; s3->t1->s2 and t3->s3->t1 are not
    src_mask = torch.tensor([[True, False], [True, True]])
    trg_mask = torch.tensor([[True, True], [False, True]])
    sets = consistency_sets(SRC, TRG, src_mask, trg_mask, tolerance_cells=0.0)
    assert as_set(sets.pos_src, sets.pos_trg) == {(0, 0), (2, 1)}
    assert as_set(sets.neg_src, sets.neg_trg) == {(3, 1), (3, 3)}
    for idx, mask in ((torch.cat([sets.pos_src, sets.neg_src]), src_mask),
                      (torch.cat([sets.pos_trg, sets.neg_trg]), trg_mask)):
        assert mask.reshape(-1)[idx].all()


def test_tolerance_accepts_back_matches_one_cell_away():
    # s2 (0, 1) returns to s1 (1, 0) and t3 (1, 1) to t2 (0, 1): both within one cell (Chebyshev)
    sets = consistency_sets(SRC, TRG, FULL, FULL, tolerance_cells=1.0)
    assert as_set(sets.pos_src, sets.pos_trg) == {(0, 0), (1, 1), (3, 2), (2, 1), (3, 3)}
    assert sets.n_neg == 0


def test_the_default_tolerance_is_the_releases_six_pixels_at_stride_four():
    # 1.5 cells: the one-cell-off back-matches of the exact reading's negatives become positives
    sets = consistency_sets(SRC, TRG, FULL, FULL)
    assert sets.n_neg == 0 and sets.n_pos == 5


def test_a_map_against_itself_is_all_positive_on_the_identity():
    desc = torch.randn(8, 5, 6, generator=torch.Generator().manual_seed(0))
    sets = consistency_sets(desc, desc, torch.ones(5, 6, dtype=torch.bool), torch.ones(5, 6, dtype=torch.bool))
    assert sets.n_neg == 0
    assert torch.equal(sets.pos_src, torch.arange(30)) and torch.equal(sets.pos_trg, torch.arange(30))


def test_empty_mask_gives_empty_sets():
    sets = consistency_sets(SRC, TRG, torch.zeros(2, 2, dtype=torch.bool), FULL)
    assert sets.n_pos == 0 and sets.n_neg == 0


def test_chunked_nearest_neighbours_match_brute_force():
    g = torch.Generator().manual_seed(1)
    q, r = torch.randn(50, 7, generator=g), torch.randn(40, 7, generator=g)
    torch.testing.assert_close(nearest_neighbours(q, r, chunk=8), torch.cdist(q, r).argmin(1))
    q_to_r, r_to_q = mutual_nearest(q, r, chunk=8)  # both directions from one chunked pass
    torch.testing.assert_close(q_to_r, torch.cdist(q, r).argmin(1))
    torch.testing.assert_close(r_to_q, torch.cdist(r, q).argmin(1))


def test_sampling_respects_fraction_availability_and_seed():
    sets = ConsistencySets(torch.arange(3), torch.arange(3), torch.arange(10, 30), torch.arange(10, 30))
    src, trg, labels = sample_pairs(sets, n_samples=10, positive_fraction=0.5,
                                    generator=torch.Generator().manual_seed(0))
    assert len(src) == 10 and int(labels.sum()) == 3  # only 3 positives exist; negatives fill up
    assert set(src[labels].tolist()) == {0, 1, 2} and all(s >= 10 for s in src[~labels].tolist())
    again = sample_pairs(sets, 10, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(src, again[0])
    assert len(sample_pairs(sets, 100, 0.5)[0]) == 23  # capped by what exists


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="masks"):
        consistency_sets(SRC, TRG, torch.ones(3, 2, dtype=torch.bool), FULL)
    with pytest.raises(ValueError, match="tolerance"):
        consistency_sets(SRC, TRG, FULL, FULL, tolerance_cells=-1)
