"""``xaibench.data.transforms``: resize and crop values known by hand or equal to PIL's, masks by nearest
pixel, the flags' parsing and refusals, and ``prepare`` applying it all before the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.core.errors import InputError
from xaibench.data import Dataset
from xaibench.data.prepare import Selection, prepare
from xaibench.data.transforms import (
    PRESETS,
    Preprocessing,
    center_crop,
    from_flags,
    resize_images,
    resize_masks,
    resized_size,
)
from xaibench.models import LoadedModel, ModelMeta

GRID = torch.arange(16.0).reshape(1, 1, 4, 4)  # pixel (i, j) = 4 i + j


def test_downscaling_averages_with_the_triangle_filter():
    # by 2, each output pixel weighs its input rows/columns 0.75, 0.75, 0.25 (cut at the border): 5/7, 16/7
    expected = torch.tensor([[25.0, 36.0], [69.0, 80.0]]) / 7
    assert torch.allclose(resize_images(GRID, (2, 2))[0, 0], expected, atol=1e-6)


def test_upscaling_is_bilinear_on_pixel_centres():
    row = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)
    assert resize_images(row, (1, 4))[0, 0, 0].tolist() == [0.0, 0.25, 0.75, 1.0]


@pytest.mark.parametrize("size", [(32, 24), (20, 30), (7, 5), (100, 80)])
def test_resize_equals_pils_bilinear_resize(size):
    image = np.random.default_rng(0).random((64, 48), dtype=np.float32)
    expected = np.asarray(Image.fromarray(image, mode="F").resize(size[::-1], Image.BILINEAR))
    resized = resize_images(torch.from_numpy(image)[None, None], size)[0, 0].numpy()
    np.testing.assert_allclose(resized, expected, atol=1e-5)  # float32 weights computed apart


@pytest.mark.parametrize("size", [(32, 32), (20, 30), (100, 70)])
def test_masks_take_the_pixel_under_each_new_pixels_centre(size):
    mask = np.random.default_rng(1).random((64, 64)) < 0.3
    rows, cols = (np.floor((np.arange(side) + 0.5) * 64 / side).astype(int) for side in size)
    expected = mask[rows][:, cols]
    resized = resize_masks(torch.from_numpy(mask)[None], size)
    assert resized.dtype == torch.bool and resized.shape == (1, *size)
    assert np.array_equal(resized[0].numpy(), expected)
    with_channel = resize_masks(torch.from_numpy(mask)[None, None], size)
    assert with_channel.shape == (1, 1, *size) and torch.equal(with_channel[:, 0], resized)


def test_shorter_side_keeps_the_aspect_ratio_as_torchvision():
    assert resized_size((48, 64), (32,)) == (32, 42)  # int(32 * 64 / 48) = int(42.67)
    assert resized_size((64, 48), (32,)) == (42, 32)
    assert resized_size((48, 64), (20, 30)) == (20, 30)
    with pytest.raises(InputError, match=r"--resize 100000 makes images of 100000x133333"):
        resized_size((48, 64), (100000,))


def test_center_crop_rounds_its_offset_as_torchvision():
    assert center_crop(GRID, (2, 2))[0, 0].tolist() == [[5.0, 6.0], [9.0, 10.0]]
    five = torch.arange(25.0).reshape(5, 5)
    assert center_crop(five, (2, 2)).tolist() == [[12.0, 13.0], [17.0, 18.0]]  # offset round(1.5) = 2
    assert center_crop(five, (1, 3)).tolist() == [[11.0, 12.0, 13.0]]
    with pytest.raises(InputError, match=r"--center-crop 5x6 is larger than the images, 5x5"):
        center_crop(five, (5, 6))


def _images(masks: bool = True) -> Dataset:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) / 384
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 2:6, 2:6] = True
    return Dataset(x=x, y=None, name="images", split="all", modality="image", indices=torch.arange(2),
                   masks=mask if masks else None)


def test_apply_resizes_then_crops_images_and_masks_alike():
    data = _images()
    done = Preprocessing(resize=(4,), center_crop=(2, 2)).apply(data)
    assert torch.equal(done.x, resize_images(data.x, (4, 4))[..., 1:3, 1:3])
    assert done.masks.dtype == torch.bool and done.masks.shape == (2, 2, 2) and done.masks.all()
    assert Preprocessing(mean=(0.5,)).apply(data) is data


def test_apply_refuses_data_that_are_not_images():
    table = Dataset(x=torch.zeros(3, 5), y=None, name="t.csv", split="all", modality="tabular",
                    indices=torch.arange(3))
    with pytest.raises(InputError) as info:
        Preprocessing(center_crop=(2, 2)).apply(table)
    assert str(info.value) == ("--center-crop applies to images (N, C, H, W), but t.csv holds tabular data of "
                               "shape (3, 5)")


def test_flags_parse_to_sizes_and_values():
    steps = from_flags(mean="0.485, 0.456,0.406", std="0.5", normalize="imagenet", resize="32x48",
                       center_crop="24")
    assert steps == Preprocessing(preset="imagenet", mean=(0.485, 0.456, 0.406), std=(0.5,), resize=(32, 48),
                                  center_crop=(24, 24))
    assert from_flags(resize="32,48").resize == (32, 48) and from_flags(resize="64").resize == (64,)
    assert from_flags() == Preprocessing()


@pytest.mark.parametrize(("flags", "message"), [
    ({"mean": "0.5,a"}, "--mean takes comma-separated numbers such as 0.485,0.456,0.406, got '0.5,a'"),
    ({"std": ""}, "--std takes comma-separated numbers such as 0.485,0.456,0.406, got ''"),
    ({"mean": "nan"}, "--mean takes finite numbers, got nan"),
    ({"std": "0.2,inf"}, "--std takes finite numbers, got 0.2,inf"),
    ({"std": "0.2,0"}, "--std values must be above 0, got 0.2,0.0"),
    ({"std": "-1"}, "--std values must be above 0, got -1.0"),
    ({"normalize": "imagnet"}, "unknown normalisation preset 'imagnet'; did you mean 'imagenet'?"),
    ({"resize": "0"}, "--resize takes a positive size N or HxW, got 0"),
    ({"resize": "32x"}, "--resize takes a size N or HxW (height x width), e.g. 32 or 32x48, got '32x'"),
    ({"resize": "1x2x3"}, "--resize takes a size N or HxW (height x width), e.g. 32 or 32x48, got '1x2x3'"),
    ({"resize": "-4"}, "--resize takes a size N or HxW (height x width), e.g. 32 or 32x48, got '-4'"),
    ({"center_crop": "8x0"}, "--center-crop takes a positive size N or HxW, got 8x0"),
])
def test_bad_flags_are_refused_in_one_line(flags, message):
    with pytest.raises(InputError) as info:
        from_flags(**flags)
    assert str(info.value) == message


def test_flags_override_the_preset_which_overrides_the_model():
    model = ((0.1,), (0.2,))
    assert Preprocessing().statistics(*model) == model
    assert Preprocessing(preset="imagenet").statistics(*model) == PRESETS["imagenet"]
    assert Preprocessing(preset="none").statistics(*model) == (None, None)
    assert Preprocessing(preset="imagenet", std=(0.5,)).statistics(*model) == (PRESETS["imagenet"][0], (0.5,))
    assert Preprocessing(mean=(0.3,)).statistics(*model) == ((0.3,), (0.2,))


@pytest.mark.parametrize(("steps", "channels", "modality", "message"), [
    (Preprocessing(preset="imagenet"), 1, "image",
     "--normalize imagenet gives 3 mean values but the samples have 1 channel; give 1 value"),
    (Preprocessing(preset="imagenet", mean=(0.5,)), 1, "image",
     "--normalize imagenet gives 3 std values but the samples have 1 channel; give 1 value"),
    (Preprocessing(std=(1.0, 2.0)), 30, "tabular",
     "--std gives 2 std values but the samples have 30 features; give 1 or 30 values"),
])
def test_values_must_count_one_or_every_channel(steps, channels, modality, message):
    with pytest.raises(InputError) as info:
        steps.check_channels(channels, modality)
    assert str(info.value) == message
    Preprocessing(mean=(0.5,) * channels, std=(2.0,)).check_channels(channels, modality)


class _Mean(torch.nn.Module):
    """logits = (mean of the input, 0): what the model saw, read back from its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([mean, torch.zeros_like(mean)], dim=1)


def test_prepare_resizes_crops_and_normalises_before_the_model(tmp_path: Path):
    data = _images()
    np.savez(tmp_path / "d.npz", x=data.x.numpy(), masks=data.masks.numpy())
    loaded = LoadedModel(_Mean(), ModelMeta(mean=(9.0,), std=(9.0,)), "checkpoint", "m.pt", "0" * 64)
    steps = Preprocessing(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), resize=(6,), center_crop=(4, 2))
    prepared = prepare(loaded, Selection(data=str(tmp_path / "d.npz"), preprocessing=steps))
    raw = resize_images(data.x, (6, 6))[..., 1:5, 2:4]
    expected = (raw - torch.tensor([0.1, 0.2, 0.3]).reshape(1, 3, 1, 1)) / torch.tensor(
        [0.5, 0.25, 2.0]).reshape(1, 3, 1, 1)
    assert torch.equal(prepared.data.x, raw) and torch.allclose(prepared.inputs, expected, atol=1e-6)
    assert torch.allclose(prepared.probabilities, torch.softmax(torch.stack(
        [expected.flatten(1).mean(1), torch.zeros(2)], dim=1), dim=1))
    assert prepared.meta.mean == (0.1, 0.2, 0.3) and prepared.meta.std == (0.5, 0.25, 2.0)
    assert prepared.meta.input_shape == (3, 4, 2) and prepared.data.masks.shape == (2, 4, 2)
    assert prepared.preprocessing == steps
