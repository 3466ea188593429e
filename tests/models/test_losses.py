"""Hand-computed cases for the shared losses (emofuse.models.losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from emofuse.models.base import IGNORE_INDEX
from emofuse.models.losses import (
    focal_loss,
    pairwise_symmetric_kl,
    supervised_contrastive,
    symmetric_kl,
)


def test_symmetric_kl_identical_is_zero():
    x = torch.randn(5, 4)
    assert symmetric_kl(x, x).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant


def test_symmetric_kl_two_class_known_value():
    # p = softmax([0, 0]) = (.5, .5); q = softmax([log 3, 0]) = (.75, .25)
    p = torch.tensor([[0.0, 0.0]])
    q = torch.tensor([[math.log(3.0), 0.0]])
    expected = (0.5 - 0.75) * (math.log(0.5) - math.log(0.75)) + (0.5 - 0.25) * (
        math.log(0.5) - math.log(0.25)
    )  # = 0.25 * log 3
    assert symmetric_kl(p, q).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.25 * math.log(3.0))
    # equals KL(p||q) + KL(q||p) from torch
    lp, lq = F.log_softmax(p, -1), F.log_softmax(q, -1)
    ref = F.kl_div(lq, lp, log_target=True, reduction="batchmean") + F.kl_div(
        lp, lq, log_target=True, reduction="batchmean"
    )
    assert symmetric_kl(p, q).item() == pytest.approx(ref.item(), rel=1e-6)
    assert symmetric_kl(p, q, reduction="none").shape == (1,)


def test_symmetric_kl_extreme_logits_finite():
    p = torch.tensor([[1000.0, -1000.0]])
    q = torch.tensor([[-1000.0, 1000.0]])
    assert torch.isfinite(symmetric_kl(p, q))


def test_pairwise_symmetric_kl_masks_and_pair_mean():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[math.log(3.0), 0.0], [5.0, -5.0]])
    c = a.clone()
    k = 0.25 * math.log(3.0)
    # row 1 masked out of b: pairs (a,b) -> k, (a,c) -> 0, (b,c) -> k  => mean 2k/3
    masks = [torch.tensor([True, True]), torch.tensor([True, False]), torch.tensor([True, True])]
    assert pairwise_symmetric_kl([a, b, c], masks).item() == pytest.approx(2 * k / 3, rel=1e-6)
    # a pair with no shared row is skipped, not averaged as zero
    masks = [torch.tensor([True, False]), torch.tensor([False, True])]
    assert pairwise_symmetric_kl([a, b], masks).item() == 0.0
    assert pairwise_symmetric_kl([a, b]).item() > k  # unmasked: row 1 adds a large term


def test_focal_gamma_zero_equals_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(7, 4)
    target = torch.tensor([0, 1, 2, 3, IGNORE_INDEX, 1, 0])
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX).item(), rel=1e-6
    )
    assert focal_loss(logits, target, gamma=0.0, weight=w).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE_INDEX).item(), rel=1e-6
    )


def test_focal_known_value_and_down_weighting():
    # one row, p_y = 0.75: focal(gamma=2) = -(0.25)^2 log 0.75
    logits = torch.tensor([[math.log(3.0), 0.0]])
    target = torch.tensor([0])
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(
        -(0.25**2) * math.log(0.75), rel=1e-6
    )
    # focal is below CE, more so for confident rows
    ce = F.cross_entropy(logits, target).item()
    assert focal_loss(logits, target, gamma=1.0).item() < ce


def test_focal_all_ignored_is_zero_with_grad():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = focal_loss(logits, torch.full((3,), IGNORE_INDEX), gamma=2.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_supcon_known_value_single_pair():
    # one pair: each view's only other view is its positive -> log(1) = 0
    z = torch.randn(1, 4)
    assert supervised_contrastive(z, torch.randn(1, 4), torch.tensor([2])).item() == pytest.approx(
        0.0
    )


def test_supcon_two_pairs_hand_computed():
    # views: a0=(1,0), a1=(0,1), b0=(1,0), b1=(0,1); labels 0, 1; temperature 1
    za = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zb = za.clone()
    # anchor a0: others a1 (sim 0), b0 (sim 1, positive), b1 (sim 0)
    expected = -(1.0 - math.log(math.e + 2.0))
    got = supervised_contrastive(za, zb, torch.tensor([0, 1]), temperature=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # same label: all three other views are positives, mean of their log-probs
    got_same = supervised_contrastive(za, zb, torch.tensor([0, 0]), temperature=1.0)
    lse = math.log(math.e + 2.0)
    assert got_same.item() == pytest.approx(-((1.0 - lse) + 2 * (0.0 - lse)) / 3, rel=1e-6)


def test_supcon_aligned_lower_than_shuffled_and_ignores_rows():
    torch.manual_seed(0)
    labels = torch.arange(8) % 4
    za = torch.randn(8, 16)
    zb = za + 0.05 * torch.randn(8, 16)
    aligned = supervised_contrastive(za, zb, labels, temperature=0.1)
    shuffled = supervised_contrastive(za, zb[torch.randperm(8)], labels, temperature=0.1)
    assert aligned.item() < shuffled.item()
    # IGNORE_INDEX rows do not change the value
    extra_a = torch.cat([za, torch.randn(3, 16)])
    extra_b = torch.cat([zb, torch.randn(3, 16)])
    extra_y = torch.cat([labels, torch.full((3,), IGNORE_INDEX)])
    got = supervised_contrastive(extra_a, extra_b, extra_y, temperature=0.1)
    assert got.item() == pytest.approx(aligned.item(), rel=1e-6)


def test_supcon_numerically_stable_and_graph_connected():
    za = torch.randn(6, 8, requires_grad=True)
    zb = torch.randn(6, 8)
    loss = supervised_contrastive(za, zb, torch.tensor([0, 1, 0, 1, 2, 2]), temperature=1e-3)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(za.grad).all()
    none = supervised_contrastive(za, zb, torch.full((6,), IGNORE_INDEX))
    assert none.item() == 0.0 and none.requires_grad


def test_bad_arguments():
    with pytest.raises(ValueError):
        supervised_contrastive(torch.randn(2, 3), torch.randn(3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        supervised_contrastive(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), 0.0)
    with pytest.raises(ValueError):
        focal_loss(torch.randn(2, 3), torch.tensor([0, 1]), gamma=-1.0)
    with pytest.raises(ValueError):
        symmetric_kl(torch.randn(2, 3), torch.randn(2, 4))
