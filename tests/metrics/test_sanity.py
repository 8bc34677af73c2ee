"""Sanity: on a model whose relevant features are known, metrics prefer the correct explanation.

The planted model: the logit of class 0 is ``relu(sum relu(x - 0.5) - LEAK * sum x)`` (bright pixels
are evidence for it, every pixel's brightness weak evidence against it, and the evidence cannot go below
zero); class 1 has a constant logit of half the object's evidence. Each image is a dim background
(values below 0.3) with one bright 4x4 square (value 1) at a random place, whose mask is the ground
truth. On these images the outer relu is inactive, so each pixel's exact share of ``logit_0`` against
a black image is ``relu(x - 0.5) - LEAK * x``: positive on the object, slightly negative on the
background. That is the correct attribution; the random one is uniform noise. (The floor makes the
order of insertion matter, which Arya et al.'s all-or-nothing monotonicity needs to tell orders apart:
on a purely additive model every order is monotone, or none is.) Every faithfulness and localisation metric must score the correct
attribution better (by its direction) than the random one on average; mprt and random_logit must
separate saliency from the ``random`` method.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from xaibench.metrics import METRICS, compute

from xaibench.attribution import attribute

N, SIDE, OBJECT = 8, 16, 4
LEAK = 0.02

# Parameters fitted to 16x16 images where a default is sized for larger ones.
PARAMS: dict[str, dict[str, Any]] = {
    "region_perturbation": {"patch": 4},
    "selectivity": {"patch": 4},
    "faithfulness_correlation": {"subset_size": 32},
    "pgi": {"k": 16},
    "pgu": {"k": 16},
}


class Planted(nn.Module):
    """logit_0 = relu(sum relu(x - 0.5) - LEAK * sum x); logit_1 = half the evidence of one object."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        evidence = torch.relu(torch.relu(flat - 0.5).sum(1) - LEAK * flat.sum(1))
        return torch.stack([evidence, torch.full_like(evidence, OBJECT * OBJECT * 0.25)], dim=1)


def planted_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((N, 1, SIDE, SIDE), generator=generator) * 0.3
    masks = torch.zeros((N, SIDE, SIDE), dtype=torch.bool)
    corners = torch.randint(0, SIDE - OBJECT + 1, (N, 2), generator=generator)
    for i, (row, col) in enumerate(corners.tolist()):  # test data, built once
        masks[i, row : row + OBJECT, col : col + OBJECT] = True
    x[:, 0][masks] = 1.0
    return x, masks


def contrast(name: str) -> tuple[float, float]:
    """Mean score of the correct and of the random attribution."""
    model = Planted()
    x, masks = planted_data()
    correct = torch.relu(x - 0.5) - LEAK * x
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    target = torch.zeros(N, dtype=torch.long)
    scores = []
    for attributions in (correct, noise):
        result = compute(name, model, x, attributions, target=target, masks=masks,
                         reference=correct, generator=torch.Generator().manual_seed(0),
                         **PARAMS.get(name, {}))
        scores.append(float(result.scores.nanmean()))
    return scores[0], scores[1]


def test_planted_model_is_what_the_docstring_says() -> None:
    x, masks = planted_data()
    logits = Planted()(x)
    assert (logits.argmax(1) == 0).all()
    assert torch.allclose(logits[:, 0], (torch.relu(x - 0.5) - LEAK * x).flatten(1).sum(1), atol=1e-5)
    assert (masks.flatten(1).sum(1) == OBJECT * OBJECT).all()


SCORED = [name for name in METRICS.list()
          if METRICS.get(name).category in ("faithfulness", "localisation")
          and "image" in METRICS.get(name).modalities]


@pytest.mark.parametrize("name", SCORED)
def test_correct_attribution_beats_random(name: str) -> None:
    correct, random = contrast(name)
    better = correct > random if METRICS.get(name).higher_is_better else correct < random
    assert better, f"{name}: correct {correct:.4g} vs random {random:.4g}"


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(128, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def explainer(method: str):
    def explain(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return attribute(method, model, x, target=target, generator=torch.Generator().manual_seed(0))

    return explain


@pytest.mark.parametrize("name", ["mprt", "random_logit"])
def test_randomisation_separates_saliency_from_random(name: str) -> None:
    model = SmallCNN().eval()
    x = torch.rand((N, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(2))
    target = model(x).argmax(1)
    scores = {}
    for method in ("saliency", "random"):
        a = explainer(method)(model, x, target)
        result = compute(name, model, x, a, target=target, explainer=explainer(method),
                         generator=torch.Generator().manual_seed(0))
        scores[method] = float(result.scores.mean())
    # lower is better for both: explanations must change when the model or the class changes
    assert not METRICS.get(name).higher_is_better
    assert scores["saliency"] < scores["random"] - 0.3, scores
