"""Axiomatic metrics: completeness, non_sensitivity, input_invariance.

Exact answers on linear models (where integrated gradients is exact and the output's dependence on each
feature is known), cross-checks against Quantus 0.6.0, and its failures: exact float equality in
Completeness, ``features_in_step > 1`` in NonSensitivity, the first element left unshifted in
InputInvariance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from xaibench.metrics import compute

from tests.conftest import make_inputs, make_linear, make_net
from xaibench.attribution import attribute
from xaibench.attribution.reference import simple_baseline
from xaibench.core.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore")
QUANTUS_OFF = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}
TARGET = torch.tensor([0, 1, 2, 1, 0, 2])


def weights(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """W[target] per sample, shaped like x."""
    return model.fc.weight.detach()[TARGET[: len(x)]].view_as(x)


# ------------------------------------------------------------------------------------------------
# completeness


@pytest.mark.parametrize("modality", ["image", "sequence", "tabular"])
def test_completeness_of_integrated_gradients(modality: str) -> None:
    import quantus

    model, x = make_linear(modality), make_inputs(modality, 6)
    a = attribute("integrated_gradients", model, x, target=TARGET, baseline="black")
    ours = compute("completeness", model, x, a, target=TARGET, substrate="black").scores
    assert (ours == 1).all()
    theirs = quantus.Completeness(perturb_baseline="black", **QUANTUS_OFF)(
        model=model, x_batch=x.numpy(), y_batch=TARGET.numpy(), a_batch=a.numpy().copy())
    assert not all(theirs)  # exact equality fails on float round-off for some samples
    # ...although every sum matches to float precision
    with torch.no_grad():
        change = model(x).gather(1, TARGET[:, None])[:, 0] - model(simple_baseline(x, "black")).gather(
            1, TARGET[:, None])[:, 0]
    torch.testing.assert_close(a.flatten(1).sum(1), change, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("baseline", ["zero", "black", "white", "mean"])
def test_completeness_baselines(baseline: str) -> None:
    model, x = make_linear("image"), make_inputs("image", 6)
    exact = weights(model, x) * (x - simple_baseline(x, baseline))  # IG of a linear model, exactly
    assert (compute("completeness", model, x, exact, target=TARGET, substrate=baseline).scores == 1).all()
    gradient = weights(model, x)  # saliency does not sum to the change of the output
    assert (compute("completeness", model, x, gradient, target=TARGET, substrate=baseline).scores == 0).all()


def test_completeness_tolerance() -> None:
    model, x = make_linear("tabular"), make_inputs("tabular", 3)
    exact = weights(model, x) * x  # zero baseline
    change = exact.sum(1, keepdim=True)
    one_feature = torch.zeros_like(x)
    for factor, expected in [(1.0, 1.0), (1.04, 1.0), (0.96, 1.0), (1.06, 0.0), (0.5, 0.0)]:
        one_feature[:, :1] = change * factor
        scores = compute("completeness", model, x, one_feature, target=TARGET[:3]).scores
        assert (scores == expected).all(), factor
    one_feature[:, :1] = change * 1.001
    assert (compute("completeness", model, x, one_feature, target=TARGET[:3], rtol=1e-4).scores == 0).all()
    with pytest.raises(InputError):
        compute("completeness", model, x, one_feature, target=TARGET[:3], rtol=-1.0)


# ------------------------------------------------------------------------------------------------
# non_sensitivity


def sparse_linear(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear model on (1, 6, 6) images that ignores every fifth pixel, its inputs and weights."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
    w = torch.rand((3, 36), generator=generator) + 0.5
    w[:, ::5] = 0.0
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.zero_()
    x = torch.rand((4, 1, 6, 6), generator=generator)
    return model, x, w[TARGET[:4]].view_as(x)


def quantus_non_sensitivity(model: nn.Module, x: torch.Tensor, a: torch.Tensor,
                            **options: object) -> np.ndarray:
    import quantus

    metric = quantus.NonSensitivity(perturb_baseline="black", **{**QUANTUS_OFF, "abs": True, **options})
    out = metric(model=model, x_batch=x.numpy(), y_batch=TARGET[:4].numpy(), a_batch=a.numpy().copy())
    return np.asarray(out, dtype=np.float64)


def test_non_sensitivity_counts_violations() -> None:
    model, x, w = sparse_linear()
    # IG from the black baseline: zero exactly where the output ignores the pixel (zero weight, or the
    # pixel already at the sample minimum, which the black substrate does not change)
    exact = w * (x - simple_baseline(x, "black"))
    wrong = exact.clone()
    wrong[0, 0, 0, 0] = 1.0  # an ignored pixel gets attribution
    wrong[1, 0, 0, 1] = wrong[1, 0, 0, 2] = 0.0  # two used pixels get none
    gradient = w  # nonzero at each sample's minimum pixel, whose removal changes nothing
    for a, expected in [(exact, [0, 0, 0, 0]), (wrong, [1, 2, 0, 0]), (gradient, [1, 1, 1, 1])]:
        ours = compute("non_sensitivity", model, x, a, target=TARGET[:4]).scores.numpy()
        np.testing.assert_array_equal(ours, expected)
        np.testing.assert_array_equal(quantus_non_sensitivity(model, x, a), expected)
    with pytest.raises(ValueError):  # Quantus compares arrays of different lengths
        quantus_non_sensitivity(model, x, exact, features_in_step=2)


def test_non_sensitivity_groups_span_channels() -> None:
    # tabular features 1 and 4 are ignored by the target class; 2x2 patches on images
    model, x = make_linear("tabular"), make_inputs("tabular", 2)
    with torch.no_grad():
        model.fc.weight[:, [1, 4]] = 0.0
    a = weights(model, x) * (x - simple_baseline(x, "black"))
    assert (compute("non_sensitivity", model, x, a, target=TARGET[:2]).scores == 0).all()
    # every feature "important": the ignored ones and the one at the minimum (unchanged by the black
    # substrate) violate
    uniform = torch.ones_like(x)
    expected = [len({1, 4, int(row.argmin())}) for row in x]
    scores = compute("non_sensitivity", model, x, uniform, target=TARGET[:2]).scores
    assert scores.tolist() == expected
    image_model, images = make_linear("image"), make_inputs("image", 2)
    patches = weights(image_model, images).abs()
    patches[:, :, :2, :2] = 0.0  # the top-left 2x2 patch (both channels) claimed unimportant
    scores = compute("non_sensitivity", image_model, images, patches, target=TARGET[:2], patch=2,
                     substrate="zero").scores
    assert (scores == 1).all()


# ------------------------------------------------------------------------------------------------
# input_invariance


def explainer(method: str):  # noqa: ANN201 - an Explainer
    return lambda model, inputs, target: attribute(method, model, inputs, target=target)


@pytest.mark.parametrize("modality", ["image", "sequence", "tabular"])
def test_input_invariance_of_saliency_not_input_x_gradient(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality, 4)
    a = attribute("saliency", model, x, target=TARGET[:4])
    for method, expected in [("saliency", 1.0), ("input_x_gradient", 0.0)]:
        scores = compute("input_invariance", model, x, a, target=TARGET[:4], explainer=explainer(method),
                         shift=-1.0).scores
        assert (scores == expected).all(), method


def test_input_invariance_against_quantus() -> None:
    import quantus

    torch.manual_seed(0)
    # Quantus folds the shift into the bias of a first convolution (without padding, to be exact)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 3)).eval()
    x = torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    target = TARGET[:4]
    seen: list[torch.Tensor] = []

    def quantus_explainer(method: str):  # noqa: ANN202
        def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object) -> np.ndarray:
            seen.append(torch.as_tensor(inputs))
            return attribute(method, model, torch.as_tensor(inputs), target=torch.as_tensor(targets)).numpy()
        return explain

    for method in ("saliency", "input_x_gradient"):
        a = attribute(method, model, x, target=target)
        theirs = quantus.InputInvariance(disable_warnings=True, display_progressbar=False)(
            model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=a.numpy().copy(),
            explain_func=quantus_explainer(method))
        ours = compute("input_invariance", model, x, a, target=target, explainer=explainer(method)).scores
        if method == "input_x_gradient":
            np.testing.assert_array_equal(ours.numpy(), np.asarray(theirs, dtype=np.float64))
        else:
            assert (ours == 1).all()
    # Quantus's perturb_batch drops the first index of every sample: element 0 is never shifted
    shift = seen[0] - x
    assert (shift.flatten(1)[:, 0] == 0).all()
    torch.testing.assert_close(shift.flatten(1)[:, 1:], torch.full((4, 63), -1.0))
