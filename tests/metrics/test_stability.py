"""Relative stability metrics: cross-checks against Quantus fed the same perturbations, the perturbations
that change the prediction (where Quantus returns NaN), and exact values for known explanations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from xaibench.metrics.base import compute

from tests.conftest import make_inputs, make_linear, make_net
from tests.metrics.test_robustness import Recorder, replay, signed_saliency
from xaibench.core.errors import UnknownNameError

K = 5
NAMES = {"relative_input_stability": "RelativeInputStability",
         "relative_output_stability": "RelativeOutputStability",
         "relative_representation_stability": "RelativeRepresentationStability"}


def quantus_scores(name: str, model, x, t, a, explainer, points, **kwargs) -> np.ndarray:
    import quantus

    def explain_func(model, inputs, targets, **_):
        return explainer(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = getattr(quantus, NAMES[name])(nr_samples=K, disable_warnings=True,
                                               perturb_func=replay(points), **kwargs)
        return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(),
                                 explain_func=explain_func, device="cpu"), dtype=np.float64)


def run(name: str, model, x, a, explainer, **params) -> tuple[torch.Tensor, np.ndarray]:
    recorder = Recorder(explainer)
    scores = compute(name, model, x, a, target=torch.zeros(len(x), dtype=torch.long),
                     explainer=recorder, samples=K, **params).scores
    return scores, recorder.points(len(x))


@pytest.mark.parametrize("modality", ["image", "tabular"])
@pytest.mark.parametrize("name", sorted(NAMES))
def test_matches_quantus_on_the_same_perturbations(name: str, modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality, 3)
    t = torch.zeros(3, dtype=torch.long)
    a = signed_saliency(model, x, t)
    ours, points = run(name, model, x, a, signed_saliency)
    # no perturbation changes a prediction here (where one does, Quantus gives NaN: see below)
    theirs = quantus_scores(name, model, x, t, a, signed_saliency, points)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4)


def test_representation_of_a_named_layer_matches_quantus() -> None:
    model, x = make_net("image"), make_inputs("image", 3)
    t = torch.zeros(3, dtype=torch.long)
    a = signed_saliency(model, x, t)
    ours, points = run("relative_representation_stability", model, x, a, signed_saliency, layer="2")
    theirs = quantus_scores("relative_representation_stability", model, x, t, a, signed_saliency, points,
                            layer_names=["2"])
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4)
    default, _ = run("relative_representation_stability", model, x, a, signed_saliency)
    assert not torch.allclose(ours, default)  # the layer matters


class Threshold(nn.Module):
    """Two classes: logits (0, sum(x) - threshold)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.sum(1) - self.threshold
        return torch.stack([torch.zeros_like(score), score], dim=1)


def squared(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return inputs**2


def test_perturbations_that_change_the_prediction_are_left_out() -> None:
    x = make_inputs("tabular", 1).repeat(2, 1)
    x[1] -= 1.0  # far below the threshold: no perturbation changes its class
    model = Threshold(float(x[0].sum()) + 0.66)  # the noise adds 0.66 to the sum on average
    ours, points = run("relative_input_stability", model, x, x**2, squared)

    xs = torch.from_numpy(points).double()
    x64 = x.double()[:, None]
    ratio = ((x64**2 - xs**2) / x64**2).norm(dim=2) / ((x64 - xs) / x64).norm(dim=2)
    kept = model(xs.flatten(0, 1).float()).argmax(1).view(2, K) == 0
    assert 0 < kept[0].sum() < K and kept[1].all()
    torch.testing.assert_close(ours, torch.where(kept, ratio, -torch.inf).amax(1), rtol=1e-6, atol=0)

    theirs = quantus_scores("relative_input_stability", model, x, torch.zeros(2, dtype=torch.long),
                            x**2, squared, points)
    assert np.isnan(theirs[0])  # one changed prediction makes Quantus's whole sample NaN
    np.testing.assert_allclose(ours[1].item(), theirs[1], rtol=1e-4)


def margin_model(modality: str) -> nn.Module:
    """The linear toy model with class 0 ahead by a margin that no perturbation closes."""
    model = make_linear(modality)
    with torch.no_grad():
        model.fc.bias[0] += 100.0
    return model


@pytest.mark.parametrize("name", sorted(NAMES))
def test_saliency_of_a_linear_model_is_perfectly_stable(name: str, modality: str) -> None:
    model, x = margin_model(modality), make_inputs(modality, 3)
    target = torch.tensor([0, 1, 2])
    a = signed_saliency(model, x, target)
    scores = compute(name, model, x, a, target=target, explainer=signed_saliency, samples=K).scores
    assert torch.equal(scores, torch.zeros(3, dtype=torch.float64))


def test_the_identity_explanation_changes_exactly_as_the_input(modality: str) -> None:
    model, x = margin_model(modality), make_inputs(modality, 3)
    scores = compute("relative_input_stability", model, x, x, target=0, samples=K,
                     explainer=lambda m, inputs, target: inputs).scores
    assert torch.equal(scores, torch.ones(3, dtype=torch.float64))


def test_no_perturbation_keeps_the_class_gives_nan() -> None:
    x = make_inputs("tabular", 1)
    model = Threshold(float(x.sum()) + 0.01)  # every perturbation adds at least 6 * 0.02
    scores, _ = run("relative_output_stability", model, x, x**2, squared)
    assert scores.isnan().all()


class FailsOnPerturbedRows(nn.Module):
    """The tabular toy net, raising in its last layer when more than ``rows`` rows come in."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.net, self.rows = make_net("tabular"), rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.net[:-1](x)
        if x.shape[0] > self.rows:
            raise RuntimeError("boom")
        return self.net[-1](hidden)


def test_representation_hooks_are_removed_even_when_the_model_fails() -> None:
    model, x = FailsOnPerturbedRows(rows=2), make_inputs("tabular", 2)
    a = torch.ones_like(x)
    explainer = lambda m, inputs, target: torch.ones_like(inputs)  # noqa: E731
    with pytest.raises(RuntimeError, match="boom"):
        compute("relative_representation_stability", model, x, a, target=0, explainer=explainer, samples=2)
    assert not any(module._forward_hooks for module in model.modules())
    with pytest.raises(UnknownNameError):
        compute("relative_representation_stability", model, x, a, target=0, explainer=explainer, layer="nope")
