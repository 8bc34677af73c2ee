"""Exact values of the captum-backed methods where the answer is known by hand.

On the linear toy model logit_c = W[c] . x + b_c, so d logit_c / dx = W[c]: gradient methods give
W[c] (times x, or x - reference), and every removal-based method credits a feature group with the sum
of W[c] * (x - reference) over the group, since the model is additive. A group of the perturbation
methods spans all channels (image pixels, sequence steps), so with 1-wide groups an image or sequence
element receives the channel sum of W[c] * x at its position; a tabular feature receives W[c] * x.
"""

from __future__ import annotations

import captum.attr
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import make_inputs, make_linear, make_net
from xaibench.attribution import attribute
from xaibench.attribution.chunks import quiet_captum
from xaibench.attribution.layers import find_layer
from xaibench.attribution.masks import default_patch, feature_mask
from xaibench.attribution.perturbation import occlusion_window
from xaibench.attribution.reference import simple_baseline
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError

TARGET = torch.tensor([0, 1, 2, 1])


def weights(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """W[target] per sample, shaped like x: the gradient of the linear model's target logit."""
    return model.fc.weight.detach()[TARGET].view_as(x)


def group_sums(values: torch.Tensor) -> torch.Tensor:
    """Per-position channel sums broadcast back over channels (tabular values are left alone)."""
    return values if values.ndim == 2 else values.sum(1, keepdim=True).expand_as(values)


def logit(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, TARGET[: len(x), None])[:, 0]


# ------------------------------------------------------------------------------------------------
# helpers: references, feature groups, windows, layers


def test_simple_baselines() -> None:
    x = torch.tensor([[[1.0, -2.0], [4.0, 0.5]], [[0.0, 3.0], [3.0, 6.0]]])
    assert torch.equal(simple_baseline(x, "zero"), torch.zeros_like(x))
    assert torch.equal(simple_baseline(x, "black"), torch.tensor([-2.0, 0.0]).view(2, 1, 1).expand(2, 2, 2))
    assert torch.equal(simple_baseline(x, "white"), torch.tensor([4.0, 6.0]).view(2, 1, 1).expand(2, 2, 2))
    assert torch.equal(simple_baseline(x, "mean"), torch.tensor([0.875, 3.0]).view(2, 1, 1).expand(2, 2, 2))
    with pytest.raises(UnknownNameError, match="did you mean 'white'"):
        simple_baseline(x, "whte")


def test_feature_masks() -> None:
    image = feature_mask(torch.zeros(1, 2, 5, 5), patch=2)
    expected = torch.tensor(
        [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5], [3, 3, 4, 4, 5], [6, 6, 7, 7, 8]]
    )
    assert torch.equal(image, expected.expand(1, 2, 5, 5))
    sequence = feature_mask(torch.zeros(3, 2, 7), patch=3)
    assert torch.equal(sequence, torch.tensor([0, 0, 0, 1, 1, 1, 2]).expand(1, 2, 7))
    assert torch.equal(feature_mask(torch.zeros(3, 4), patch=None), torch.tensor([[0, 1, 2, 3]]))
    assert [default_patch(torch.zeros(1, *s)) for s in [(3, 224, 200), (2, 16), (2, 5), (6,)]] == [
        25,
        1,
        1,
        1,
    ]
    with pytest.raises(InputError, match="patch must be at least 1"):
        feature_mask(torch.zeros(1, 6), patch=0)


def test_occlusion_windows() -> None:
    # 28 = 9 * 3 + 1: a tenth, cropped window position covers the last row and column.
    assert occlusion_window(torch.zeros(1, 3, 28, 28), 3, None) == ((3, 3, 3), (3, 3, 3), 100)
    assert occlusion_window(torch.zeros(1, 2, 16), 4, 2) == ((2, 4), (2, 2), 7)
    assert occlusion_window(torch.zeros(1, 6), None, None) == ((1,), (1,), 6)
    with pytest.raises(InputError, match="window must be between 1 and 8"):
        occlusion_window(torch.zeros(1, 2, 8, 8), 9, None)
    with pytest.raises(InputError, match="stride must be between 1 and the window"):
        occlusion_window(torch.zeros(1, 6), 2, 3)


def test_find_layer() -> None:
    net = make_net("image")
    assert find_layer(net, None) == ("2", net[2])  # the last Conv2d
    assert find_layer(net, "0") == ("0", net[0])
    with pytest.raises(UnknownNameError, match="unknown layer 'O'"):
        find_layer(net, "O")
    nested = nn.Sequential(nn.Sequential(nn.Conv1d(1, 1, 1), nn.Conv1d(1, 1, 1)), nn.Linear(1, 1))
    assert find_layer(nested, None)[0] == "0.1"
    with pytest.raises(UnknownNameError, match=r"did you mean '0\.1'"):
        find_layer(nested, "0.2")
    with pytest.raises(IncompatibleError, match="no convolutional layer; pass --layer"):
        find_layer(make_net("tabular"), None)


# ------------------------------------------------------------------------------------------------
# gradient methods on the linear model


def test_gradient_methods_on_linear_model(modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    w = weights(model, x)
    torch.testing.assert_close(attribute("saliency", model, x, target=TARGET), w.abs(), rtol=0, atol=0)
    torch.testing.assert_close(attribute("saliency", model, x, target=TARGET, abs=False), w, rtol=0, atol=0)
    torch.testing.assert_close(attribute("input_x_gradient", model, x, target=TARGET), w * x, rtol=0, atol=0)
    for name in ("guided_backprop", "deconvolution"):
        if modality == "text":  # ReLU rules: refused on text models
            with pytest.raises(IncompatibleError, match="does not apply to text inputs"):
                attribute(name, model, x, target=TARGET)
            continue
        # No ReLU between input and logits: the modified backward passes are the plain gradient.
        torch.testing.assert_close(attribute(name, model, x, target=TARGET), w, rtol=0, atol=0)


def test_integrated_gradients_on_linear_model(modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    w = weights(model, x)
    zero = attribute("integrated_gradients", model, x, target=TARGET)
    torch.testing.assert_close(zero, w * x, rtol=0, atol=1e-5)
    white = attribute("integrated_gradients", model, x, target=TARGET, baseline="white", n_steps=5)
    torch.testing.assert_close(white, w * (x - simple_baseline(x, "white")), rtol=0, atol=1e-5)


def test_integrated_gradients_completeness_on_nonlinear_nets(modality: str) -> None:
    # The ReLU kinks make the path integrand piecewise constant, which quadrature converges on slowly:
    # the gap is ~1e-4 at 200 Gauss-Legendre points, up to 7e-5 at 500 and below 1.1e-5 at 1000.
    model, x = make_net(modality), make_inputs(modality)
    attributions = attribute("integrated_gradients", model, x, target=TARGET, n_steps=1000)
    gap = logit(model, x) - logit(model, torch.zeros_like(x))
    torch.testing.assert_close(attributions.flatten(1).sum(1), gap, rtol=0, atol=1e-4)


@pytest.mark.parametrize("baseline", ["zero", "black", "white", "mean"])
def test_deeplift_on_linear_model(modality: str, baseline: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    if modality == "text":  # the rescale rule is for ReLU networks: refused on text models
        with pytest.raises(IncompatibleError, match="does not apply to text inputs"):
            attribute("deeplift", model, x, target=TARGET, baseline=baseline)
        return
    expected = weights(model, x) * (x - simple_baseline(x, baseline))
    out = attribute("deeplift", model, x, target=TARGET, baseline=baseline)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_integration_rule_is_checked() -> None:
    model, x = make_linear("tabular"), make_inputs("tabular")
    with pytest.raises(UnknownNameError, match="did you mean 'riemann_middle'"):
        attribute("integrated_gradients", model, x, target=0, method="riemann_midle")
    with pytest.raises(UnknownNameError, match="unknown baseline 'blak'"):
        attribute("deeplift", model, x, target=0, baseline="blak")


# ------------------------------------------------------------------------------------------------
# perturbation methods on the linear model (additive: each group's effect is its own sum)


def test_occlusion_and_ablation_on_linear_model(modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    expected = group_sums(weights(model, x) * x)
    for name, params in [("occlusion", {"window": 1}), ("feature_ablation", {"patch": 1})]:
        out = attribute(name, model, x, target=TARGET, batch_size=3, **params)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6, msg=name)


def test_ablation_with_a_reference(modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    expected = group_sums(weights(model, x) * (x - simple_baseline(x, "mean")))
    out = attribute("feature_ablation", model, x, target=TARGET, patch=1, baseline="mean")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_overlapping_occlusion_on_tabular_linear_model() -> None:
    # Windows {0,1}, {1,2}, ..., {4,5}: feature i gets the mean of the sums of the windows covering it.
    model, x = make_linear("tabular"), make_inputs("tabular")
    contrib = weights(model, x) * x
    pairs = contrib[:, :-1] + contrib[:, 1:]
    expected = torch.cat([pairs[:, :1], (pairs[:, :-1] + pairs[:, 1:]) / 2, pairs[:, -1:]], dim=1)
    out = attribute("occlusion", model, x, target=TARGET, window=2, stride=1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_shapley_value_sampling_on_linear_model(modality: str) -> None:
    # Every permutation credits a group of an additive function with the same marginal, its own sum.
    model, x = make_linear(modality), make_inputs(modality)
    out = attribute("shapley_value_sampling", model, x, target=TARGET, n_samples=2, patch=1)
    torch.testing.assert_close(out, group_sums(weights(model, x) * x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["kernel_shap", "lime"])
def test_surrogates_recover_a_linear_model(modality: str, name: str) -> None:
    """The surrogate regression of an additive function is exact once the sampled masks have full
    rank (200 samples for at most 16 groups here), so only the fit's float32 rounding remains: captum
    hands sklearn float32 arrays, and Kernel SHAP weights the empty and full masks 1e6 times more than
    the rest. Measured errors are below 1e-6 on attributions of order 0.1; atol 1e-5 leaves a margin.
    LIME needs alpha=0 (least squares): its default Lasso penalty shrinks the coefficients.
    """
    model, x = make_linear(modality), make_inputs(modality)
    patch = 2 if modality == "image" else 1  # 16 groups of 2 x 2 pixels
    contrib = weights(model, x) * x
    if modality == "image":
        expected = F.avg_pool2d(contrib.sum(1, keepdim=True), 2, divisor_override=1)
        expected = expected.repeat_interleave(2, 2).repeat_interleave(2, 3).expand_as(x)
    else:
        expected = group_sums(contrib)
    extra = {"alpha": 0.0} if name == "lime" else {}
    out = attribute(name, model, x, target=TARGET, n_samples=200, patch=patch, **extra)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# class activation maps


class ConvThenAverage(nn.Module):
    """conv -> global average pool -> linear: Grad-CAM's alpha_k = W[c, k] / (number of positions)."""

    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.fc = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(2).mean(2))


def hand_grad_cam(model: ConvThenAverage, x: torch.Tensor) -> torch.Tensor:
    """relu(sum_k alpha_k A_k) at the conv's resolution, (N, 1, *spatial)."""
    with torch.no_grad():
        maps = model.conv(x)
    alpha = model.fc.weight.detach()[TARGET] / maps[0, 0].numel()
    return torch.relu(torch.einsum("nk,nk...->n...", alpha, maps)).unsqueeze(1)


@pytest.mark.parametrize("modality", ["image", "sequence"])
def test_gradcam_equals_the_hand_computation(modality: str) -> None:
    torch.manual_seed(0)  # before the conv is built: its weights must not depend on the collection order
    conv = nn.Conv2d(2, 3, 3, padding=1) if modality == "image" else nn.Conv1d(2, 3, 3, padding=1)
    model, x = ConvThenAverage(conv, 3), make_inputs(modality)
    expected = hand_grad_cam(model, x)
    assert expected.max() > 0 and (expected == 0).any()  # both sides of the ReLU are exercised
    out = attribute("gradcam", model, x, target=TARGET)
    torch.testing.assert_close(out, expected.expand_as(x), rtol=0, atol=1e-7)


def test_gradcam_upsamples_bilinearly() -> None:
    torch.manual_seed(0)
    model, x = ConvThenAverage(nn.Conv2d(2, 3, 3, stride=2, padding=1), 3), make_inputs("image")
    coarse = hand_grad_cam(model, x)
    assert coarse.shape[2:] == (4, 4)
    expected = F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    out = attribute("gradcam", model, x, target=TARGET, layer="conv")
    torch.testing.assert_close(out, expected.expand_as(x), rtol=0, atol=1e-7)


@pytest.mark.parametrize(("modality", "mode"), [("image", "bilinear"), ("sequence", "linear")])
def test_guided_gradcam_equals_captum(modality: str, mode: str) -> None:
    model, x = make_net(modality), make_inputs(modality)
    with quiet_captum():
        reference = captum.attr.GuidedGradCam(model, model[2]).attribute(
            x, target=TARGET, interpolate_mode=mode
        )
    out = attribute("guided_gradcam", model, x, target=TARGET)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-7)


def test_gradcam_layer_without_feature_map_is_refused() -> None:
    model, x = make_net("image"), make_inputs("image")
    with pytest.raises(IncompatibleError, match="layer '5' does not output a feature map"):
        attribute("gradcam", model, x, target=0, layer="5")  # Flatten
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    with pytest.raises(UnknownNameError, match="did you mean '2'"):
        attribute("gradcam", model, x, target=0, layer="2 ")


# ------------------------------------------------------------------------------------------------
# control


def test_random_is_standard_normal_noise_from_a_generator_per_sample() -> None:
    x = make_inputs("image")
    out = attribute("random", make_net("image"), x, target=0, generator=torch.Generator().manual_seed(7))
    seeds = torch.randint(0, 2**62, (x.shape[0],), generator=torch.Generator().manual_seed(7)).tolist()
    expected = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
    assert torch.equal(out, expected)
