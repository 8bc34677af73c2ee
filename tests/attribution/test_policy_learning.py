"""BEE learns the baseline family a metric prefers, on a model where that family is known analytically.

The model is linear in two features: logits (z, 0) with z = x1 + 4 x2 - 1.5, so the target's probability
is sigmoid(z), and every input has x1 > x2 and x1 < 4 x2. Integrated gradients of a linear model from a
baseline b is exactly w * (x - b), so the two arms give two feature orders:

- "zero" (b = 0): contributions (x1, 4 x2), feature 2 first;
- "mean" (b = the sample's mean m): (x1 - m, 4 (x2 - m)) = ((x1 - x2) / 2, -2 (x1 - x2)), feature 1 first.

RISE deletion (lower is better) sets features to zero: removing feature 2 first lowers the middle point
of the curve most, so "zero" is best. RISE insertion (higher is better) on tabular data reveals features
on the sample's mean: revealing feature 1 first raises the middle point most, so "mean" is best. A policy
that ignores the metric's direction learns the wrong family for deletion; one that never updates its
posterior stays at half and half.
"""

from __future__ import annotations

import pytest
import torch
from xaibench.metrics import compute

from xaibench.attribution.bee import BeeParams, pretrain
from xaibench.attribution.context import PROJECTION_SEED, embed

WEIGHT = torch.tensor([[1.0, 4.0], [0.0, 0.0]])
BIAS = torch.tensor([-1.5, 0.0])
ARMS = ("zero", "mean")
DIM = 4


def linear_model() -> torch.nn.Sequential:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(WEIGHT)
        model[0].bias.copy_(BIAS)
    return model.eval()


def inputs(n: int, seed: int) -> torch.Tensor:
    """x1 in [0.55, 1), x2 in [0.3, 0.45): x1 > x2 and x1 < 1 < 1.2 <= 4 x2 for every input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([0.55 + 0.45 * torch.rand(n, generator=generator),
                        0.3 + 0.15 * torch.rand(n, generator=generator)], dim=1)


def learned_shares(metric: str, context_layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pretrain on 64 inputs for 4 rounds; the per-input arm probabilities on 32 unseen inputs, and the
    training contexts the last chunk used."""
    model, x = linear_model(), inputs(64, seed=0)
    params = BeeParams(metric=metric, rounds=4, n_steps=1, arms=",".join(ARMS), context_dim=DIM,
                       context_layer=context_layer)
    outcome = pretrain(model, x, torch.zeros(64, dtype=torch.long), params, None, torch.Generator().manual_seed(0))
    assert outcome.families == ARMS
    fresh = embed(model, inputs(32, seed=1), context_layer, DIM)
    return outcome.policy.choice_probabilities(fresh, torch.Generator().manual_seed(2)), outcome.contexts


def test_the_families_scores_are_the_hand_computed_ones() -> None:
    """The premise: each arm's map scores as derived above, "zero" best for deletion, "mean" for insertion."""
    model, x = linear_model(), inputs(8, seed=0)
    target = torch.zeros(8, dtype=torch.long)
    x1, x2 = x[:, 0].double(), x[:, 1].double()
    m = (x1 + x2) / 2
    sig = torch.sigmoid
    z = x1 + 4 * x2 - 1.5

    def area(first: torch.Tensor, middle: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return (first / 2 + middle + last / 2) / 2  # RISE's normalised trapezoid over 3 points

    maps = {"zero": x * WEIGHT[0], "mean": (x - x.mean(1, keepdim=True)) * WEIGHT[0]}
    expected = {
        ("deletion", "zero"): area(sig(z), sig(x1 - 1.5), sig(torch.tensor(-1.5))),
        ("deletion", "mean"): area(sig(z), sig(4 * x2 - 1.5), sig(torch.tensor(-1.5))),
        ("insertion", "zero"): area(sig(5 * m - 1.5), sig(m + 4 * x2 - 1.5), sig(z)),
        ("insertion", "mean"): area(sig(5 * m - 1.5), sig(x1 + 4 * m - 1.5), sig(z)),
    }
    for (metric, arm), value in expected.items():
        scores = compute(metric, model, x, maps[arm], target=target).scores
        torch.testing.assert_close(scores, value, rtol=1e-6, atol=1e-7)
    assert (expected["deletion", "zero"] < expected["deletion", "mean"]).all()
    assert (expected["insertion", "mean"] > expected["insertion", "zero"]).all()


@pytest.mark.parametrize(("metric", "best"), [("deletion", "zero"), ("insertion", "mean")])
def test_the_policy_learns_the_family_the_metric_prefers(metric: str, best: str) -> None:
    shares, _ = learned_shares(metric)
    right = shares[:, ARMS.index(best)]
    assert right.mean() >= 0.95, shares.mean(0)
    assert (right > 0.5).all()  # every unseen input would most likely get the right family


def test_the_context_comes_from_the_named_layer() -> None:
    """context_layer "0" is the linear layer's output, the logits (z, 0), not its input x (the default)."""
    shares, contexts = learned_shares("deletion", context_layer="0")
    x = inputs(64, seed=0)
    projection = torch.randn((2, DIM - 1), dtype=torch.float64,
                             generator=torch.Generator().manual_seed(PROJECTION_SEED))
    logits = x.double() @ WEIGHT.double().T + BIAS.double()
    expected = torch.cat([torch.nn.functional.normalize(logits @ projection, dim=1),
                          torch.ones(64, 1, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(contexts, expected)
    assert not torch.allclose(contexts, embed(linear_model(), x, None, DIM))
    assert shares[:, ARMS.index("zero")].mean() >= 0.95


@pytest.mark.parametrize(("metric", "best"), [("deletion", "zero"), ("insertion", "mean")])
def test_a_learned_policy_orders_each_cycle(metric: str, best: str) -> None:
    """With cycles (the default) every family is drawn once per cycle; the learned policy decides the
    order, so a one-round run on unseen inputs takes the family the metric prefers."""
    from xaibench.attribution.bee import explore

    model, x = linear_model(), inputs(64, seed=0)
    params = BeeParams(metric=metric, rounds=4, n_steps=1, arms=",".join(ARMS), context_dim=DIM)
    learned = pretrain(model, x, torch.zeros(64, dtype=torch.long), params, None, torch.Generator().manual_seed(0))
    fresh = inputs(32, seed=1)
    one_round = BeeParams(metric=metric, rounds=1, n_steps=1, arms=",".join(ARMS), context_dim=DIM, finetune=False)
    outcome = explore(model, fresh, torch.zeros(32, dtype=torch.long), one_round, None,
                      torch.Generator().manual_seed(3), learned.policy)
    assert (outcome.arms == ARMS.index(best)).double().mean() >= 0.9, outcome.arms
