"""Infidelity against captum.metrics.infidelity (same noise) and Quantus 0.6.0's Infidelity (patches), zero
infidelity for gradients of linear models, and PGI / PGU against a numpy transcription of OpenXAI's
definition fed the same noise."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from captum.metrics import infidelity as captum_infidelity
from torch import nn
from xaibench.metrics import infidelity
from xaibench.metrics.base import compute

from tests.conftest import make_inputs, make_linear, make_net
from xaibench.core.errors import UnknownNameError

TARGET = torch.tensor([0, 1, 2, 1])


def recorded_noise(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Keep every standard-normal draw the infidelity module makes, in call order."""
    calls: list[torch.Tensor] = []
    original = infidelity.draw_normal

    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(original(*args, **kwargs).clone())  # the metric scales its draw in place
        return calls[-1].clone()

    monkeypatch.setattr(infidelity, "draw_normal", wrapper)
    return calls


def random_attributions(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def target_gradient(model: nn.Module, n: int = 4) -> torch.Tensor:
    return torch.stack([model.weight(int(t)) for t in TARGET[:n]])


# ---------------------------------------------------------------------------------------------
# infidelity


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("modality", ["image", "tabular"])
def test_noise_infidelity_equals_captum_on_the_same_noise(monkeypatch: pytest.MonkeyPatch, modality: str,
                                                         normalize: bool) -> None:
    model, x = make_net(modality), make_inputs(modality)
    a = random_attributions(x)
    noise = recorded_noise(monkeypatch)
    ours = compute("infidelity", model, x, a, target=TARGET, samples=5, std=0.2, normalize=normalize)
    (draw,) = noise  # (N, 5, *S): one chunk when batch_size is None
    perturbation = (0.2 * draw).flatten(0, 1)  # captum repeats each sample n_perturb_samples times

    def perturb_func(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return perturbation, inputs - perturbation

    theirs = captum_infidelity(model, perturb_func, x, a, target=TARGET, n_perturb_samples=5,
                               normalize=normalize)
    torch.testing.assert_close(ours.scores, theirs.double(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("patch_size", [2, 4])
def test_patch_infidelity_equals_quantus(patch_size: int) -> None:
    quantus = pytest.importorskip("quantus")
    model, x = make_net("image"), make_inputs("image")
    a = random_attributions(x)
    ours = compute("infidelity", model, x, a, target=TARGET, perturbation="patch", patch_size=patch_size)
    metric = quantus.Infidelity(perturb_patch_sizes=[patch_size], n_perturb_samples=1, normalise=False,
                                abs=False, disable_warnings=True, display_progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=TARGET.numpy(), a_batch=a.numpy(),
                        device="cpu")
    np.testing.assert_allclose(ours.scores.numpy(), np.asarray(theirs, dtype=np.float64), rtol=1e-4)


@pytest.mark.parametrize("perturbation", ["noise", "patch"])
def test_the_gradient_of_a_linear_model_has_zero_infidelity(modality: str, perturbation: str) -> None:
    # f(x) - f(x - I) = w . I exactly, so sum(w * I) predicts every perturbation
    model, x = make_linear(modality), make_inputs(modality)
    w = target_gradient(model)
    exact = compute("infidelity", model, x, w, target=TARGET, perturbation=perturbation)
    assert exact.scores.abs().max() < 1e-9
    # twice the gradient is wrong by w . I, unless normalize rescales it by beta = 1/2
    doubled = compute("infidelity", model, x, 2 * w, target=TARGET, perturbation=perturbation)
    rescaled = compute("infidelity", model, x, 2 * w, target=TARGET, perturbation=perturbation,
                       normalize=True)
    assert doubled.scores.min() > 1e-4
    assert rescaled.scores.abs().max() < 1e-9


def test_an_unknown_perturbation_is_refused() -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    with pytest.raises(UnknownNameError):
        compute("infidelity", model, x, x, target=TARGET, perturbation="gaussian")


# ---------------------------------------------------------------------------------------------
# PGI / PGU


def openxai_prediction_gap(model: nn.Module, x: torch.Tensor, a: torch.Tensor, z: torch.Tensor, k: int,
                           std: float, invert: bool) -> np.ndarray:
    """OpenXAI's ``_single_idx_pred_faith`` with ``NormalPerturbation`` (continuous features), in numpy,
    on the target class's probability: ``z`` holds each sample's standard-normal draws (n, F)."""
    out = []
    for sample, explanation, draws, target in zip(x.numpy(), a.numpy(), z.numpy(), TARGET.tolist()):
        static = np.ones(sample.shape, dtype=bool)  # generate_mask: top-k by |a| are not static
        static[np.argsort(-np.abs(explanation), kind="stable")[:k]] = False
        static = ~static if invert else static
        perturbations = std * draws + sample
        perturbed = sample * static + perturbations * ~static
        with torch.no_grad():
            p = model(torch.from_numpy(sample[None])).softmax(1)[0, target].numpy()
            p_perturbed = model(torch.from_numpy(perturbed.astype(np.float32))).softmax(1)[:, target].numpy()
        out.append(np.mean(np.abs(p_perturbed - p)))
    return np.array(out)


@pytest.mark.parametrize("name", ["pgi", "pgu"])
@pytest.mark.parametrize(("k", "count"), [(2.0, 2), (0.4, 3)])
def test_prediction_gaps_equal_openxai_on_the_same_noise(monkeypatch: pytest.MonkeyPatch, name: str, k: float,
                                                         count: int) -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    a = random_attributions(x, seed=2)
    noise = recorded_noise(monkeypatch)
    ours = compute(name, model, x, a, target=TARGET, k=k, samples=20, std=0.3)
    (draw,) = noise
    expected = openxai_prediction_gap(model, x, a, draw, count, 0.3, invert=(name == "pgu"))
    np.testing.assert_allclose(ours.scores.numpy(), expected, rtol=1e-4)


def test_pgu_is_zero_when_the_model_ignores_the_unimportant_features() -> None:
    model, x = make_linear("tabular"), make_inputs("tabular")
    with torch.no_grad():
        model.fc.weight[:, 2:] = 0  # only features 0 and 1 matter, for every class
    a = target_gradient(model) * x
    pgu = compute("pgu", model, x, a, target=TARGET, k=2.0)
    pgi = compute("pgi", model, x, a, target=TARGET, k=2.0)
    assert pgu.scores.abs().max() < 1e-6  # float32 rounding of different batch shapes only
    assert pgi.scores.min() > 1e-3
    everything = compute("pgu", make_net("tabular"), x, a, target=TARGET, k=6.0)
    assert everything.scores.abs().max() < 1e-6  # every feature is in the top 6: nothing is perturbed
