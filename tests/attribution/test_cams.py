"""The gradient CAMs (Grad-CAM++, XGradCAM, LayerCAM, HiResCAM, FullGrad), the default CAM layer and the
``reshape`` parameter: exact values on models whose activations and gradients are known by hand."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import make_inputs, make_net
from xaibench.attribution import attribute
from xaibench.attribution.cam import capture_layer
from xaibench.attribution.fullgrad import full_gradients, rescaled
from xaibench.core.errors import IncompatibleError, InputError, XaibenchWarning
from xaibench.models import archs

GRADIENT_CAMS = ("gradcam", "gradcam_plus_plus", "xgradcam", "layercam", "hirescam")
FORWARD_CAMS = ("scorecam", "ablationcam", "eigencam")
TARGET = torch.tensor([0, 1, 2, 1])


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


class WeightedPool(nn.Module):
    """conv -> a fixed spatial weighting M and a sum over positions -> linear head W.

    logit_c = sum_k W[c, k] sum_ij M_ij A_kij + b_c, so G_kij = W[c, k] M_ij: known by hand, and not
    spatially constant unless M is (M = 1 / positions is global average pooling).
    """

    def __init__(self, weighting: torch.Tensor, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, channels, 3, padding=1)
        self.register_buffer("weighting", weighting)
        self.fc = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((self.conv(x) * self.weighting).flatten(2).sum(2))


def known(weighting: torch.Tensor, seed: int = 0) -> tuple[WeightedPool, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model, inputs, its activations A (N, C, 8, 8) and gradients G for TARGET."""
    torch.manual_seed(seed)
    model, x = WeightedPool(weighting).eval(), make_inputs("image")
    with torch.no_grad():
        activations = model.conv(x)
    gradients = model.fc.weight.detach()[TARGET][:, :, None, None] * weighting
    return model, x, activations, gradients


def as_output(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A map at the input's resolution (the conv keeps it: upsampling is the identity) as a method's output."""
    return torch.relu(cam).unsqueeze(1).expand_as(x)


def test_capture_reads_the_known_activations_and_gradients() -> None:
    weighting = torch.rand(8, 8, generator=torch.Generator().manual_seed(3))
    model, x, activations, gradients = known(weighting)
    capture = capture_layer(model, "conv", x, TARGET, gradients=True)
    assert capture.layer == ("conv", model.conv)
    torch.testing.assert_close(capture.activations, activations, rtol=0, atol=1e-6)
    torch.testing.assert_close(capture.gradients, gradients, rtol=1e-5, atol=1e-7)
    assert capture_layer(model, None, x).gradients is None  # the default here: the only conv
    assert hooks_left(model) == 0


def test_each_cam_equals_its_formula_computed_by_hand() -> None:
    # a gradient that varies in space; small, as from a pooling, so that Grad-CAM++'s denominators
    # 2 + S g stay far from 0 (near 0 its alpha is ill-conditioned and rounding decides the comparison)
    weighting = (torch.rand(8, 8, generator=torch.Generator().manual_seed(3)) + 0.5) / 64
    model, x, a, _ = known(weighting)
    w = model.fc.weight.detach()[TARGET]  # (N, C): G_kij = w_k M_ij
    sums = a.sum((2, 3))  # (N, C)
    expected = {
        "gradcam": torch.einsum("nc,ncij->nij", w * weighting.mean(), a),
        "hirescam": torch.einsum("nc,ij,ncij->nij", w, weighting, a),
        "layercam": torch.einsum("nc,ij,ncij->nij", w.clamp(min=0), weighting, a),
        "xgradcam": torch.einsum("nc,ncij->nij", w * (a * weighting).sum((2, 3)) / sums, a),
    }
    # Grad-CAM++: alpha = g^2 / (2 g^2 + S g^3) = 1 / (2 + S w M) where g != 0; w_k = sum_ij alpha relu(g)
    alpha = 1 / (2 + sums[:, :, None, None] * w[:, :, None, None] * weighting)
    weights = (alpha * (w[:, :, None, None] * weighting).clamp(min=0)).sum((2, 3))
    expected["gradcam_plus_plus"] = torch.einsum("nc,ncij->nij", weights, a)
    for name, cam in expected.items():
        assert cam.max() > 0 and (cam < 0).any(), name  # both sides of the ReLU are exercised
        out = attribute(name, model, x, target=TARGET)
        torch.testing.assert_close(out, as_output(cam, x), rtol=1e-5, atol=1e-6, msg=name)
    maps = {name: attribute(name, model, x, target=TARGET) for name in expected}
    assert not torch.allclose(maps["gradcam"], maps["hirescam"])  # the spatial weighting separates them


def test_on_global_average_pooling_the_variants_meet_grad_cam() -> None:
    """G_kij = W[c, k] / positions everywhere: HiResCAM and XGradCAM equal Grad-CAM; LayerCAM too with
    non-negative head weights, and Grad-CAM++ weighs channel k by positions * relu(g_k) / (2 + S_k g_k)."""
    model, x, a, _ = known(torch.full((8, 8), 1 / 64))
    grad_cam = attribute("gradcam", model, x, target=TARGET)
    assert grad_cam.max() > 0 and (grad_cam == 0).any()
    for name in ("hirescam", "xgradcam"):
        torch.testing.assert_close(attribute(name, model, x, target=TARGET), grad_cam, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(attribute("layercam", model, x, target=TARGET), grad_cam)  # W has negatives
    with torch.no_grad():
        model.fc.weight.abs_()
    torch.testing.assert_close(attribute("layercam", model, x, target=TARGET),
                               attribute("gradcam", model, x, target=TARGET), rtol=1e-5, atol=1e-6)
    per_channel = model.fc.weight.detach()[TARGET] / 64
    weights = 64 * per_channel.clamp(min=0) / (2 + a.sum((2, 3)) * per_channel)
    torch.testing.assert_close(attribute("gradcam_plus_plus", model, x, target=TARGET),
                               as_output(torch.einsum("nc,ncij->nij", weights, a), x), rtol=1e-5, atol=1e-6)


def test_zero_gradients_and_zero_sums_give_zero_weights_not_nan() -> None:
    model, x, _, _ = known(torch.full((8, 8), 1 / 64))
    with torch.no_grad():
        model.fc.weight[:, 0] = 0  # channel 0: G = 0 (Grad-CAM++'s 0/0)
        model.conv.weight[1] = 0
        model.conv.bias[1] = 0  # channel 1: A = 0 (XGradCAM's 0/0)
    for name in GRADIENT_CAMS:
        assert torch.isfinite(attribute(name, model, x, target=TARGET)).all(), name


# ---------------------------------------------------------------------------------------------
# FullGrad


def relu_cnn() -> nn.Module:
    """A ReLU CNN with biases everywhere: conv, batch norm (eval, non-trivial statistics), in-place ReLU,
    max pooling, a second conv, average pooling and a linear head."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_fullgrad_is_complete_on_a_relu_network() -> None:
    """sum(grad_x f * x) + sum over layers of sum(grad_b f * b) = f(x) (Srinivas & Fleuret 2019, eq. 2)."""
    model, x = relu_cnn(), make_inputs("image")
    parts = full_gradients(model, x, TARGET)
    assert [b.layer for b in parts.biases] == ["0", "1", "4", "8"]
    assert [b.placed for b in parts.biases] == [True, True, True, False]  # the head's has no positions
    total = parts.input.flatten(1).sum(1) + sum(b.value.flatten(1).sum(1) for b in parts.biases)
    with torch.no_grad():
        logits = model(x).gather(1, TARGET[:, None])[:, 0]
    torch.testing.assert_close(total, logits, rtol=1e-5, atol=1e-5)
    without_bn = parts.input.flatten(1).sum(1) + sum(b.value.flatten(1).sum(1) for b in parts.biases if b.layer != "1")
    assert (without_bn - logits).abs().max() > 1e-2  # the batch norm's effective bias is needed
    assert hooks_left(model) == 0


def test_fullgrad_map_is_the_sum_of_the_rescaled_parts() -> None:
    model, x = relu_cnn(), make_inputs("image")
    x_ = x.clone().requires_grad_(True)
    outputs: dict[str, torch.Tensor] = {}
    conv_out = model[0](x_)
    bn_out = model[1](conv_out)
    outputs["0"], outputs["1"] = conv_out, bn_out
    second = model[4](model[3](torch.relu(bn_out)))
    logits = model[8](model[7](model[6](torch.relu(second))))
    grads = torch.autograd.grad(logits.gather(1, TARGET[:, None]).sum(), [x_, conv_out, bn_out, second])
    bn = model[1]
    bn_bias = bn.bias - bn.running_mean * bn.weight / (bn.running_var + bn.eps).sqrt()
    parts = [grads[1] * model[0].bias.view(1, -1, 1, 1), grads[2] * bn_bias.view(1, -1, 1, 1),
             grads[3] * model[4].bias.view(1, -1, 1, 1)]

    def psi(part: torch.Tensor) -> torch.Tensor:
        magnitude = part.abs().flatten(1)
        low = magnitude.min(1, keepdim=True).values
        scaled = ((magnitude - low) / (magnitude - low).max(1, keepdim=True).values).view_as(part)
        return F.interpolate(scaled, size=(8, 8), mode="bilinear", align_corners=False).sum(1, keepdim=True)

    expected = psi(grads[0] * x) + sum(psi(part) for part in parts)
    out = attribute("fullgrad", model, x, target=TARGET)
    torch.testing.assert_close(out, expected.detach().expand_as(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(rescaled(torch.zeros(2, 3)), torch.zeros(2, 3))  # a zero range gives 0, not NaN


def test_fullgrad_refuses_batch_norm_in_training_mode() -> None:
    model = relu_cnn().train()
    with pytest.raises(IncompatibleError, match="batch norm in eval mode") as error:
        attribute("fullgrad", model, make_inputs("image"), target=TARGET)
    assert "\n" not in str(error.value)
    assert hooks_left(model) == 0


# ---------------------------------------------------------------------------------------------
# the default layer


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return archs.vit(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
                     num_classes=3).eval()


def rows_reaching(module: nn.Module, run) -> list[int]:
    rows: list[int] = []
    handle = module.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    try:
        run()
    finally:
        handle.remove()
    return rows


@pytest.mark.parametrize(("build", "shape", "expected"), [
    (lambda: make_net("image"), (2, 8, 8), "2"),  # the last Conv2d (the ReLU after it has no parameters)
    (lambda: make_net("sequence"), (2, 16), "2"),
    (lambda: archs.resnet18(num_classes=3).eval(), (3, 32, 32), "layer4"),  # after the addition and ReLU
    (tiny_vit, (3, 16, 16), "encoder.layers.encoder_layer_1.ln_1"),  # later patch tokens get no gradient
])
@pytest.mark.filterwarnings("ignore::xaibench.core.errors.XaibenchWarning")  # ResNet's layer4 is 1x1 at 32x32
def test_the_default_layer(build, shape: tuple[int, ...], expected: str) -> None:
    torch.manual_seed(0)
    model, x, target = build(), torch.rand(3, *shape), torch.tensor([0, 2, 1])
    assert capture_layer(model, None, x, target, gradients=True).layer[0] == expected
    for name in (*GRADIENT_CAMS, "guided_gradcam"):
        default = attribute(name, model, x, target=target)
        torch.testing.assert_close(default, attribute(name, model, x, target=target, layer=expected),
                                   rtol=0, atol=0, msg=name)

    def chunked() -> torch.Tensor:
        return attribute("gradcam", model, x, target=target, batch_size=2)

    first = next(module for module in model.modules() if not list(module.children()))
    assert rows_reaching(first, chunked) == [2, 1]  # the default is chosen on the first chunk's own pass
    torch.testing.assert_close(chunked(), attribute("gradcam", model, x, target=target))
    assert hooks_left(model) == 0


class Gated(nn.Module):
    """conv1 -> ReLU -> conv2; logits = fc1(mean of conv1) + gate * fc2(mean of conv2), the gate 1 where
    a sample's first value is above 0.5, else 0: conv2 reaches the logits of gated samples only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)
        self.pool, self.fc1, self.fc2 = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv1(x)
        second = self.conv2(self.relu(first))
        gate = (x.flatten(1)[:, :1] > 0.5).to(x.dtype)
        return gate * self.fc2(self.pool(second).flatten(1)) + self.fc1(self.pool(first).flatten(1))


def test_the_default_layer_is_chosen_on_the_first_sample_alone() -> None:
    """The first sample is not gated (conv1 is its last reached layer), the others are (conv2): every CAM
    takes conv1 whatever the batch size, as it does on the first sample alone."""
    torch.manual_seed(0)
    model, x = Gated().eval(), make_inputs("image")
    x[0, 0, 0, 0], x[1:, 0, 0, 0] = 0.1, 0.9
    assert capture_layer(model, None, x, TARGET, gradients=True).layer[0] == "conv1"
    assert capture_layer(model, None, x[1:], TARGET[1:], gradients=True).layer[0] == "conv2"
    for name in (*GRADIENT_CAMS, "guided_gradcam", *FORWARD_CAMS):
        for batch_size in (1, 4):  # against the named layer at the same batch size: a batched SVD (eigencam)
            # differs from per-sample ones in the last float32 bits, a layer choice by far more
            named = attribute(name, model, x, target=TARGET, layer="conv1", batch_size=batch_size)
            torch.testing.assert_close(attribute(name, model, x, target=TARGET, batch_size=batch_size), named,
                                       rtol=0, atol=0, msg=f"{name}, batch_size {batch_size}")


@pytest.mark.parametrize("name", FORWARD_CAMS)
def test_forward_cams_choose_the_default_layer_on_one_row(name: str) -> None:
    """A forward-only CAM's passes keep no activations for a backward pass; the pass that chooses the layer
    does, so it holds the first sample alone, not the 4 rows of the chunk."""
    model, x = make_net("image"), make_inputs("image")
    passes: list[tuple[int, bool]] = []  # (rows, gradients enabled) per pass through the first layer
    handle = model[0].register_forward_pre_hook(lambda _, args: passes.append((args[0].shape[0],
                                                                                torch.is_grad_enabled())))
    try:
        default = attribute(name, model, x, target=TARGET)
    finally:
        handle.remove()
    assert [rows for rows, enabled in passes if enabled] == [1]
    assert (4, False) in passes  # the chunk itself, read without autograd
    torch.testing.assert_close(default, attribute(name, model, x, target=TARGET, layer="2"))


def one_position() -> nn.Module:
    """conv 3x3 (8x8 map) -> ReLU -> conv 8x8 (one position) -> ReLU -> Flatten -> linear head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def xaibench_warnings(run) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run()
    return [str(warning.message) for warning in seen if issubclass(warning.category, XaibenchWarning)]


@pytest.mark.parametrize("name", [*GRADIENT_CAMS, *FORWARD_CAMS])
def test_a_layer_of_one_position_warns_once(name: str) -> None:
    """Its map is constant over the input: one warning per call, not per chunk; the default names the
    last earlier layer with more positions."""
    model, x = one_position(), make_inputs("image")
    got: list[torch.Tensor] = []
    messages = xaibench_warnings(lambda: got.append(attribute(name, model, x, target=TARGET, batch_size=2)))
    assert messages == [("layer '2' gives a feature map of one position, so the CAM map is constant over the "
                         "input and cannot localise; pass --layer with an earlier layer, e.g. --layer 0")]
    torch.testing.assert_close(got[0].flatten(1).amax(1), got[0].flatten(1).amin(1), rtol=1e-6, atol=0)  # rounding
    named = xaibench_warnings(lambda: attribute(name, model, x, target=TARGET, layer="2"))
    assert len(named) == 1 and named[0].endswith("pass --layer with an earlier layer")
    assert xaibench_warnings(lambda: attribute(name, model, x, target=TARGET, layer="0")) == []


def test_the_default_stops_before_the_head_and_passes_squeeze_excitation_pooling() -> None:
    """A learned norm after global pooling is the head's, not a feature map; a squeeze-and-excitation
    pooling inside the backbone is not the head."""

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(self.fc(self.pool(x)))

    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 4, 3, padding=1), se=SqueezeExcite(4), conv2=nn.Conv2d(4, 4, 3, padding=1),
        pool=nn.AdaptiveAvgPool2d(1), norm=nn.BatchNorm2d(4), flatten=nn.Flatten(), fc=nn.Linear(4, 3))).eval()
    x = make_inputs("image")
    assert capture_layer(model, None, x, TARGET, gradients=True).layer[0] == "conv2"


def test_a_layer_changed_in_place_after_it_is_read_before_the_change() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(3, 3)).eval()
    x = make_inputs("image")
    capture = capture_layer(model, None, x, TARGET, gradients=True)
    assert capture.layer[0] == "0"
    with torch.no_grad():
        before_relu = model[0](x)
    assert (before_relu < 0).any()
    torch.testing.assert_close(capture.activations, before_relu, rtol=0, atol=1e-6)
    expected = model[4].weight.detach()[TARGET][:, :, None, None] / 64 * (before_relu > 0)
    torch.testing.assert_close(capture.gradients, expected, rtol=1e-5, atol=1e-7)


def test_the_default_refuses_a_model_without_feature_maps() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(128, 3))
    with pytest.raises(IncompatibleError, match="no layer outputs a feature map") as error:
        attribute("gradcam", model, make_inputs("image"), target=TARGET)
    assert "\n" not in str(error.value)
    assert hooks_left(model) == 0


class Unhookable(nn.Conv2d):
    def register_forward_hook(self, *args: object, **kwargs: object) -> None:
        raise ValueError("this layer takes no hooks")


def test_a_registration_that_fails_leaves_no_hooks() -> None:
    """The default layer's recorders and FullGrad's keepers: those registered before the failure go too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), Unhookable(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    for name in ("gradcam", "scorecam", "fullgrad"):
        with pytest.raises(ValueError, match="takes no hooks"):
            attribute(name, model, make_inputs("image"), target=TARGET)
        assert hooks_left(model) == 0, name


# ---------------------------------------------------------------------------------------------
# reshape: the patch grid of token outputs


class TwoLeading(nn.Module):
    """A patch embedding (4x4 patches of a 16x16 image), two leading tokens (class and distillation, as
    DeiT has), a per-token linear block and a head that reads one patch token (row 1, column 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(1, 3, 4, stride=4)
        self.leading = nn.Parameter(torch.ones(1, 2, 3))
        self.block = nn.Linear(3, 3)
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            for layer in (self.conv_proj, self.block, self.head):
                layer.weight.uniform_(0.1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = self.block(torch.cat([self.leading.expand(x.shape[0], -1, -1), patches], dim=1))
        return self.head(tokens[:, 2 + 1 * 4 + 2])


def test_reshape_reads_the_last_tokens_as_the_grid() -> None:
    torch.manual_seed(0)
    model, x, target = TwoLeading().eval(), torch.rand(2, 1, 16, 16) + 0.1, torch.tensor([0, 1])
    with pytest.raises(InputError, match="18 tokens cannot be arranged.*reshape=HxW") as error:
        attribute("gradcam", model, x, target=target, layer="block")  # auto: 1 + 17 and 18 are no grids
    assert "\n" not in str(error.value)
    capture = capture_layer(model, "block", x, target, gradients=True, reshape="4x4")
    with torch.no_grad():
        tokens = model.block(torch.cat([model.leading.expand(2, -1, -1),
                                        model.conv_proj(x).flatten(2).transpose(1, 2)], dim=1))
    torch.testing.assert_close(capture.activations, tokens[:, 2:].transpose(1, 2).reshape(2, 3, 4, 4))
    assert torch.nonzero(capture.gradients.abs().sum(1)).tolist() == [[0, 1, 2], [1, 1, 2]]
    for name in GRADIENT_CAMS:
        coarse = attribute(name, model, x, target=target, layer="block", reshape="4x4")
        assert coarse[:, :, 4:8, 8:12].min() > 0, name  # the patch the head reads
    # the default: conv_proj under auto (the tokens are no grid), the block when the grid is given
    assert capture_layer(model, None, x, target, gradients=True).layer[0] == "conv_proj"
    assert capture_layer(model, None, x, target, gradients=True, reshape="4x4").layer[0] == "block"
    assert hooks_left(model) == 0


@pytest.mark.parametrize(("layer", "reshape", "message"), [
    ("block", "5x5", "reshape=5x5 needs 25 patch tokens, the layer gives 18"),
    ("block", "4by4", "reshape must be auto or HxW"),
    ("block", "0x4", "reshape must be auto or HxW"),
    ("conv_proj", "2x8", "reshape=2x8 does not fit a layer that outputs a 4x4 feature map"),
])
def test_a_reshape_that_does_not_fit_is_refused_in_one_line(layer: str, reshape: str, message: str) -> None:
    model = TwoLeading().eval()
    with pytest.raises(InputError, match=message) as error:
        attribute("gradcam", model, torch.rand(2, 1, 16, 16), target=0, layer=layer, reshape=reshape)
    assert "\n" not in str(error.value)
    assert hooks_left(model) == 0


def test_reshape_is_for_images() -> None:
    with pytest.raises(InputError, match="reshape=HxW reads the tokens of images"):
        attribute("layercam", make_net("sequence"), make_inputs("sequence"), target=0, reshape="2x8")


def test_gradient_cams_make_one_pass_per_chunk_and_leave_no_hooks() -> None:
    model, x = make_net("image"), make_inputs("image")
    for name in (*GRADIENT_CAMS, "fullgrad"):
        assert rows_reaching(model[0], lambda name=name: attribute(name, model, x, target=TARGET)) == [4], name
        chunks = rows_reaching(model[0], lambda name=name: attribute(name, model, x, target=TARGET, batch_size=3))
        assert chunks == [3, 1], name
    assert hooks_left(model) == 0


@pytest.mark.parametrize(("name", "build", "shape", "params"), [
    ("gradcam_plus_plus", tiny_vit, (3, 16, 16), {}),  # the default layer's search on tokens
    ("layercam", lambda: TwoLeading().eval(), (1, 16, 16), {"layer": "block", "reshape": "4x4"}),
    *((name, lambda: make_net("sequence"), (2, 16), {}) for name in ("xgradcam", "hirescam", "fullgrad")),
])
def test_no_tensor_is_created_off_the_inputs_device(name: str, build, shape: tuple[int, ...], params: dict) -> None:
    """The paths tests/test_meta_device.py does not take (it runs images and one sequence Grad-CAM):
    under the default device "meta", a tensor created without the inputs' device would fail or differ."""
    torch.manual_seed(0)
    model, x, target = build(), torch.rand(2, *shape), torch.tensor([0, 1])
    expected = attribute(name, model, x, target=target, batch_size=1, **params)
    torch.set_default_device("meta")
    try:
        got = attribute(name, model, x, target=target, batch_size=1, **params)
    finally:
        torch.set_default_device(None)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
