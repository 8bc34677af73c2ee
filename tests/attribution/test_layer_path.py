"""Integrated gradients in a layer's activation space (BEE's layer variant), upsampled like Grad-CAM."""

from __future__ import annotations

import torch
from torch import nn

from tests.conftest import make_inputs, make_net
from xaibench.attribution import attribute
from xaibench.attribution.layer_path import layer_activations, layer_path_integral, upsampled
from xaibench.attribution.path import quadrature

TARGET = torch.tensor([0, 1, 2, 1])


def linear_tail_net() -> nn.Module:
    """conv -> relu -> (flatten -> linear): after layer "1" the network is linear, so layer IG is exact."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()


def test_layer_integral_is_exact_where_the_tail_is_linear() -> None:
    model, x = linear_tail_net(), make_inputs("image")
    layer = model[1]
    activations = layer_activations(model, layer, x, None)
    baselines = torch.rand(activations.shape, generator=torch.Generator().manual_seed(1))
    alphas, weights = quadrature("gausslegendre", 4)
    maps = layer_path_integral(model, layer, x, activations, baselines, TARGET, alphas, weights, batch_size=3)
    tail_weights = model[3].weight.detach()[TARGET].view(-1, 3, 8, 8)
    torch.testing.assert_close(maps, (activations - baselines) * tail_weights, rtol=1e-5, atol=1e-6)
    assert not layer._forward_hooks  # the injection hook is gone


def test_upsampled_maps_have_the_input_shape_and_one_map_per_channel() -> None:
    x = make_inputs("image")
    maps = upsampled(torch.ones(4, 5, 4, 4), x)
    assert maps.shape == x.shape and torch.allclose(maps, torch.full_like(x, 5.0))
    sequence = make_inputs("sequence")
    assert upsampled(torch.ones(4, 3, 8), sequence).shape == sequence.shape


def test_bee_in_layer_space() -> None:
    model, x = make_net("image"), make_inputs("image")
    params = {"arms": "zero", "rounds": 1, "n_steps": 4, "layer": "2"}
    maps = attribute("bee", model, x, target=TARGET, generator=torch.Generator().manual_seed(0), **params)
    layer = model[2]
    activations = layer_activations(model, layer, x, None)
    alphas, weights = quadrature("gausslegendre", 4)
    expected = upsampled(layer_path_integral(model, layer, x, activations, torch.zeros_like(activations), TARGET,
                                             alphas, weights, None), x)
    torch.testing.assert_close(maps, expected)
    again = attribute("bee", model, x, target=TARGET, generator=torch.Generator().manual_seed(0), batch_size=3,
                      **{**params, "arms": "zero,blur,uniform", "rounds": 3})
    full = attribute("bee", model, x, target=TARGET, generator=torch.Generator().manual_seed(0),
                     **{**params, "arms": "zero,blur,uniform", "rounds": 3})
    torch.testing.assert_close(again, full, rtol=1e-4, atol=1e-6)
