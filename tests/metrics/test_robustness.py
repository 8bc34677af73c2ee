"""Robustness metrics: cross-checks against Quantus and captum fed the same perturbations, and exact
values for explainers and models whose explanations are known."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from xaibench.metrics.base import compute

from tests.conftest import make_inputs, make_linear, make_net
from xaibench.attribution.base import attribute

K = 5  # perturbations per sample


def signed_saliency(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return attribute("saliency", model, inputs, target=target, abs=False)


class Recorder:
    """Wraps an explainer and keeps the inputs of every call."""

    def __init__(self, explainer=signed_saliency) -> None:
        self.explainer = explainer
        self.inputs: list[torch.Tensor] = []

    def __call__(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.inputs.append(inputs.clone())
        return self.explainer(model, inputs, target)

    def points(self, n: int) -> np.ndarray:
        """The perturbed inputs of a one-call run, (n, K, *S)."""
        (points,) = self.inputs
        return points.view(n, -1, *points.shape[1:]).numpy()


def replay(points: np.ndarray):
    """A Quantus perturb_func returning our perturbed copies: copy k of every sample at call k."""
    step = iter(range(points.shape[1]))

    def perturb_func(arr: np.ndarray, **_: object) -> np.ndarray:
        return points[:, next(step)].reshape(arr.shape).astype(arr.dtype)

    return perturb_func


def quantus_explain(model, inputs, targets, **_):
    return signed_saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


def quantus_scores(metric_cls, model, x, t, a, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = metric_cls(nr_samples=K, abs=False, normalise=False, disable_warnings=True,
                            display_progressbar=False, **kwargs)
        return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(),
                                 explain_func=quantus_explain, device="cpu"), dtype=np.float64)


def setting(modality: str, n: int = 3):
    model = make_net(modality)
    x = make_inputs(modality, n)
    t = model(x).argmax(1)
    return model, x, t, signed_saliency(model, x, t)


@pytest.mark.parametrize("modality", ["image", "tabular"])
@pytest.mark.parametrize(("name", "cls"), [("max_sensitivity", "MaxSensitivity"),
                                           ("avg_sensitivity", "AvgSensitivity")])
def test_sensitivity_matches_quantus_on_the_same_noise(modality: str, name: str, cls: str) -> None:
    import quantus

    model, x, t, a = setting(modality)
    recorder = Recorder()
    ours = compute(name, model, x, a, target=t, explainer=recorder, samples=K, radius=0.2).scores
    points = recorder.points(x.shape[0])
    assert np.abs(points - x.numpy()[:, None]).max() <= 0.2 + 1e-6  # inside the L-inf ball
    theirs = quantus_scores(getattr(quantus, cls), model, x, t, a, perturb_func=replay(points))
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4)


def test_max_sensitivity_matches_captum_sensitivity_max() -> None:
    from captum.metrics import sensitivity_max

    model, x, t, a = setting("image")
    recorder = Recorder()
    ours = compute("max_sensitivity", model, x, a, target=t, explainer=recorder, samples=K, radius=0.02)
    points = torch.from_numpy(recorder.points(x.shape[0])).flatten(0, 1)

    def explanation_func(inputs: tuple[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor]:
        return (signed_saliency(model, inputs[0], target),)  # captum passes and expects tuples

    theirs = sensitivity_max(explanation_func, x, perturb_func=lambda inputs, radius: (points,),
                             n_perturb_samples=K, target=t)
    np.testing.assert_allclose(ours.scores.numpy(), theirs.double().numpy(), rtol=1e-4)


@pytest.mark.parametrize("modality", ["image", "tabular"])
def test_local_lipschitz_matches_quantus_on_the_same_noise(modality: str) -> None:
    import quantus

    model, x, t, a = setting(modality)
    recorder = Recorder()
    ours = compute("local_lipschitz", model, x, a, target=t, explainer=recorder, samples=K).scores
    points = recorder.points(x.shape[0])
    theirs = quantus_scores(quantus.LocalLipschitzEstimate, model, x, t, a, perturb_func=replay(points))
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4)


@pytest.mark.parametrize("name", ["max_sensitivity", "avg_sensitivity", "local_lipschitz"])
def test_an_explanation_that_ignores_the_input_scores_zero(name: str, modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality, 3)
    constant = torch.full_like(x, 0.5)
    scores = compute(name, model, x, constant, target=0, samples=K,
                     explainer=lambda m, inputs, target: torch.full_like(inputs, 0.5)).scores
    assert torch.equal(scores, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["max_sensitivity", "avg_sensitivity", "local_lipschitz"])
def test_saliency_of_a_linear_model_is_perfectly_robust(name: str, modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality, 3)
    target = torch.tensor([0, 1, 2])
    a = signed_saliency(model, x, target)  # the weight rows, whatever the input
    scores = compute(name, model, x, a, target=target, explainer=signed_saliency, samples=K).scores
    assert torch.equal(scores, torch.zeros(3, dtype=torch.float64))


def test_local_lipschitz_of_a_scaled_identity_is_the_scale(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality, 3)
    scores = compute("local_lipschitz", model, x, 2 * x, target=0, samples=K,
                     explainer=lambda m, inputs, target: 2 * inputs).scores
    torch.testing.assert_close(scores, torch.full((3,), 2.0, dtype=torch.float64), rtol=1e-5, atol=0)


def test_max_sensitivity_of_the_identity_is_the_largest_relative_input_change() -> None:
    model, x = make_net("tabular"), make_inputs("tabular", 3)
    recorder = Recorder(lambda m, inputs, target: inputs)
    scores = compute("max_sensitivity", model, x, x, target=0, explainer=recorder, samples=K).scores
    points = torch.from_numpy(recorder.points(3)).double()
    expected = ((points - x.double()[:, None]).norm(dim=2) / x.double().norm(dim=1, keepdim=True)).amax(1)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)


def test_sensitivity_of_an_all_zero_explanation_is_undefined() -> None:
    model, x = make_net("tabular"), make_inputs("tabular", 2)
    a = torch.zeros_like(x)
    a[1] = 1.0
    scores = compute("max_sensitivity", model, x, a, target=0, samples=K,
                     explainer=lambda m, inputs, target: torch.ones_like(inputs)).scores
    assert scores[0].isnan() and scores[1] == 0


def test_explainer_calls_stay_within_the_batch_size_and_draws_do_not_depend_on_it() -> None:
    model, x, t, a = setting("tabular", n=4)
    runs, sizes = {}, {}
    for batch_size in (None, 3, 12):
        recorder = Recorder()
        compute("avg_sensitivity", model, x, a, target=t, explainer=recorder, batch_size=batch_size,
                samples=K, generator=torch.Generator().manual_seed(3))
        runs[batch_size] = torch.cat(recorder.inputs)
        sizes[batch_size] = [len(p) for p in recorder.inputs]
    assert sizes == {None: [4 * K], 3: [3, 2] * 4, 12: [2 * K, 2 * K]}  # whole samples' copies per call
    assert torch.equal(runs[None], runs[3]) and torch.equal(runs[None], runs[12])


@pytest.mark.parametrize(("name", "knob", "small", "large"), [("max_sensitivity", "radius", 0.05, 0.2),
                                                               ("avg_sensitivity", "radius", 0.05, 0.2),
                                                               ("local_lipschitz", "std", 0.025, 0.1)])
def test_the_noise_scales_with_the_radius(name: str, knob: str, small: float, large: float) -> None:
    """Same seed, another radius (std): the same draws scaled, so every perturbation shrinks by the ratio
    and the identity explainer's relative change ||x' - x|| / ||x|| with it."""
    model, x = make_net("tabular"), make_inputs("tabular", 3)
    steps, scores = {}, {}
    for size in (small, large):
        recorder = Recorder(lambda m, inputs, target: inputs)
        scores[size] = compute(name, model, x, x, target=0, explainer=recorder, samples=K,
                               generator=torch.Generator().manual_seed(5), **{knob: size}).scores
        steps[size] = torch.from_numpy(recorder.points(3)).double() - x.double()[:, None]
    ratio = small / large
    torch.testing.assert_close(steps[small], ratio * steps[large], rtol=1e-5, atol=1e-7)
    if knob == "radius":
        torch.testing.assert_close(scores[small], ratio * scores[large], rtol=1e-5, atol=0)
        assert steps[small].abs().max() <= small
