"""Score-CAM, Ablation-CAM and Eigen-CAM: closed forms on models whose layer and head are known, the
papers' definitions computed directly (one hooked pass per ablated channel), rows per pass, and the
reference ResNet-18 / ViT with their default layers."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import xaibench.attribution.cam_forward as cam_forward_module
from tests.attribution.test_methods import hooks_left
from xaibench.attribution import attribute
from xaibench.core.devices import decomposition_device
from xaibench.core.progress import reporting
from xaibench.models.archs import resnet18, vit

W = torch.tensor([[1.0, 2.0, -1.0], [-1.0, 0.5, 3.0], [0.2, -0.3, 0.1]])
B = torch.tensor([0.1, 0.0, -4.0])


def readout() -> nn.Sequential:
    """layer: A = (x_0, x_1, 0.5), a 1x1 convolution whose third channel is a constant; head: global
    average pooling and logits = W mean(A) + B."""
    layer = nn.Conv2d(2, 3, 1)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 0] = layer.weight[1, 1] = 1.0
        layer.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    fc = nn.Linear(3, 3)
    with torch.no_grad():
        fc.weight.copy_(W)
        fc.bias.copy_(B)
    return nn.Sequential(OrderedDict(layer=layer, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=fc)).eval()


X = torch.rand((3, 2, 3, 3), generator=torch.Generator().manual_seed(0)) - 0.3
TARGET = torch.tensor([0, 1, 2])


def readout_layer(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[:, 0], x[:, 1], torch.full_like(x[:, 0], 0.5)], 1)


def logits_of(activations: torch.Tensor) -> torch.Tensor:
    return activations.mean((2, 3)) @ W.T + B


def test_scorecam_closed_form() -> None:
    """w_k = softmax(W mean(A(x * H_k)) + B)[c] - softmax(W mean(A(0)) + B)[c], H_k = A_k min-max scaled;
    the constant channel has no mask: weight 0."""
    a = readout_layer(X)
    baseline = torch.softmax(logits_of(readout_layer(torch.zeros_like(X))), 1)
    expected = []
    for i, c in enumerate(TARGET.tolist()):
        weights = []
        for k in range(2):
            mask = (a[i, k] - a[i, k].min()) / (a[i, k].max() - a[i, k].min())
            masked = readout_layer((X[i] * mask)[None])
            weights.append(torch.softmax(logits_of(masked), 1)[0, c] - baseline[0, c])
        expected.append(torch.relu(weights[0] * a[i, 0] + weights[1] * a[i, 1]))
    got = attribute("scorecam", readout(), X, target=TARGET, layer="layer")
    torch.testing.assert_close(got, torch.stack(expected)[:, None].expand_as(X))


def test_ablationcam_closed_form() -> None:
    """Zeroing channel k lowers y_c by W[c, k] mean(A_k): w_k = W[c, k] mean(A_k) / |y_c|, also for the
    negative logit of class 2 (divided by |y_c|, the weights keep their sign)."""
    a = readout_layer(X)
    means = a.mean((2, 3))
    y = logits_of(a).gather(1, TARGET[:, None])
    assert (y[2] < 0).all()
    weights = W[TARGET] * means / y.abs()
    expected = torch.relu(torch.einsum("nc,nchw->nhw", weights, a))
    got = attribute("ablationcam", readout(), X, target=TARGET, layer="layer")
    torch.testing.assert_close(got, expected[:, None].expand_as(X))


def rank_one(a: list[float]) -> nn.Sequential:
    """A 1x1 convolution from one channel to len(a): A_k = a_k x, activations of rank one."""
    conv = nn.Conv2d(1, len(a), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(a).view(-1, 1, 1, 1))
    return nn.Sequential(OrderedDict(conv=conv, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                     fc=nn.Linear(len(a), 3))).eval()


@pytest.mark.parametrize("a", [[3.0, 4.0], [-3.0, 4.0, 0.0], [-3.0, -4.0]])
def test_eigencam_of_rank_one_activations_is_their_map(a: list[float]) -> None:
    """O = m a^T projects on v_1 = +-a/|a| as +-|a| m; the sign is fixed so that the map sums to a
    positive number, whatever the signs of a; the target is not used."""
    m = torch.tensor([[[[0.0, 1.0, 2.0], [-1.0, 0.5, 3.0], [0.0, 0.0, 1.0]]]])
    x = torch.cat([m, -m])  # the second map sums to a negative number: its sign flips
    model = rank_one(a)
    expected = 5.0 * torch.relu(torch.cat([m, m]))
    for target in (0, 2):
        got = attribute("eigencam", model, x, target=target, layer="conv")
        torch.testing.assert_close(got, expected)


def test_eigencam_centred_sign_follows_the_largest_entry() -> None:
    """Centred, the rank-one map becomes |a| (m - mean m), whose sum is 0: the sign makes the entry of
    largest magnitude positive."""
    m = torch.tensor([[[[0.0, 1.0], [1.0, 6.0]]]])
    centred = 5.0 * (m - m.mean())
    got = attribute("eigencam", rank_one([3.0, 4.0]), torch.cat([m, -m]), target=0, layer="conv", center=True)
    torch.testing.assert_close(got, torch.relu(torch.cat([centred, centred])))


def test_eigencam_svd_runs_on_the_cpu_for_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """MPS has no SVD kernel: the decomposition runs where ``decomposition_device`` says, the map comes back."""
    assert decomposition_device(torch.device("mps")) == torch.device("cpu")
    assert decomposition_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    asked: list[torch.device] = []
    monkeypatch.setattr(cam_forward_module, "decomposition_device",
                        lambda device: asked.append(device) or torch.device("cpu"))
    m = torch.tensor([[[[0.0, 1.0], [1.0, 6.0]]]])
    torch.testing.assert_close(attribute("eigencam", rank_one([3.0, 4.0]), m, target=0, layer="conv"), 5.0 * m)
    assert asked == [torch.device("cpu")]


def count_rows(module: nn.Module) -> tuple[list[int], object]:
    rows: list[int] = []
    return rows, module.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_scorecam_rows_per_pass(batch_size: int) -> None:
    """Every pass holds at most batch_size rows (masked copies of several samples together); the
    passes are one per chunk to read the layer, one zero row for the baseline and one row per sample
    and non-constant channel (the constant one gets none); the result is the one-pass result."""
    model = readout()
    full = attribute("scorecam", model, X, target=TARGET, layer="layer")
    rows, handle = count_rows(model.layer)
    try:
        chunked = attribute("scorecam", model, X, target=TARGET, layer="layer", batch_size=batch_size)
    finally:
        handle.remove()
    torch.testing.assert_close(chunked, full)
    assert max(rows) <= batch_size
    assert sum(rows) == len(X) + 1 + 2 * len(X)


def test_scorecam_reports_each_sample_when_its_rows_are_done() -> None:
    reported: list[int] = []
    with reporting(reported.append):
        attribute("scorecam", readout(), X, target=TARGET, layer="layer", batch_size=3)
    assert reported == [1, 2]  # rows (0,0) (0,1) (1,0) | (1,1) (2,0) (2,1) for the chunk of 3 samples


class Residual(nn.Module):
    """A shortcut crosses the layer ``conv2``: g = conv2(h) + h."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        return self.fc(torch.relu(self.conv2(h) + h).mean((2, 3)))


class Twice(Residual):
    """One ReLU module runs twice: the CAM reads (and ablates) its last call, after conv2."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        return self.fc(self.act(self.conv2(h) + h).mean((2, 3)))


class Concatenated(Residual):
    """The head reads the layer's input and output concatenated: one row cannot broadcast there."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        return self.fc(torch.cat([h, torch.relu(self.conv2(h))], 1).mean((2, 3)))


def zeroing(k: int, last_call: int, tokens: bool) -> object:
    """A forward hook that sets channel k (for tokens, feature k of the patch tokens) of the output of
    the module's ``last_call``-th call in a pass to zero."""
    calls = 0

    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        nonlocal calls
        calls += 1
        if calls < last_call:
            return None
        output = output.clone()
        if tokens:
            output[:, 1:, k] = 0
        else:
            output[:, k] = 0
        return output

    return hook


def ablation_by_definition(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           tokens: bool = False) -> torch.Tensor:
    """The paper's weights, one hooked pass per channel, the output's channel k of the layer's last call
    set to zero; the map at the layer's resolution, (N, *spatial)."""
    kept: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _a, output: kept.append(output))
    with torch.no_grad():
        y = model(x).gather(1, target[:, None])[:, 0]
    handle.remove()
    a = kept[-1][:, 1:].transpose(1, 2).unflatten(2, (4, 4)) if tokens else kept[-1]
    weights = torch.zeros(a.shape[:2])
    for k in range(a.shape[1]):
        handle = layer.register_forward_hook(zeroing(k, len(kept), tokens))
        with torch.no_grad():
            weights[:, k] = (y - model(x).gather(1, target[:, None])[:, 0]) / y.abs()
        handle.remove()
    return torch.relu(torch.einsum("nc,nc...->n...", weights, a))


@pytest.mark.parametrize(("model_class", "layer", "rows_per_pass"),
                         [(Residual, "conv2", 1), (Twice, "act", 1), (Concatenated, "conv2", 4)])
def test_ablationcam_is_its_definition_with_and_without_a_shared_prefix(model_class: type, layer: str,
                                                                       rows_per_pass: int) -> None:
    """Across a residual shortcut the layers before conv2 run on one row per pass; a concatenation
    across the layer makes the sample replicated on every row; both give the paper's weights."""
    torch.manual_seed(0)
    model = model_class().eval()
    x = torch.rand(3, 2, 6, 6)
    target = torch.tensor([0, 1, 2])
    expected = ablation_by_definition(model, getattr(model, layer), x, target)
    rows, handle = count_rows(model.conv1)
    try:
        got = attribute("ablationcam", model, x, target=target, layer=layer, batch_size=4)
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected[:, None].expand_as(x), atol=1e-5, rtol=1e-4)
    assert expected.any()
    ablation_passes = rows[5:] if model_class is Concatenated else rows[4:]  # after the capture and check passes
    assert max(ablation_passes) == rows_per_pass and max(rows) <= 4


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return vit(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
               num_classes=3).eval()


def test_ablationcam_on_vit_tokens_is_its_definition() -> None:
    """Feature k of the patch tokens zeroed (the class token kept); the block's residual input broadcasts
    from the single row that the layers before ln_1 ran on."""
    model = tiny_vit()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 2])
    layer = model.encoder.layers.encoder_layer_1.ln_1
    expected = ablation_by_definition(model, layer, x, target, tokens=True)
    got = attribute("ablationcam", model, x, target=target, layer="encoder.layers.encoder_layer_1.ln_1",
                    batch_size=3)
    upsampled = nn.functional.interpolate(expected[:, None], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, upsampled.expand_as(x), atol=1e-5, rtol=1e-4)
    assert expected.any()


@pytest.mark.parametrize("name", ["scorecam", "ablationcam", "eigencam"])
@pytest.mark.parametrize("model_name", ["resnet18", "vit"])
def test_reference_models_with_the_default_layer(name: str, model_name: str) -> None:
    """ResNet-18's layer4 at 64x64 and the tiny ViT's last ln_1 are 2x2 and 4x4 grids: the maps vary over
    the image (those of a single position would be constant). The target is the predicted class: on the
    random ResNet the logits of classes 0 and 1 are negative and their maps all 0; on the random ViT
    Ablation-CAM's map of the second sample is all 0 (every channel's weight against its activations)."""
    torch.manual_seed(0)
    model = resnet18(num_classes=3).eval() if model_name == "resnet18" else tiny_vit()
    size = 64 if model_name == "resnet18" else 16
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        predicted = model(x).argmax(1)
    got = attribute(name, model, x, target=predicted)
    assert got.shape == x.shape and torch.isfinite(got).all() and (got >= 0).all()
    flat = got.flatten(1)
    varies = (flat.amax(1) > 0) & (flat.std(1) > 1e-3 * flat.amax(1))
    assert varies.all() if model_name == "resnet18" or name != "ablationcam" else varies[0]
    assert hooks_left(model) == 0
