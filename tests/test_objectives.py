"""Losses and predictions per task type, against hand-computed values."""

from __future__ import annotations

import math

import torch

from mtdnn.model.objectives import rank_predictions, ranking_loss
from mtdnn.tasks.registry import builtin_tasks


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_ranking_loss_two_groups_with_gamma():
    # group 7: candidates 1.0 (+), 2.0, 0.5 ; group 3: 0.3, -1.0 (+); rows interleaved
    scores = torch.tensor([1.0, 0.3, 2.0, -1.0, 0.5])
    labels = torch.tensor([1, 0, 0, 1, 0])
    groups = torch.tensor([7, 3, 7, 3, 7])
    gamma = 2.0
    g7 = -(gamma * 1.0 - _lse([gamma * 1.0, gamma * 2.0, gamma * 0.5]))
    g3 = -(gamma * -1.0 - _lse([gamma * 0.3, gamma * -1.0]))
    expected = (g7 + g3) / 2
    got = ranking_loss(scores, labels, groups, gamma)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    # gamma = 1 is a different number
    g7_1 = -(1.0 - _lse([1.0, 2.0, 0.5]))
    g3_1 = -(-1.0 - _lse([0.3, -1.0]))
    assert math.isclose(ranking_loss(scores, labels, groups).item(), (g7_1 + g3_1) / 2, rel_tol=1e-6)


def test_ranking_loss_two_positives_and_group_without_positive():
    scores = torch.tensor([0.2, 1.5, -0.4, 3.0, 0.0])
    labels = torch.tensor([1, 1, 0, 0, 0])
    groups = torch.tensor([0, 0, 0, 1, 1])  # group 1 has no positive: ignored in the mean
    expected = -(_lse([0.2, 1.5]) - _lse([0.2, 1.5, -0.4]))
    assert math.isclose(ranking_loss(scores, labels, groups).item(), expected, rel_tol=1e-6)
    # no positive anywhere: a zero loss that still backpropagates
    s = torch.tensor([0.1, 0.2], requires_grad=True)
    loss = ranking_loss(s, torch.tensor([0, 0]), torch.tensor([0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert s.grad is not None


def test_ranking_loss_gradient_matches_softmax():
    s = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    ranking_loss(s, torch.tensor([1, 0, 0]), torch.tensor([0, 0, 0])).backward()
    p = torch.softmax(torch.tensor([1.0, 2.0, 0.5]), 0)
    assert torch.allclose(s.grad, p - torch.tensor([1.0, 0, 0]), atol=1e-6)


def test_rank_predictions_best_per_group_ties_to_first():
    scores = torch.tensor([0.1, 5.0, 3.0, 3.0, -1.0, 2.0, 2.0, 0.0])
    groups = torch.tensor([0, 1, 0, 0, 1, 2, 2, 3])
    # group 0: rows 0, 2, 3 -> tie 3.0 at rows 2 and 3 -> row 2; group 1: rows 1, 4 -> row 1;
    # group 2: rows 5, 6 tie -> row 5; group 3: row 7 alone
    expected = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    assert torch.equal(rank_predictions(scores, groups), expected)


def test_kind_loss_classification_regression_and_ranking():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    tasks = builtin_tasks()
    got = tasks["rte"].kind.loss(tasks["rte"], logits, {"labels": labels})
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    out = torch.tensor([[1.0], [3.0]])
    got = tasks["stsb"].kind.loss(tasks["stsb"], out, {"labels": torch.tensor([2.0, 0.5])})
    assert math.isclose(got.item(), ((1 - 2) ** 2 + (3 - 0.5) ** 2) / 2, rel_tol=1e-6)
    got = tasks["qnli_rank"].kind.loss(tasks["qnli_rank"], torch.tensor([[1.0], [2.0]]),
                                        {"labels": torch.tensor([0, 1]), "groups": torch.tensor([0, 0])})
    assert math.isclose(got.item(), _lse([1.0, 2.0]) - 2.0, rel_tol=1e-6)
