"""Meta-evaluation (MetaQuantus's tests): known answers on a planted linear model."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import wilcoxon

from xaibench.metrics.meta_evaluation import (
    MetaParams,
    MetricUnderTest,
    inter_consistency,
    intra_consistency,
    meta_evaluate,
    perturbed_inputs,
    perturbed_model,
    wilcoxon_p,
)

FEATURES, CLASSES, N = 12, 3, 40


@pytest.fixture(scope="module")
def planted() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear model f(x) = W x (no bias) with known weights, and inputs away from zero."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(FEATURES, CLASSES, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.randn(CLASSES, FEATURES, generator=gen))
    inputs = torch.randn(N, FEATURES, generator=gen).sign() * (0.5 + torch.rand(N, FEATURES, generator=gen))
    return model.eval(), inputs, model(inputs).argmax(dim=1)


def gradient_x_input(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return model.weight[target].detach() * inputs


def sign_flipped(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A second explainer: gradient x input with the sign of half the features flipped."""
    flip = torch.ones(FEATURES).index_fill(0, torch.arange(0, FEATURES, 2), -1.0)
    return gradient_x_input(model, inputs, target) * flip


EXPLAINERS = {"gradient_x_input": gradient_x_input, "sign_flipped": sign_flipped}


def planted_agreement(weights: torch.Tensor) -> MetricUnderTest:
    """The share of features whose attribution has the sign of their true contribution W[t] x to the
    planted model at the scored inputs: knows the right answer, so it should be reliable."""
    def score(_model: torch.nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
              _method: str) -> torch.Tensor:
        return (maps.sign() == (weights[target] * inputs).sign()).double().mean(dim=1)

    return MetricUnderTest(score=score, higher_is_better=True)


def ignores_attribution() -> MetricUnderTest:
    def score(_model: torch.nn.Module, inputs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
              _method: str) -> torch.Tensor:
        return torch.full((maps.shape[0],), 0.5, dtype=torch.float64)

    return MetricUnderTest(score=score, higher_is_better=True)


def test_perturbations_follow_their_definitions(planted: tuple) -> None:
    model, inputs, _ = planted
    noisy = perturbed_model(model, 0.5, torch.Generator().manual_seed(3))
    ratio = noisy.weight / model.weight
    expected = 1.0 + 0.5 * torch.randn(model.weight.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ratio, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(noisy.weight, model.weight)  # a copy moved; the model itself did not
    moved = perturbed_inputs(inputs, 0.25, torch.Generator().manual_seed(4), None)
    assert float((moved - inputs).abs().max()) <= 0.25 + 1e-6
    assert float((moved - inputs).abs().max()) > 0.2
    clipped = perturbed_inputs(inputs, 5.0, torch.Generator().manual_seed(4), (-1.0, 1.0))
    assert float(clipped.min()) == -1.0 and float(clipped.max()) == 1.0


def test_consistency_formulas_by_hand() -> None:
    q = torch.tensor([0.1, 0.4, 0.3, 0.9, 0.5, 0.2, 0.8], dtype=torch.float64)
    q_hat = torch.tensor([0.2, 0.1, 0.35, 0.1, 0.45, 0.0, 0.7], dtype=torch.float64)
    kept = torch.tensor([True, True, True, True, True, False, True])
    p = wilcoxon(q[kept].numpy(), q_hat[kept].numpy(), zero_method="zsplit").pvalue
    assert intra_consistency(q, q_hat, kept, adversary=False) == pytest.approx(p, abs=1e-15)
    assert intra_consistency(q, q_hat, kept, adversary=True) == pytest.approx(1 - p, abs=1e-15)
    assert wilcoxon_p(q, q.clone()) == 1.0
    assert math.isnan(wilcoxon_p(q[:0], q[:0]))
    # two methods x three samples; sample 2 is left out
    scores = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.4, 0.1]], dtype=torch.float64)
    after = torch.tensor([[0.3, 0.6, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    keep = torch.tensor([True, True, False])
    # sample 0: order (0, 1) before, (1, 0) after -> 0 of 2 positions; sample 1: (1, 0) both -> 2 of 2
    assert inter_consistency(scores, after, keep, adversary=False, higher_is_better=True) == 0.5
    # worse (lower, higher is better): method 0 sample 0 no (0.3 > 0.1), sample 1 no; method 1: 0.2 = 0.2 no,
    # 0.3 < 0.4 yes -> 1 of 4
    assert inter_consistency(scores, after, keep, adversary=True, higher_is_better=True) == 0.25
    assert inter_consistency(scores, after, keep, adversary=True, higher_is_better=False) == 0.5
    assert math.isnan(inter_consistency(scores, after, torch.zeros(3, dtype=torch.bool), False, True))


def test_a_metric_that_ignores_the_attribution_is_unreactive(planted: tuple) -> None:
    model, inputs, targets = planted
    result = meta_evaluate(model, inputs, targets, EXPLAINERS, {"constant": ignores_attribution()},
                           params=MetaParams(perturbations=3), seed=1, batch_size=16)
    scores = result["scores"]["constant"]
    assert scores["reactivity"] == 0.0
    assert scores["resilience"] == 1.0
    assert scores["mc"] == 0.5
    assert all(k > 0 for k in result["tests"]["model_adversary"]["constant"]["kept"])  # the test had samples


def test_a_planted_metric_is_reliable(planted: tuple) -> None:
    model, inputs, targets = planted
    result = meta_evaluate(model, inputs, targets, EXPLAINERS, {"planted": planted_agreement(model.weight.detach())},
                           params=MetaParams(perturbations=3), seed=1, batch_size=16)
    scores = result["scores"]["planted"]
    # tiny noise moves no sign: the scores are exactly unchanged, every p-value is 1, every order kept
    assert scores["resilience"] == 1.0
    for kind in ("model", "input"):
        # disruption moves the scores significantly (few samples change class under input noise: p ~ 0.1)
        assert scores[kind]["IAC_AR"] > 0.85, scores
        assert scores[kind]["IEC_AR"] > 0.6, scores  # and mostly down
    assert scores["mc"] > 0.9


def test_seeded_and_leaves_the_model_alone(planted: tuple) -> None:
    model, inputs, targets = planted
    before = model.weight.detach().clone()
    metrics = {"planted": planted_agreement(before)}
    first = meta_evaluate(model, inputs, targets, EXPLAINERS, metrics, params=MetaParams(perturbations=2), seed=5)
    again = meta_evaluate(model, inputs, targets, EXPLAINERS, metrics, params=MetaParams(perturbations=2), seed=5)
    other = meta_evaluate(model, inputs, targets, EXPLAINERS, metrics, params=MetaParams(perturbations=2), seed=6)
    assert first == again
    assert first["tests"] != other["tests"]
    assert torch.equal(model.weight, before)
