"""Removal-curve metrics: cross-checks against Quantus 0.6.0 and exact curves on hand-built models."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from xaibench.metrics.base import METRICS, compute

from xaibench.attribution.blur import gaussian_blur
from xaibench.core.errors import InputError, UnknownNameError

quantus = pytest.importorskip("quantus")

QUANTUS_OFF = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}
TARGET = torch.tensor([0, 1, 2, 0])


class SumLogit(nn.Module):
    """Two classes: logit 0 = sum(weights * x), logit 1 = 0, so p(class 0) = sigmoid(weights . x)."""

    def __init__(self, weights: list[float] | torch.Tensor) -> None:
        super().__init__()
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x.flatten(1) * self.weights.flatten()).sum(1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def sigmoid(values: list[float]) -> torch.Tensor:
    return torch.tensor([1 / (1 + math.exp(-v)) for v in values], dtype=torch.float64)


def rise_auc(curve: torch.Tensor) -> float:
    """RISE's released auc: (sum - first / 2 - last / 2) / (points - 1)."""
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (curve.numel() - 1))


# ---------------------------------------------------------------------------------------------
# Quantus 0.6.0 cross-checks (one channel, so Quantus's flattened indices are our pixels / steps)


def one_channel_case(modality: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    shape = {"image": (1, 8, 8), "sequence": (1, 16), "tabular": (6,)}[modality]
    if modality == "image":
        model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(192, 3))
    elif modality == "sequence":
        model = nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3))
    else:
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.rand((4, *shape), generator=torch.Generator().manual_seed(1))
    a = torch.randn((4, *shape), generator=torch.Generator().manual_seed(2))  # no ties
    return model.eval(), x, a


def run_quantus(metric_cls: type, model: nn.Module, x: torch.Tensor, a: torch.Tensor, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = metric_cls(**QUANTUS_OFF, **kwargs)
        curves = metric(model=model, x_batch=x.numpy(), y_batch=TARGET.numpy(), a_batch=a.numpy(),
                        device="cpu", channel_first=True)
    return np.asarray(curves, dtype=np.float64)


@pytest.mark.parametrize(("modality", "step"), [("image", 4), ("sequence", 2), ("tabular", 1)])
def test_pixel_flipping_matches_quantus(modality: str, step: int) -> None:
    model, x, a = one_channel_case(modality)
    expected = run_quantus(quantus.PixelFlipping, model, x, a, features_in_step=step)
    result = compute("pixel_flipping", model, x, a, target=TARGET, features_in_step=step)
    np.testing.assert_allclose(result.curve.numpy(), expected, rtol=1e-4)
    # Quantus's own AUC (np.trapz, dx=1) crashes on numpy 2.4; numpy.trapezoid is the same rule
    np.testing.assert_allclose(result.scores.numpy(), np.trapezoid(expected, dx=1, axis=1), rtol=1e-4)


@pytest.mark.skipif(hasattr(np, "trapz"), reason="numpy still has trapz")
def test_quantus_pixel_flipping_auc_crashes_without_numpy_trapz() -> None:
    model, x, a = one_channel_case("tabular")
    with pytest.raises(AttributeError, match="trapz"):
        run_quantus(quantus.PixelFlipping, model, x, a, return_auc_per_sample=True)


@pytest.mark.parametrize(("modality", "patch", "order", "regions"),
                         [("image", 2, "morf", 10), ("image", 4, "lerf", 100), ("sequence", 4, "morf", 3)])
def test_region_perturbation_matches_quantus(modality: str, patch: int, order: str, regions: int) -> None:
    model, x, a = one_channel_case(modality)
    expected = run_quantus(quantus.RegionPerturbation, model, x, a, patch_size=patch, order=order,
                           regions_evaluation=regions)
    result = compute("region_perturbation", model, x, a, target=TARGET, patch=patch, order=order,
                     regions=regions)
    # our curve adds Samek's k = 0 point, which is 0; AOPC averages the L + 1 points
    assert torch.equal(result.curve[:, 0], torch.zeros(4, dtype=torch.float64))
    np.testing.assert_allclose(result.curve[:, 1:].numpy(), expected, rtol=1e-4, atol=1e-7)
    aopc = expected.sum(axis=1) / (expected.shape[1] + 1)
    np.testing.assert_allclose(result.scores.numpy(), aopc, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("modality", "patch"), [("image", 2), ("sequence", 4)])
def test_selectivity_matches_quantus(modality: str, patch: int) -> None:
    model, x, a = one_channel_case(modality)
    expected = run_quantus(quantus.Selectivity, model, x, a, patch_size=patch)
    result = compute("selectivity", model, x, a, target=TARGET, patch=patch)
    np.testing.assert_allclose(result.curve.numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(result.scores.numpy(), np.trapezoid(expected, dx=1, axis=1), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# exact curves on hand-built linear models


def test_deletion_exact_curve() -> None:
    # attribution = w * x = (4, 3, 2, 1): deleting in that order leaves logits 10, 6, 3, 1, 0
    model, x = SumLogit([4.0, 3.0, 2.0, 1.0]), torch.ones(1, 4)
    result = compute("deletion", model, x, x * model.weights, target=0, per_step=1)
    expected = sigmoid([10, 6, 3, 1, 0])
    torch.testing.assert_close(result.curve[0], expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(result.curve_x, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    assert result.scores[0].item() == pytest.approx(rise_auc(expected), rel=1e-5)


def test_deletion_partial_last_step_and_patches() -> None:
    # a (1, 2, 4) image in 2x2 patches: left half (w = 3) then right half (w = 1); 3 per step -> 0, 3, 4
    weights = torch.tensor([[[3.0, 3.0, 1.0, 1.0], [3.0, 3.0, 1.0, 1.0]]])
    model, x = SumLogit(weights), torch.full((1, 1, 2, 4), 0.5)
    # zero named: images default to the blur substrate (test_deletion_substrate_defaults_by_modality)
    patched = compute("deletion", model, x, x * weights, target=0, patch=2, per_step=1, substrate="zero")
    torch.testing.assert_close(patched.curve[0], sigmoid([8, 2, 0]), rtol=1e-5, atol=0)
    model, x = SumLogit([4.0, 3.0, 2.0, 1.0]), torch.ones(1, 4)
    partial = compute("deletion", model, x, x * model.weights, target=0, per_step=3)
    torch.testing.assert_close(partial.curve[0], sigmoid([10, 1, 0]), rtol=1e-5, atol=0)
    torch.testing.assert_close(partial.curve_x, torch.tensor([0, 0.75, 1], dtype=torch.float64))


def test_deletion_substrate_defaults_by_modality() -> None:
    """"auto": the blurred image for images (measured in benchmarks/deletion_defaults.py), zero for
    tabular data and sequences."""
    model, x = SumLogit(torch.ones(1, 4, 4)), torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for substrate in ("blur", "zero"):
        explicit = compute("deletion", model, x, x, target=0, substrate=substrate).curve
        default = compute("deletion", model, x, x, target=0).curve
        assert torch.equal(default, explicit) == (substrate == "blur")
    model, ones = SumLogit([4.0, 3.0, 2.0, 1.0]), torch.ones(1, 4)
    torch.testing.assert_close(compute("deletion", model, ones, ones, target=0).curve,
                               compute("deletion", model, ones, ones, target=0, substrate="zero").curve)
    assert METRICS.get("deletion").Params().substrate == "auto"


def test_insertion_exact_curves() -> None:
    model, ones = SumLogit([4.0, 3.0, 2.0, 1.0]), torch.ones(1, 4)
    result = compute("insertion", model, ones, ones * model.weights, target=0, per_step=1, substrate="zero")
    expected = sigmoid([0, 4, 7, 9, 10])
    torch.testing.assert_close(result.curve[0], expected, rtol=1e-5, atol=0)
    assert result.scores[0].item() == pytest.approx(rise_auc(expected), rel=1e-5)
    # tabular "auto" starts from the sample mean (2): order f2, f0, f3, f1 moves the logit 6, 6, 7, 7, 8
    model, x = SumLogit([1.0, -1.0, 2.0, 1.0]), torch.tensor([[3.0, 1.0, 2.0, 2.0]])
    auto = compute("insertion", model, x, x * model.weights, target=0, per_step=1)
    torch.testing.assert_close(auto.curve[0], sigmoid([6, 6, 7, 7, 8]), rtol=1e-5, atol=0)


def test_insertion_on_images_runs_from_the_blurred_image_to_the_image() -> None:
    weights = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    model = SumLogit(weights)
    x = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    result = compute("insertion", model, x, x * weights, target=0, blur_sigma=2.0)
    logits = [(start * weights).flatten(1).sum(1) for start in (gaussian_blur(x, 2.0), x)]
    ends = torch.stack(logits, dim=1)
    torch.testing.assert_close(result.curve[:, [0, -1]], ends.double().sigmoid(), rtol=1e-5, atol=1e-6)


# x = (1, 2, 3, 4), black = 1, w = (1, -1, 0.5, 2): attribution (1, -2, 1.5, 8), starting logit 8.5
FLIP_WEIGHTS, FLIP_X = [1.0, -1.0, 0.5, 2.0], torch.tensor([[1.0, 2.0, 3.0, 4.0]])


@pytest.mark.parametrize(("name", "step", "logits"), [
    ("pixel_flipping", 1, [2.5, 1.5, 1.5, 2.5]),  # f3, f2, f0, f1 set to 1
    ("lerf", 1, [9.5, 9.5, 8.5, 2.5]),  # f1, f0, f2, f3
    ("lerf", 2, [9.5, 2.5]),
])
def test_pixel_flipping_and_lerf_exact(name: str, step: int, logits: list[float]) -> None:
    model = SumLogit(FLIP_WEIGHTS)
    result = compute(name, model, FLIP_X, FLIP_X * model.weights, target=0, features_in_step=step)
    expected = sigmoid(logits)
    torch.testing.assert_close(result.curve[0], expected, rtol=1e-5, atol=0)
    assert result.scores[0].item() == pytest.approx(float(torch.trapezoid(expected)), rel=1e-5)


def test_directions() -> None:
    assert not METRICS.get("pixel_flipping").higher_is_better and METRICS.get("lerf").higher_is_better
    region = METRICS.get("region_perturbation")()
    assert region.direction(region.Params(order="morf")) and not region.direction(region.Params(order="lerf"))
    assert not METRICS.get("pos").higher_is_better and METRICS.get("neg").higher_is_better


def test_bad_parameters() -> None:
    model, x = SumLogit([1.0, 1.0]), torch.ones(1, 2)
    with pytest.raises(UnknownNameError):
        compute("region_perturbation", model, x, x, target=0, order="random")
    with pytest.raises(InputError):
        compute("deletion", model, x, x, target=0, substrate="blur")
    with pytest.raises(InputError):
        compute("pixel_flipping", model, x, x, target=0, features_in_step=-1)


# ---------------------------------------------------------------------------------------------
# POS / NEG on a planted-feature model


def test_pos_neg_planted_features() -> None:
    # ten features, only f0 and f1 matter: class 0 wins (6 > 4) only while both are present
    weights = torch.zeros(10)
    weights[:2] = 3.0

    class Planted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x @ weights, torch.full((x.shape[0],), 4.0)], dim=1)

    x = torch.ones(1, 10)
    correct, reversed_map = x * weights, -(x * weights)
    pos = compute("pos", Planted(), x, correct, target=0)
    neg = compute("neg", Planted(), x, correct, target=0)
    # POS drops f0 at 10%: wrong everywhere. NEG drops the 8 irrelevant features first, f1 at 90%
    assert torch.equal(pos.curve[0], torch.zeros(9, dtype=torch.float64))
    assert torch.equal(neg.curve[0], torch.tensor([1.0] * 8 + [0.0], dtype=torch.float64))
    assert pos.scores.item() == 0.0 and neg.scores.item() == pytest.approx(7.5 / 8)
    torch.testing.assert_close(pos.curve_x, torch.arange(1, 10, dtype=torch.float64) / 10)
    assert compute("pos", Planted(), x, reversed_map, target=0).scores.item() == pytest.approx(7.5 / 8)
