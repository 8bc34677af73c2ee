"""Scores: exact values on models where influence is known, consistency between the score kinds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.influence.helpers import autograd_gradients, tiny_cnn, tiny_mlp
from xaibench.influence import (
    ClassificationTask,
    FitConfig,
    Influence,
    ScoreConfig,
    fit_factors,
)
from xaibench.influence.tracking import select_modules

TASK = ClassificationTask()


def data(n: int, shape: tuple[int, ...] = (6,), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def test_identity_scores_are_gradient_dot_products():
    model, (x, y), (q, t) = tiny_mlp(), data(9), data(4, seed=1)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="identity"))
    scores = Influence(model, TASK, factors, ScoreConfig(batch_size=4)).pairwise(q, t, x, y)
    modules = select_modules(model)
    train, query = (autograd_gradients(model, modules, *pair, TASK.loss) for pair in ((x, y), (q, t)))
    for index, name in enumerate(modules):
        expected = query[name].flatten(1) @ train[name].flatten(1).T
        torch.testing.assert_close(scores[index].double(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("strategy", ["identity", "diagonal", "kfac", "ekfac", "exact"])
def test_self_influence_is_the_diagonal_of_pairwise_scores(strategy):
    model, (x, y) = tiny_cnn(), data(7, (2, 7, 7))
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy=strategy, batch_size=3))
    influence = Influence(model, TASK, factors, ScoreConfig(batch_size=3))
    pairwise = influence.pairwise(x, y, x, y)  # the loss measurement of an example is its training loss
    own = influence.self_influence(x, y)
    torch.testing.assert_close(own, torch.diagonal(pairwise, dim1=1, dim2=2), rtol=1e-4, atol=1e-6)
    assert (own.sum(0) > 0).all()  # a positive definite curvature


def test_scores_do_not_depend_on_the_batch_size():
    model, (x, y), (q, t) = tiny_cnn(), data(10, (2, 7, 7)), data(3, (2, 7, 7), seed=2)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="ekfac"))
    one = Influence(model, TASK, factors, ScoreConfig(batch_size=10)).pairwise(q, t, x, y)
    other = Influence(model, TASK, factors, ScoreConfig(batch_size=3, chunk_size=4)).pairwise(q, t, x, y)
    torch.testing.assert_close(one, other, rtol=1e-6, atol=1e-9)


def test_query_compression_keeps_the_top_singular_directions():
    model, (x, y), (q, t) = tiny_cnn(), data(6, (2, 7, 7)), data(2, (2, 7, 7), seed=3)
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="kfac"))
    full = Influence(model, TASK, factors).pairwise(q, t, x, y)
    lossless = Influence(model, TASK, factors, ScoreConfig(rank=100)).pairwise(q, t, x, y)
    torch.testing.assert_close(lossless, full, rtol=1e-5, atol=1e-8)
    influence = Influence(model, TASK, factors, ScoreConfig(rank=1))
    conditioned = Influence(model, TASK, factors).query_side(q, t)
    train = autograd_gradients(model, influence.modules, x, y, TASK.loss)
    for index, name in enumerate(influence.modules):
        u, s, vh = torch.linalg.svd(conditioned[name])
        rank_one = s[:, :1, None] * u[:, :, :1] @ vh[:, :1, :]
        expected = rank_one.flatten(1) @ train[name].flatten(1).T
        torch.testing.assert_close(influence.pairwise(q, t, x, y)[index].double(), expected, rtol=1e-5, atol=1e-8)


def train_logistic(x: torch.Tensor, y: torch.Tensor, decay: float, weights: torch.Tensor) -> nn.Linear:
    """Minimise sum_i w_i CE_i + N decay / 2 ||theta||^2 to high precision."""
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], 3).double()
    optimiser = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-13,
                                  tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        losses = nn.functional.cross_entropy(model(x), y, reduction="none")
        penalty = sum(p.pow(2).sum() for p in model.parameters())
        loss = (weights * losses).sum() + len(x) * decay / 2 * penalty
        loss.backward()
        return loss

    for _ in range(3):
        optimiser.step(closure)
    return model


def test_exact_influence_predicts_retraining_with_an_upweighted_example():
    # Softmax regression: the Gauss-Newton matrix is the Hessian, so with damping = the weight decay
    # -score / N is the derivative of the query loss with respect to the training example's weight.
    (x, y), (q, t) = data(30, (4,)), data(2, (4,), seed=5)
    decay, eps, m = 0.05, 1e-4, 7
    model = train_logistic(x, y, decay, torch.ones(30, dtype=torch.float64))
    factors = fit_factors(model, TASK, x, y, FitConfig(strategy="exact"))
    scores = Influence(model, TASK, factors, ScoreConfig(damping=decay)).pairwise(q, t, x, y).sum(0)
    bump = torch.zeros(30, dtype=torch.float64)
    bump[m] = eps
    losses = []
    for sign in (1, -1):
        retrained = train_logistic(x, y, decay, 1 + sign * bump)
        losses.append(nn.functional.cross_entropy(retrained(q), t, reduction="none").detach())
    derivative = (losses[0] - losses[1]) / (2 * eps)
    torch.testing.assert_close(derivative, -scores[:, m].double() / len(x), rtol=2e-3, atol=1e-8)


def test_margin_measurement_is_minus_the_margin():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    targets = torch.tensor([0, 2])
    margins = [2.0 - torch.logsumexp(torch.tensor([0.5, -1.0]), 0), 1.0 - torch.logsumexp(torch.tensor([0.0, 3.0]), 0)]
    assert torch.isclose(ClassificationTask("margin").measurement(logits, targets), -(margins[0] + margins[1]))
