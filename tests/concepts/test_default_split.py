"""The default concept layer on residual and transformer models: a split point that reproduces the model."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from tests.concepts.test_split import cnn
from xaibench.concepts.extract import Settings, concept_maps, extract, upsampled
from xaibench.concepts.split import (
    default_layer,
    feature_maps,
    split_at_default_layer,
    split_model,
)
from xaibench.core.errors import InputError
from xaibench.models import archs


class SharedReluBlock(nn.Module):
    """A residual block in torchvision's style: one ReLU module used twice, so none follows conv2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class NeedsItsBatchSize(nn.Module):
    """Reads the batch size before the layer and uses it after: h needs as many zero rows as codes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Linear(2 * 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).reshape(x.shape[0], -1))


class Residual(nn.Module):
    """A skip connection across the whole network: no layer reproduces it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((self.conv(x) + x).flatten(1))


def outputs_reproduced(model: nn.Module, x: torch.Tensor) -> tuple[str, object, torch.Tensor]:
    """The default split's layer, its h, and g(x); h(g(x)) must be the model's output exactly."""
    split = split_at_default_layer(model, x[:2])
    maps = feature_maps(split, x, batch_size=None)
    with torch.no_grad():
        torch.testing.assert_close(split.h(maps), model(x), rtol=0, atol=0)
    return split.layer, split.h, maps


def test_resnet18_splits_after_its_last_stage_as_a_cut():
    torch.manual_seed(0)
    model, x = archs.resnet18(num_classes=3).eval(), torch.rand(3, 3, 32, 32)
    assert default_layer(model) == "layer4.1.relu2"  # the block's output, inside the stage
    layer, h, maps = outputs_reproduced(model, x)
    assert layer == "layer4" and isinstance(h, nn.Sequential) and [type(m) for m in h] == [
        nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]  # only the pool and the head run on rebuilt activations
    assert maps.shape == (3, 512, 1, 1)


def test_a_vit_splits_after_its_last_block_with_one_position_per_token():
    torch.manual_seed(0)
    model = archs.vit(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=12,
                      num_classes=3).eval()
    x = torch.rand(4, 3, 32, 32)
    layer, h, maps = outputs_reproduced(model, x)
    assert layer == "encoder.layers.encoder_layer_1"
    assert maps.shape == (4, 8, 1 + 4 * 4)  # channels first, the class token and 16 patches
    rows = []
    handle = model.conv_proj.register_forward_hook(lambda _m, inputs, _out: rows.append(inputs[0].shape[0]))
    with torch.no_grad():
        h(maps)
    handle.remove()
    assert rows == [1]  # the layers before the split run on one zero row, not on every row of the codes
    split = split_at_default_layer(model, x[:2])
    found = extract(split, x, torch.zeros(4, dtype=torch.long),
                    Settings(method="pca", n_concepts=3, mode="holistic", importance="occlusion"))
    assert found.activations.shape == (4 * 17, 8) and found.image_codes.shape == (4, 17, 3)
    drawn = concept_maps(split, found.bank, x)  # the patches' codes on their 4 x 4 grid, upsampled
    assert drawn.shape == (4, 3, 32, 32)
    grid = found.image_codes[:, 1:].unflatten(1, (4, 4))  # the class token's codes are not drawn
    torch.testing.assert_close(drawn, upsampled(grid, (32, 32)), rtol=1e-5, atol=1e-5)


def test_a_residual_block_without_an_activation_after_its_last_convolution():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 8, 8)
    head = [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(4, 2))]
    staged = nn.Sequential(OrderedDict([("stage", nn.Sequential(SharedReluBlock())), *head])).eval()
    assert default_layer(staged) == "stage.0.conv2"  # a skip connection crosses it
    assert outputs_reproduced(staged, x)[0] == "stage"
    wrapped = nn.Sequential(staged)  # the stage is no direct child: the block, by injection
    assert outputs_reproduced(wrapped, x)[0] == "0.stage.0"


def test_small_cnns_keep_their_default_and_no_split_point_is_refused():
    x = torch.rand(3, 1, 8, 8)
    assert outputs_reproduced(cnn(), x)[0] == "3"
    torch.manual_seed(0)
    needs = NeedsItsBatchSize().eval()
    assert outputs_reproduced(needs, x)[0] == "relu"  # injected into as many zero rows as it is given
    single = split_model(needs, "relu", x[:1])  # one probe row is checked as two
    with torch.no_grad():
        torch.testing.assert_close(single.h(feature_maps(single, x, None)), needs(x), rtol=0, atol=0)
    with pytest.raises(InputError, match="no layer around conv reproduces the model's outputs"):
        split_at_default_layer(Residual().eval(), x)
