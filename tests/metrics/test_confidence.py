"""Average drop and increase in confidence: exact values on a hand-built model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from xaibench.metrics.base import compute
from xaibench.metrics.confidence import soft_mask


class SumLogit(nn.Module):
    """Two classes: logit 0 = sum(x), logit 1 = 0, so p(class 0) = sigmoid(sum x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = x.flatten(1).sum(1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_tabular_exact_values() -> None:
    x = torch.tensor([[2.0, 1.0], [2.0, -1.0], [2.0, 1.0]])
    # masks (1, 0), (1, 0) and, for the constant map, (0, 0)
    a = torch.tensor([[3.0, 1.0], [5.0, 1.0], [1.0, 1.0]])
    adp = compute("average_drop", SumLogit(), x, a, target=0).scores
    pic = compute("increase_in_confidence", SumLogit(), x, a, target=0).scores
    expected_adp = [100 * (sigmoid(3) - sigmoid(2)) / sigmoid(3), 0.0, 100 * (sigmoid(3) - 0.5) / sigmoid(3)]
    torch.testing.assert_close(adp, torch.tensor(expected_adp, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert pic.tolist() == [0.0, 100.0, 0.0]


def test_image_mask_is_channel_summed_and_broadcast() -> None:
    # channel sums (4, 0) give m = (1, 0) in both channels: sum x falls from 4.5 to 1.5
    x = torch.tensor([[[[1.0, 2.0]], [[0.5, 1.0]]]])
    a = torch.tensor([[[[3.0, 0.0]], [[1.0, 0.0]]]])
    assert soft_mask(a).tolist() == [[[[1.0, 0.0]]]]
    adp = compute("average_drop", SumLogit(), x, a, target=0).scores
    assert adp.item() == pytest.approx(100 * (sigmoid(4.5) - sigmoid(1.5)) / sigmoid(4.5), rel=1e-5)


def test_soft_mask_scales_to_unit_interval_per_sample() -> None:
    a = torch.tensor([[[-2.0, 0.0, 2.0]], [[1.0, 3.0, 2.0]]])
    assert soft_mask(a).tolist() == [[[0.0, 0.5, 1.0]], [[0.0, 1.0, 0.5]]]


def test_adp_nan_only_when_probability_underflows() -> None:
    x = torch.tensor([[-200.0, 0.0], [1.0, 0.0]])  # p(class 0) = sigmoid(-200) = 0 in float32
    adp = compute("average_drop", SumLogit(), x, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), target=0).scores
    assert math.isnan(adp[0].item()) and adp[1].item() == 0.0
