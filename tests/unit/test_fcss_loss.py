"""Correspondence contrastive loss (Kim et al. Eq. 13) on hand-computed cases."""

import pytest
import torch

from pipeline_lib.fcss.loss import MARGIN, contrastive_loss


def pair_at(d2: float):
    """Two 2-D descriptors at squared distance d2."""
    a = torch.tensor([[0.0, 0.0]])
    b = torch.tensor([[d2 ** 0.5, 0.0]])
    return a, b


def test_positive_at_distance_zero_costs_nothing():
    a = torch.tensor([[0.6, 0.8]])
    assert contrastive_loss(a, a.clone(), torch.tensor([True])).item() == 0.0


def test_negative_beyond_the_margin_costs_nothing():
    a, b = pair_at(MARGIN + 0.05)
    assert contrastive_loss(a, b, torch.tensor([False])).item() == 0.0


def test_negative_inside_the_margin_costs_the_gap():
    a, b = pair_at(0.05)
    loss = contrastive_loss(a, b, torch.tensor([False]))
    assert loss.item() == pytest.approx((MARGIN - 0.05) / 2)  # 1/(2N) with N = 1
    assert loss.item() > 0


def test_mixed_batch_matches_equation_13():
    a = torch.zeros(4, 2)
    b = torch.tensor([[0.3, 0.0], [0.1, 0.0], [0.2, 0.2], [1.0, 0.0]])  # d2 = 0.09, 0.01, 0.08, 1.0
    labels = torch.tensor([True, False, False, False])
    expected = (0.09 + (MARGIN - 0.01) + (MARGIN - 0.08) + 0.0) / (2 * 4)
    assert contrastive_loss(a, b, labels, margin=MARGIN).item() == pytest.approx(expected, rel=1e-6)


def test_gradients_pull_positives_together_and_push_close_negatives_apart():
    a = torch.zeros(2, 2, requires_grad=True)
    b = torch.tensor([[0.2, 0.0], [0.2, 0.0]])
    contrastive_loss(a, b, torch.tensor([True, False])).backward()
    assert a.grad[0, 0] < 0  # descending moves a[0] towards b[0] (+x)
    assert a.grad[1, 0] > 0  # descending moves a[1] away from b[1] (-x)


def test_empty_batch_is_zero_and_backpropagates():
    a = torch.zeros(0, 3, requires_grad=True)
    loss = contrastive_loss(a, torch.zeros(0, 3), torch.zeros(0, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="both be"):
        contrastive_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels"):
        contrastive_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3, dtype=torch.bool))
