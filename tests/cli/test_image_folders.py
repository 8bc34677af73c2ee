"""An image folder holding two of the digits model's ten classes, end to end: labels and ``--target label``
are the model's class indices (not folder positions), and an unknown class folder is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.cli.conftest import SAMPLES, run_main
from xaibench.data import load_data

DIGITS = str(SAMPLES / "digits_cnn.pt")


def _digit_folder(root: Path, classes: dict[str, int]) -> list[int]:
    """PNGs of the first two digits-test samples of each class, in ``root/<folder>/``; the class of
    each file in sorted order."""
    data = load_data("digits:test")
    written = []
    for folder, digit in sorted(classes.items()):
        for rank, position in enumerate(torch.nonzero(data.y == digit).flatten()[:2].tolist()):
            pixels = (data.x[position, 0] * 255).round().to(torch.uint8).numpy()
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / folder / f"{rank}.png")
            written.append(digit)
    return written


def test_two_class_folders_keep_the_models_class_indices(tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    expected = _digit_folder(folder, {"3": 3, "7": 7})
    out = tmp_path / "run"
    result = run_main("explain", DIGITS, "--data", str(folder), "-m", "saliency", "--target", "label",
                     "--out", str(out), "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    tensors = load_file(str(out / "attributions.safetensors"))
    assert expected == [3, 3, 7, 7]
    assert tensors["labels"].tolist() == expected and tensors["targets"].tolist() == expected
    assert np.array_equal(tensors["predictions"].numpy(), np.array(expected))  # the model gets them right


def test_an_unknown_class_folder_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    _digit_folder(folder, {"3": 3, "seven": 7})
    result = run_main("explain", DIGITS, "--data", str(folder), "-m", "saliency", cwd=tmp_path)
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [
        (f"error: {folder}: class folder 'seven' names no class of the model; its 10 classes (from the "
         "model's metadata) are 0, 1, 2, 3, 4, 5, 6, 7 and 2 more")]
    assert not (tmp_path / "runs").exists()
