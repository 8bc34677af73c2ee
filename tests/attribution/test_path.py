"""The path engine: equality with captum's IntegratedGradients, several baselines per sample, completeness,
Blur IG against its closed form on linear models and against a plain per-step loop, batch invariance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from scipy.ndimage import gaussian_filter

from tests.conftest import SHAPES, make_inputs, make_linear, make_net
from xaibench.attribution.blur import gaussian_blur
from xaibench.attribution.path import (
    QUADRATURES,
    BlurIG,
    PathIntegratedGradients,
    quadrature,
    straight_path_integral,
)
from xaibench.attribution.reference import simple_baseline
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.core.progress import reporting
from xaibench.models import load_model

SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "sample_models"
TARGET = torch.tensor([0, 1, 2, 1])


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """Within ``tol`` relative to the largest reference value (toy attributions are ~1e-3)."""
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, ref, rtol=0, atol=tol * scale)


def picked(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target[:, None]).squeeze(1)


@pytest.mark.parametrize("method", QUADRATURES)
def test_quadrature_uses_captums_points_and_weights(method: str) -> None:
    captum_steps, captum_alphas = approximation_parameters(method)
    alphas, weights = quadrature(method, 12)
    np.testing.assert_allclose(alphas.numpy(), np.asarray(captum_alphas(12)), rtol=0, atol=1e-7)
    # captum's trapezoid weights sum to (n-1)/n; ours are the trapezoid rule on [0, 1] and sum to 1
    factor = 12 / 11 if method == "riemann_trapezoid" else 1.0
    np.testing.assert_allclose(weights.numpy(), factor * np.asarray(captum_steps(12)), rtol=1e-12)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("baseline", ["zero", "mean"])
@pytest.mark.parametrize("method", QUADRATURES)
def test_equals_captum_integrated_gradients(modality: str, method: str, baseline: str) -> None:
    model, x = make_net(modality), make_inputs(modality)
    ours = PathIntegratedGradients().attribute(
        model, x, target=TARGET, n_steps=16, method=method, baseline=baseline
    )
    ref = IntegratedGradients(model).attribute(
        x, baselines=simple_baseline(x, baseline), target=TARGET, n_steps=16, method=method
    )
    if method == "riemann_trapezoid":
        ref = ref * 16 / 15  # captum's trapezoid weights sum to 15/16, see quadrature()
    assert_matches(ours, ref)


def test_several_baselines_per_sample_average_single_baseline_runs(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality)
    baselines = torch.rand((4, 3, *SHAPES[modality]), generator=torch.Generator().manual_seed(5))
    alphas, weights = quadrature("gausslegendre", 8)
    batched = straight_path_integral(model, x, baselines, TARGET, alphas, weights, batch_size=5)
    singles = [straight_path_integral(model, x, baselines[:, b], TARGET, alphas, weights) for b in range(3)]
    assert_matches(batched, torch.stack(singles).mean(0), tol=1e-6)


@pytest.mark.parametrize("method", QUADRATURES)
def test_linear_model_gives_weight_times_difference_exactly(modality: str, method: str) -> None:
    # a linear F has a constant gradient w, so IG = w * (x - b) for any rule whose weights sum to 1
    model, x = make_linear(modality).double(), make_inputs(modality).double()
    baseline = torch.rand(x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    alphas, weights = quadrature(method, 7)
    out = straight_path_integral(model, x, baseline, torch.full((4,), 2), alphas, weights, batch_size=3)
    # float64 to ~1e-16, but torch's float64 bmm was seen off by ~4e-11 in rare processes
    torch.testing.assert_close(out, model.weight(2).double() * (x - baseline), rtol=0, atol=1e-10)


def test_completeness_on_toy_nets(modality: str) -> None:
    # ReLU nets have kinks along the path, so the rule converges as 1/n: 2000 midpoints, float64
    model, x = make_net(modality).double(), 4 * make_inputs(modality).double()
    baseline = torch.zeros_like(x)
    alphas, weights = quadrature("riemann_middle", 2000)
    out = straight_path_integral(model, x, baseline, TARGET, alphas, weights)
    delta = picked(model, x, TARGET) - picked(model, baseline, TARGET)
    assert float(delta.abs().min()) > 5e-3  # the tolerance below is small against what it checks
    torch.testing.assert_close(out.flatten(1).sum(1), delta, rtol=0, atol=1e-4)


def test_blur_ig_on_linear_model_is_weight_times_blur_difference() -> None:
    # with grad_step = max_sigma / n_steps the finite differences telescope: for a linear F the sum is
    # exactly w * (blur(x, 0) - blur(x, max_sigma)) = w * (x - blur(x, max_sigma)), up to rounding
    for modality in ("image", "sequence"):
        model, x = make_linear(modality), make_inputs(modality)
        out = BlurIG().attribute(model, x, target=1, n_steps=10, max_sigma=3.0, grad_step=0.3)
        expected = model.weight(1) * (x - gaussian_blur(x.double(), 3.0).float())
        torch.testing.assert_close(out, expected, rtol=0, atol=2e-7)


def scipy_blur(x: torch.Tensor, sigma: float) -> np.ndarray:
    return gaussian_filter(x.double().numpy(), (0, 0, *[sigma] * (x.ndim - 2)), mode="reflect")


def reference_blur_ig(model: torch.nn.Module, x: torch.Tensor, max_sigma: float, n: int) -> torch.Tensor:
    """A plain loop over sigmas with scipy's blur (float64), as the PAIR saliency library computes it."""
    grad_step, dsigma, total = 0.01, max_sigma / n, torch.zeros_like(x)
    for k in range(n):
        blurred, shifted = scipy_blur(x, k * dsigma), scipy_blur(x, k * dsigma + grad_step)
        point = torch.from_numpy(blurred).float().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(point).gather(1, TARGET[:, None]).sum(), point)
        total += grad * torch.from_numpy((blurred - shifted) * (dsigma / grad_step)).float()
    return total


@pytest.mark.parametrize("modality", ["image", "sequence"])
def test_blur_ig_equals_a_plain_loop_and_defaults_scale_sigma(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality)
    default_sigma = 50 / 224 * max(SHAPES[modality][1:])  # the paper's 50 on 224 px, scaled
    ours = BlurIG().attribute(model, x, target=TARGET, n_steps=12, batch_size=7)
    assert_matches(ours, reference_blur_ig(model, x, default_sigma, 12))


@pytest.mark.parametrize("method", ["path_integrated_gradients", "blur_ig"])
def test_batch_size_invariance_and_progress(method: str) -> None:
    cls = {"path_integrated_gradients": PathIntegratedGradients, "blur_ig": BlurIG}[method]
    model, x = make_net("image"), make_inputs("image", n=5)
    done: list[int] = []
    with reporting(done.append):
        full = cls().attribute(model, x, target=1, n_steps=6)
    assert sum(done) == 5
    for batch_size in (2, 7):
        out = cls().attribute(model, x, target=1, n_steps=6, batch_size=batch_size)
        torch.testing.assert_close(out, full)


def test_bad_parameters_raise() -> None:
    model, x = make_net("image"), make_inputs("image")
    with pytest.raises(UnknownNameError, match="gausslegendre"):
        PathIntegratedGradients().attribute(model, x, target=0, method="gauss_legendre")
    with pytest.raises(InputError, match="n_steps >= 2"):
        PathIntegratedGradients().attribute(model, x, target=0, method="riemann_trapezoid", n_steps=1)
    with pytest.raises(InputError, match="max_sigma > 0"):
        BlurIG().attribute(model, x, target=0, max_sigma=0.0)
    with pytest.raises(IncompatibleError, match="does not apply"):
        BlurIG().attribute(make_net("tabular"), make_inputs("tabular"), target=0)


# the committed sample models, named so that a missing file fails instead of leaving nothing to test
SAMPLE_NAMES = ("breast_cancer_logreg", "breast_cancer_mlp", "digits_cnn", "mnist1d_cnn", "shapes_cnn",
                "synthetic_interaction_mlp", "synthetic_linear_mlp", "synthetic_motifs_cnn", "synthetic_piecewise_mlp")


TEXT_SAMPLE_NAMES = ("planted_text_transformer",)  # against LayerIntegratedGradients: tests/attribution/test_text.py


def test_sample_names_cover_the_committed_models() -> None:
    assert sorted(path.stem for path in SAMPLE_MODELS.glob("*.pt")) == sorted(SAMPLE_NAMES + TEXT_SAMPLE_NAMES)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_equals_captum_on_sample_models(name: str) -> None:
    """The path engine against captum's IntegratedGradients on the real sample models.

    ``assert_matches`` bounds the difference by 1e-5 times the largest captum attribution (relative to
    the largest value, not elementwise); the plain absolute difference is also at most 1e-5 (measured
    at most 5.7e-6, on mnist1d_cnn, whose attributions reach ~39).
    """
    loaded = load_model(SAMPLE_MODELS / f"{name}.pt")
    model, shape = loaded.module.eval(), loaded.meta.input_shape
    low, high = loaded.meta.value_range or (0.0, 1.0)
    x = low + (high - low) * torch.rand((4, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = model(x).argmax(1)
    ours = PathIntegratedGradients().attribute(model, x, target=target, n_steps=16)
    ref = IntegratedGradients(model).attribute(x, target=target, n_steps=16)
    assert_matches(ours, ref)
    assert float((ours - ref).abs().max()) <= 1e-5
