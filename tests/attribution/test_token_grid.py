"""Layer methods on a vision transformer block: its tokens read as their grid of patches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xaibench.attribution import attribute
from xaibench.attribution.cam import grad_cam
from xaibench.attribution.layer_path import upsampled
from xaibench.attribution.layers import feature_map, token_grid
from xaibench.core.errors import IncompatibleError, InputError
from xaibench.models import archs

KNOWN = (2, 5)  # the patch the model reads: row 2, column 5 of an 8 x 12 grid (a 32 x 48 image, patches 4)


def as_tokens(grid: torch.Tensor, leading: int = 1) -> torch.Tensor:
    """(N, D, h, w) -> (N, leading + h * w, D): leading tokens (-1), then the patches row by row."""
    patches = grid.flatten(2).transpose(1, 2)
    return torch.cat([-torch.ones(grid.shape[0], leading, grid.shape[1]), patches], dim=1)


def test_tokens_are_arranged_row_by_row_after_the_class_token():
    grid = torch.rand(2, 5, 3, 4)  # h != w: a transposed or shifted grid would not match
    torch.testing.assert_close(token_grid(as_tokens(grid), (12, 16)), grid, rtol=0, atol=0)
    torch.testing.assert_close(token_grid(as_tokens(grid, leading=0), (12, 16)), grid, rtol=0, atol=0)
    torch.testing.assert_close(token_grid(as_tokens(grid), (13, 17)), grid, rtol=0, atol=0)  # h = 13 // 4
    images = torch.rand(2, 3, 12, 16)
    torch.testing.assert_close(feature_map(as_tokens(grid), images), grid, rtol=0, atol=0)
    assert feature_map(grid, images) is grid  # a feature map stays as it is
    with pytest.raises(InputError, match="15 tokens cannot be arranged as a grid") as error:
        token_grid(torch.rand(2, 15, 5), (12, 16))  # neither 1 + h * w nor h * w
    assert "\n" not in str(error.value)


class OnePatch(nn.Module):
    """A patch embedding, a class token, a block (identity here) and a head that reads one patch token."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(1, 3, 4, stride=4, bias=False)
        self.class_token = nn.Parameter(torch.ones(1, 1, 3))
        self.block = nn.Identity()
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv_proj.weight.uniform_(0.1, 1.0)
            self.head.weight.uniform_(0.1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = self.block(torch.cat([self.class_token.expand(x.shape[0], -1, -1), patches], dim=1))
        return self.head(tokens[:, 1 + KNOWN[0] * 12 + KNOWN[1]])


def test_grad_cam_on_tokens_lights_the_one_patch_the_logits_depend_on():
    torch.manual_seed(0)
    model, x = OnePatch().eval(), torch.zeros(2, 1, 32, 48)
    row, column = KNOWN
    x[:, :, 4 * row:4 * row + 4, 4 * column:4 * column + 4] = torch.rand(2, 1, 4, 4) + 0.5
    coarse = grad_cam(model, ("block", model.block), x, torch.tensor([0, 1]))
    assert coarse.shape == (2, 1, 8, 12)
    assert torch.nonzero(coarse[:, 0]).tolist() == [[0, row, column], [1, row, column]]
    maps = attribute("gradcam", model, x, target=torch.tensor([0, 1]), layer="block")
    assert maps.shape == x.shape
    peak = maps[:, 0].flatten(1).argmax(1)
    assert all(4 * row <= p // 48 < 4 * row + 4 and 4 * column <= p % 48 < 4 * column + 4 for p in peak.tolist())
    assert maps[:, :, :4 * row - 2].abs().max() == 0 and maps[:, :, :, 4 * column + 6:].abs().max() == 0
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_methods_run_on_a_vit_block():
    torch.manual_seed(0)
    model = archs.vit(image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=12,
                      num_classes=3).eval()
    x, target = torch.rand(2, 3, 32, 32), torch.tensor([0, 2])
    for layer in ("encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1.ln_1"):
        cam = attribute("gradcam", model, x, target=target, layer=layer)
        assert cam.shape == x.shape and (cam >= 0).all() and cam.sum() > 0
        assert attribute("guided_gradcam", model, x, target=target, layer=layer).abs().sum() > 0
    with pytest.raises(IncompatibleError, match="logits do not depend on the patch tokens") as error:
        attribute("gradcam", model, x, target=target, layer="encoder.layers.encoder_layer_1")  # the last block
    assert "\n" not in str(error.value)
    assert all(not m._forward_hooks for m in model.modules())
    tokens = torch.rand(2, 65, 8)
    torch.testing.assert_close(upsampled(tokens, x), upsampled(token_grid(tokens, (32, 32)), x))
    maps = attribute("bee", model, x, target=target, layer="encoder.layers.encoder_layer_0", arms="zero",
                     rounds=1, n_steps=2, generator=torch.Generator().manual_seed(0))
    assert maps.shape == x.shape and maps.abs().sum() > 0
