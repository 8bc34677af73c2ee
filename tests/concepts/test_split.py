"""The model split at a layer, and the activations CRAFT factorises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xaibench.concepts.split import (
    activations,
    crop_boxes,
    crops,
    default_layer,
    feature_maps,
    split_model,
    traced_suffix,
)
from xaibench.core.errors import InputError


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()


class Residual(nn.Module):
    """A skip connection across ``inner``: splitting there cannot be done from activations alone."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inner(x) + x)


def test_sequential_split_and_injection_split_reproduce_the_model():
    model, x = cnn(), torch.rand(5, 1, 8, 8)
    split = split_model(model, "3", x[:2])
    assert isinstance(split.h, nn.Sequential) and split.how == "cut"
    maps = feature_maps(split, x, batch_size=2)
    assert maps.shape == (5, 6, 8, 8) and (maps >= 0).all()
    torch.testing.assert_close(split.h(maps), model(x))
    wrapped = nn.Sequential(model)  # the layer is no direct child: injection
    injected = split_model(wrapped, "0.3", x[:2])
    torch.testing.assert_close(injected.h(injected.g(x)), model(x))


def test_a_skip_connection_across_the_layer_is_refused():
    assert traced_suffix(Residual(), "inner") is None  # the sum after it reads the input
    with pytest.raises(InputError, match="cannot be split at inner"):
        split_model(Residual(), "inner", torch.rand(3, 4))


class TwoParts(nn.Module):
    """Not an nn.Sequential: features, then a head, called from forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.head = nn.Linear(6, 3)
        self.scale = nn.Parameter(torch.tensor(2.0))  # read after the split: copied into the traced graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)).mean((2, 3)) * self.scale)


class Branching(TwoParts):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if bool(x.sum() > -1e9) else -super().forward(x)


def test_a_model_split_by_tracing_runs_only_the_layers_after_the_split():
    model, x = TwoParts().eval(), torch.rand(5, 1, 8, 8)
    split = split_model(model, "features.1", x[:2])
    assert split.how == "traced"
    maps = split.g(x)
    calls: list[int] = []
    handle = model.features[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        out = split.h(maps)
    finally:
        handle.remove()
    assert calls == []  # the first convolution, before the split, does not run in h
    torch.testing.assert_close(out, model(x))


def test_a_model_torch_fx_cannot_trace_is_split_by_injection():
    model, x = Branching().eval(), torch.rand(5, 1, 8, 8)
    assert traced_suffix(model, "features.1") is None
    split = split_model(model, "features.1", x[:2])
    assert split.how == "injected"
    torch.testing.assert_close(split.h(split.g(x)), model(x))


def test_default_layer_is_the_last_activation_after_the_last_convolution():
    assert default_layer(cnn()) == "3"
    assert default_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())) == "0"
    with pytest.raises(InputError, match="no convolution"):
        default_layer(nn.Sequential(nn.Linear(2, 2)))


def test_crops_cover_the_image_on_craft_s_grid():
    assert crop_boxes(64, 16) == [0, 12, 24, 36, 48]
    assert crop_boxes(10, 4) == [0, 3, 6]  # the last crop is flush with the border
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    tiles = crops(x, 0.5)  # 4x4 crops at 0 and 3, 4: starts [0, 3, 4]
    assert tiles.shape == (2 * 9, 1, 8, 8)
    first = torch.nn.functional.interpolate(x[:1, :, 0:4, 0:4], size=(8, 8), mode="bilinear",
                                            align_corners=False)
    torch.testing.assert_close(tiles[0], first[0])


def test_activation_modes():
    model, x = cnn(), torch.rand(3, 1, 8, 8)
    split = split_model(model, "3", x)
    maps = feature_maps(split, x, None)
    assert torch.equal(activations(split, x, "holistic"), maps.flatten(2).transpose(1, 2).reshape(-1, 6))
    torch.testing.assert_close(activations(split, x, "pooled"), maps.mean((2, 3)))
    assert activations(split, x, "patches", patch_size=0.5).shape == (3 * 9, 6)
