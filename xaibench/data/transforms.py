"""Preprocessing that the user's flags ask for: resize and centre crop of images (their masks and
ground-truth attributions alike) and the normalisation statistics (``--mean``, ``--std``,
``--normalize PRESET``) that override the model's.

Sizes follow torchvision's ``Resize`` and ``CenterCrop`` on tensors: one number N scales the shorter side
to N and keeps the aspect ratio (the longer side becomes ``int(N * long / short)``), two numbers set the
height and width. Images are resampled bilinearly with antialiasing, as PIL's bilinear resize does (so a
smaller image averages its pixels rather than skipping them); masks take the pixel under each new pixel's
centre (``nearest-exact``), so they stay binary and aligned with their images; ground-truth attribution
maps are resampled as images are. The crop keeps the centre, its offset rounded as torchvision rounds
it. The resize comes first, then the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.data.base import Dataset
from xaibench.data.files import MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: named normalisations: (mean, std) per channel, or None for no normalisation at all
PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's ImageNet models
    "none": None,  # inputs go to the model as read, whatever the model's metadata says
}

Statistics = tuple[tuple[float, ...] | None, tuple[float, ...] | None]


@dataclass(frozen=True)
class Preprocessing:
    """What the user asked to do to the data before the model sees it; validated on construction.

    Attributes:
        preset: a name in ``PRESETS`` (``--normalize``), or None for the model's own normalisation.
        mean, std: per-channel values (one value for every channel) that override the preset's and the
            model's; model input = (raw - mean) / std.
        resize: (N,) for the shorter side, or (H, W).
        center_crop: (H, W) of the centre kept after the resize.
    """

    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: tuple[int, ...] | None = None
    center_crop: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise UnknownNameError.for_name("normalisation preset", self.preset, list(PRESETS))
        for flag, values in (("--mean", self.mean), ("--std", self.std)):
            if values is not None and (not values or not all(math.isfinite(v) for v in values)):
                raise InputError(f"{flag} takes finite numbers, got {_shown(values)}")
        if self.std is not None and min(self.std) <= 0:
            raise InputError(f"--std values must be above 0, got {_shown(self.std)}")
        sizes = (("--resize", self.resize, (1, 2)), ("--center-crop", self.center_crop, (2,)))
        for flag, size, counts in sizes:
            if size is not None and (len(size) not in counts or min(size) < 1):
                raise InputError(f"{flag} takes a positive size N or HxW, got {'x'.join(map(str, size))}")

    def statistics(self, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> Statistics:
        """The (mean, std) to normalise with, given the model's: --mean and --std win, then the preset."""
        if self.preset is not None:
            mean, std = PRESETS[self.preset] or (None, None)
        return self.mean or mean, self.std or std

    def check_channels(self, channels: int, modality: str) -> None:
        """Refuse a --mean / --std / preset that has neither 1 nor ``channels`` values."""
        preset = PRESETS.get(self.preset or "") or (None, None)
        for key, flag, values in (("mean", "--mean", self.mean), ("std", "--std", self.std)):
            if values is None and preset[0] is not None:
                flag, values = f"--normalize {self.preset}", preset[key == "std"]
            if values is not None and len(values) not in (1, channels):
                unit = ("feature" if modality == "tabular" else "channel") + ("s" if channels > 1 else "")
                give = "1 value" if channels == 1 else f"1 or {channels} values"
                raise InputError(f"{flag} gives {len(values)} {key} values but the samples have {channels} "
                                 f"{unit}; give {give}")

    def apply(self, data: Dataset) -> Dataset:
        """``data`` resized and cropped (images, masks and ground-truth attributions alike; a ground-truth
        map is resampled as its image is); unchanged without --resize / --center-crop.

        Raises:
            InputError: resizing data that are not images, a crop larger than the (resized) images, or a
                size over ``MAX_IMAGE_PIXELS`` pixels.
        """
        if self.resize is None and self.center_crop is None:
            return data
        if data.x.ndim != 4:
            flag = "--resize" if self.resize is not None else "--center-crop"
            raise InputError(f"{flag} applies to images (N, C, H, W), but {data.name} holds {data.modality} "
                             f"data of shape {tuple(data.x.shape)}")
        x, masks, truth = data.x, data.masks, data.ground_truth
        if self.resize is not None:
            size = resized_size(tuple(x.shape[-2:]), self.resize)
            x, masks = resize_images(x, size), None if masks is None else resize_masks(masks, size)
            truth = None if truth is None else resize_images(truth, size)
        if self.center_crop is not None:
            crop = self.center_crop
            x, masks = center_crop(x, crop), None if masks is None else center_crop(masks, crop)
            truth = None if truth is None else center_crop(truth, crop)
        return replace(data, x=x, masks=masks, ground_truth=truth)


def resized_size(size: tuple[int, ...], resize: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) after ``--resize``: (N,) scales the shorter side of ``size`` to N, (H, W) is taken as is."""
    height, width = size
    if len(resize) == 2:
        new = (resize[0], resize[1])
    elif height <= width:
        new = (resize[0], int(resize[0] * width / height))
    else:
        new = (int(resize[0] * height / width), resize[0])
    if new[0] * new[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"--resize {'x'.join(map(str, resize))} makes images of {new[0]}x{new[1]} (height x "
                         f"width) pixels, over the limit of {MAX_IMAGE_PIXELS}")
    return new


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images (N, C, H, W) resampled to ``size`` bilinearly with antialiasing (PIL's bilinear resize)."""
    if tuple(x.shape[-2:]) == size:
        return x
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks (N, H, W) or (N, 1, H, W) resampled to ``size`` by the nearest pixel centre; dtype kept."""
    if tuple(masks.shape[-2:]) == size:
        return masks
    planes = masks.reshape(masks.shape[0], 1, *masks.shape[-2:]).float()
    resized = torch.nn.functional.interpolate(planes, size=size, mode="nearest-exact")
    return resized.reshape(*masks.shape[:-2], *size).to(masks.dtype)


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` (H, W) of the last two axes; offsets ``round((side - crop) / 2)`` as torchvision.

    Raises:
        InputError: a crop larger than the images.
    """
    height, width = x.shape[-2:]
    if size[0] > height or size[1] > width:
        raise InputError(f"--center-crop {size[0]}x{size[1]} is larger than the images, {height}x{width} "
                         "(height x width, after any --resize)")
    top, left = round((height - size[0]) / 2), round((width - size[1]) / 2)
    return x[..., top:top + size[0], left:left + size[1]]


def parse_values(text: str | None, flag: str) -> tuple[float, ...] | None:
    """Comma-separated numbers, e.g. "0.485,0.456,0.406"; a malformed list is an InputError."""
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"{flag} takes comma-separated numbers such as 0.485,0.456,0.406, "
                         f"got {text!r}") from None


def parse_size(text: str | None, flag: str) -> tuple[int, ...] | None:
    """A size N or HxW (also H,W); a malformed size is an InputError."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    if not 1 <= len(parts) <= 2 or not all(part.strip().isdigit() for part in parts):
        raise InputError(f"{flag} takes a size N or HxW (height x width), e.g. 32 or 32x48, got {text!r}")
    return tuple(int(part) for part in parts)


def from_flags(mean: str | None = None, std: str | None = None, normalize: str | None = None,
               resize: str | None = None, center_crop: str | None = None) -> Preprocessing:
    """A ``Preprocessing`` from the flags' texts; one N for --center-crop is an NxN crop."""
    crop = parse_size(center_crop, "--center-crop")
    return Preprocessing(preset=normalize, mean=parse_values(mean, "--mean"), std=parse_values(std, "--std"),
                         resize=parse_size(resize, "--resize"),
                         center_crop=None if crop is None else (crop[0], crop[-1]))


def _shown(values: Any) -> str:
    return ",".join(str(v) for v in values) if values else "nothing"
