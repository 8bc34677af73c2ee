"""Ground-truth masks: arrays (N, H, W) or (N, 1, H, W), or a ``masks/`` folder inside an image folder
mirroring its images (``masks/<class>/<file name>``), binary by > 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.core.errors import InputError
from xaibench.data import load_data

RNG = np.random.default_rng(0)


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _refused(spec: Path, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        load_data(str(spec))
    assert "\n" not in str(info.value)


def test_quantus_masks_with_a_channel_axis_are_accepted(tmp_path: Path) -> None:
    masks = RNG.random((3, 1, 4, 5)) > 0.5
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2, 4, 5), np.float32), masks=masks)
    data = load_data(str(tmp_path / "d.npz"))
    assert torch.equal(data.masks, torch.from_numpy(masks[:, 0]))


def test_masks_with_several_channels_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2, 4, 5)), masks=np.zeros((3, 2, 4, 5)))
    _refused(tmp_path / "d.npz", r"masks must have shape \(3, 4, 5\) or \(3, 1, 4, 5\) for images, "
                                 r"got \(3, 2, 4, 5\)")


def test_a_masks_folder_mirrors_the_class_folders(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    for pixels, name in zip(images, ["dog/b.png", "cat/z.jpg", "dog/a.png"], strict=True):
        _write(tmp_path / name, pixels)
    masks = RNG.integers(0, 3, size=(3, 4, 5), dtype=np.uint8)  # 0, 1, 2: binary by > 0
    colour = np.zeros((4, 5, 3), np.uint8)
    colour[1, 2, 2] = 1  # one faint blue pixel: > 0 in a colour mask counts
    for pixels, name in zip([masks[0], colour, masks[2]], ["dog/b.png", "cat/z.png", "dog/a.png"], strict=True):
        _write(tmp_path / "masks" / name, pixels)
    data = load_data(str(tmp_path))
    assert data.label_names == ("cat", "dog") and data.y.tolist() == [0, 1, 1]  # masks/ is no class
    expected = np.stack([colour.max(axis=2) > 0, masks[2] > 0, masks[0] > 0])  # cat/z, dog/a, dog/b
    assert torch.equal(data.masks, torch.from_numpy(expected))


def test_an_unlabelled_folder_takes_masks_too(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    mask = np.eye(4, dtype=np.uint8) * 255
    _write(tmp_path / "masks" / "a.png", mask)
    data = load_data(str(tmp_path))
    assert data.y is None and torch.equal(data.masks, torch.from_numpy(mask[None] > 0))


def test_masks_folders_that_do_not_fit_their_images(tmp_path: Path) -> None:
    for case in ("missing", "orphan", "size", "twice"):
        _write(tmp_path / case / "c" / "a.png", np.zeros((4, 4), np.uint8))
        _write(tmp_path / case / "masks" / "c" / "a.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "missing" / "c" / "b.png", np.zeros((4, 4), np.uint8))
    _refused(tmp_path / "missing", r"no mask for c/b.png: masks/ must hold masks/<class>/<file name>")
    _write(tmp_path / "orphan" / "masks" / "d" / "x.png", np.zeros((4, 4), np.uint8))
    _refused(tmp_path / "orphan", r"the mask masks/d/x.png has no image d/x \(.png, .jpg or .jpeg\)")
    _write(tmp_path / "size" / "masks" / "c" / "a.png", np.zeros((4, 5), np.uint8))
    _refused(tmp_path / "size", r"the mask masks/c/a.png is 5x4 but its image is 4x4")
    _write(tmp_path / "twice" / "masks" / "c" / "a.jpg", np.zeros((4, 4), np.uint8))
    _refused(tmp_path / "twice", r"two masks for c/a: masks/c/a.jpg and masks/c/a.png")
