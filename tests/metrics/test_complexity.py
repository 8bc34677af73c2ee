"""Complexity metrics: sparseness, complexity, effective_complexity.

Cross-checked against Quantus 0.6.0 with its preprocessing off (the metrics take |a| themselves), on
single- and two-channel images (all three read every element, channels included); analytic values on
hand-built maps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from xaibench.metrics import compute

from xaibench.core.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore")
QUANTUS_OFF = {"normalise": False, "abs": True, "disable_warnings": True, "display_progressbar": False}


def scores(name: str, attributions: torch.Tensor, **params: object) -> np.ndarray:
    result = compute(name, None, torch.zeros_like(attributions), attributions, target=0, **params)
    return result.scores.numpy()


def quantus_scores(cls_name: str, attributions: torch.Tensor, **options: object) -> np.ndarray:
    import quantus

    metric = getattr(quantus, cls_name)(**{**QUANTUS_OFF, **options})
    a = attributions.numpy().copy()
    out = metric(model=None, x_batch=np.zeros_like(a), y_batch=np.zeros(len(a), dtype=int), a_batch=a)
    return np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize("channels", [1, 2])
def test_against_quantus(channels: int) -> None:
    a = torch.rand((4, channels, 6, 6), generator=torch.Generator().manual_seed(3)) * 2 - 1
    np.testing.assert_allclose(scores("sparseness", a), quantus_scores("Sparseness", a), rtol=1e-4)
    np.testing.assert_allclose(scores("complexity", a), quantus_scores("Complexity", a), rtol=1e-4)
    ours = scores("effective_complexity", a, eps=0.3, relative=False)
    np.testing.assert_array_equal(ours, quantus_scores("EffectiveComplexity", a, eps=0.3))
    assert 0 < ours.min() and ours.max() < a[0].numel()  # the threshold splits the elements


def test_analytic_values() -> None:
    n = 12
    one_hot = torch.zeros(1, n)
    one_hot[0, 5] = -3.0
    uniform = torch.full((1, n), 0.5)
    maps = torch.cat([one_hot, uniform])
    np.testing.assert_allclose(scores("sparseness", maps), [(n - 1) / n, 0.0], atol=1e-12)
    np.testing.assert_allclose(scores("complexity", maps), [0.0, math.log(n)], atol=1e-12)
    np.testing.assert_array_equal(scores("effective_complexity", maps), [1, n])
    # sorted magnitudes 0, 0, 2, 2 with weights -3, -1, 1, 3: Gini (2 + 6) / (4 * 4) = 1/2; entropy log 2
    half = torch.tensor([[0.0, 2.0, 0.0, -2.0]])
    np.testing.assert_allclose(scores("sparseness", half), [0.5])
    np.testing.assert_allclose(scores("complexity", half), [math.log(2)])


def test_empty_attribution() -> None:
    zero = torch.zeros(2, 3, 4, 4)
    assert np.isnan(scores("sparseness", zero)).all()
    assert np.isnan(scores("complexity", zero)).all()
    np.testing.assert_array_equal(scores("effective_complexity", zero), [0, 0])


def test_effective_complexity_threshold_is_per_sample() -> None:
    # the second sample is the first scaled by 1e-3: per-sample relative thresholds count alike,
    # Quantus's default normalisation divides by the batch maximum and counts fewer in the second
    first = torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    a = torch.cat([first, first * 1e-3])
    ours = scores("effective_complexity", a, eps=0.2)
    assert ours[0] == ours[1] == (first > 0.2 * first.max()).sum().item()
    theirs = quantus_scores("EffectiveComplexity", a, eps=0.2, normalise=True)
    assert theirs[0] == ours[0] and theirs[1] == 0


def test_scale_invariance_and_bad_eps() -> None:
    a = torch.randn((3, 16), generator=torch.Generator().manual_seed(1))
    for name in ("sparseness", "complexity", "effective_complexity"):
        np.testing.assert_allclose(scores(name, a * 256.0), scores(name, a), rtol=1e-12)
    with pytest.raises(InputError):
        scores("effective_complexity", a, eps=-1.0)
