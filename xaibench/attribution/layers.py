"""Choosing a model layer by dotted name (or the last convolution), and reading its output as a map.

Layer methods (CAMs, BEE's layer variant, concept maps) need a layer's output as a feature map
(N, C, *spatial) laid out like the input. A convolution gives one; a vision transformer's block gives a
token sequence (N, T, D). ``feature_map`` arranges the tokens of an image on their grid, as Chefer et
al. (CVPR 2021) and the ViT Grad-CAM recipes do: the image (H, W) was cut into an h x w grid of patches
by one stride s (h = H // s, w = W // s), the patch tokens follow ``T - h * w`` leading tokens (one class
token; or none, for transformers that pool their patches), row by row, as a patch embedding that
flattens a convolution's output gives them. The leading tokens are dropped and the patches become
(N, D, h, w). One class token is tried first, then none; tokens that fit neither are refused.

A grid given by the user (``reshape=HxW``, ``parse_grid``) replaces that reading: the last H * W tokens
are the patches, row by row, whatever leads them (a class and a distillation token, register tokens),
and a feature map must already have that size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import is_layer, named_layers, require_hooks

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


def find_layer(module: torch.nn.Module, name: str | None) -> tuple[str, torch.nn.Module]:
    """The submodule called ``name`` (dotted, as in ``named_modules`` and ``inspect``), or the last
    Conv1d/Conv2d (also one that was scripted or exported), for a method that hooks it.

    Raises:
        IncompatibleError: when the model's layers cannot run hooks (``require_hooks``), or ``name`` is
            None and the model has no convolution.
        UnknownNameError: when no submodule has that name (suggesting the closest one).
    """
    named = dict(named_layers(module))
    if name is not None and name not in named:
        raise UnknownNameError.for_name("layer", name, list(named))
    require_hooks(module)
    if name is not None:
        return name, named[name]
    convolutions = [(n, m) for n, m in named.items() if is_layer(m, torch.nn.Conv1d, torch.nn.Conv2d)]
    if not convolutions:
        raise IncompatibleError("no convolutional layer; pass --layer")
    return convolutions[-1]


LEADING_TOKENS = (1, 0)  # a class token, else none: the readings ``token_grid`` tries, in this order
AUTO_GRID = "auto"


def parse_grid(spec: str) -> tuple[int, int] | None:
    """A ``reshape`` parameter: None for "auto" (``token_grid``'s reading), else (H, W) from "HxW".

    Raises:
        InputError: anything else, or a side below 1.
    """
    text = spec.strip().lower()
    if text == AUTO_GRID:
        return None
    sides = text.split("x")
    if len(sides) == 2 and all(side.strip().isdigit() for side in sides) and min(map(int, sides)) >= 1:
        return int(sides[0]), int(sides[1])
    raise InputError(f"reshape must be auto or HxW (e.g. 14x14), got {spec!r}")


def feature_map(output: torch.Tensor, inputs: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """A layer's ``output`` for ``inputs`` as a channels-first map: the output itself, except tokens
    (N, T, D) of images (N, C, H, W), which become their patch grid (N, D, h, w): ``token_grid``'s, or
    the last h * w tokens for a given ``grid`` (h, w).

    Raises:
        InputError: tokens of an image that cannot be arranged as a grid; a ``grid`` that the tokens do
            not fill or that a feature map does not have; a ``grid`` for inputs that are not images.
    """
    require_image_grid(grid, inputs)
    if inputs.ndim == 4 and output.ndim == 3:
        return token_grid(output, (inputs.shape[2], inputs.shape[3])) if grid is None else forced_grid(output, grid)
    if grid is not None and output.ndim == 4 and tuple(output.shape[2:]) != grid:
        raise InputError(f"reshape={grid[0]}x{grid[1]} does not fit a layer that outputs a "
                         f"{output.shape[2]}x{output.shape[3]} feature map; use reshape=auto")
    return output


def require_image_grid(grid: tuple[int, int] | None, inputs: torch.Tensor) -> None:
    """Refuse a given ``grid`` for inputs that are not images (N, C, H, W).

    Raises:
        InputError: a grid for other inputs.
    """
    if grid is not None and inputs.ndim != 4:
        raise InputError("reshape=HxW reads the tokens of images; leave it at auto for other inputs")


def forced_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The last h * w of (N, T, D) ``tokens`` as their (N, D, h, w) grid, row by row, for ``grid`` (h, w).

    Raises:
        InputError: fewer than h * w tokens.
    """
    patches = grid[0] * grid[1]
    if tokens.shape[1] < patches:
        raise InputError(f"reshape={grid[0]}x{grid[1]} needs {patches} patch tokens, the layer gives "
                         f"{tokens.shape[1]} tokens")
    return tokens[:, tokens.shape[1] - patches:].transpose(1, 2).unflatten(2, grid)


def token_grid(tokens: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The patch tokens of (N, T, D) ``tokens`` of images of ``image_size`` (H, W) as (N, D, h, w), a view;
    the rule is in the module docstring.

    Raises:
        InputError: no class-token count and stride fit T and the image size.
    """
    height, width = image_size
    count = tokens.shape[1]
    for leading in LEADING_TOKENS:
        grid = _grid(count - leading, height, width)
        if grid is not None:
            patches = tokens[:, leading:]
            return patches.transpose(1, 2).unflatten(2, grid)
    raise InputError(f"a layer output of {count} tokens cannot be arranged as a grid of patches of a "
                     f"{height}x{width} image (a class token and h*w patches, h = {height} // s, "
                     f"w = {width} // s for one stride s); give the grid (-p reshape=HxW) or pass a layer "
                     "with a feature map")


def _grid(patches: int, height: int, width: int) -> tuple[int, int] | None:
    """(h, w) = (H // s, W // s) with h * w == ``patches`` > 0 for some stride s, or None."""
    for stride in range(1, max(height, width) + 1):
        rows, columns = height // stride, width // stride
        if rows * columns <= patches:  # the product only falls as the stride grows: the first is the one
            return (rows, columns) if rows * columns == patches > 0 else None
    return None
