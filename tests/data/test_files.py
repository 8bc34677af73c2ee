"""User data files: each format round-trips exactly; bad files give one-line InputErrors."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.core.errors import InputError
from xaibench.data import load_data

RNG = np.random.default_rng(0)


def _one_line_error(spec: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        load_data(spec)
    assert "\n" not in str(info.value)


def test_npz_image_with_labels_and_masks_round_trips(tmp_path: Path) -> None:
    x = RNG.random((4, 3, 8, 8), dtype=np.float32)
    y = np.array([2, 0, 1, 2])
    masks = RNG.random((4, 8, 8)) > 0.5
    np.savez(tmp_path / "d.npz", x=x, y=y, masks=masks, class_names=np.array(["a", "b", "c"]))
    data = load_data(str(tmp_path / "d.npz"))
    assert (data.modality, data.split, data.name) == ("image", "all", str(tmp_path / "d.npz"))
    assert torch.equal(data.x, torch.from_numpy(x))
    assert torch.equal(data.y, torch.tensor([2, 0, 1, 2]))
    assert torch.equal(data.masks, torch.from_numpy(masks))
    assert torch.equal(data.indices, torch.arange(4))
    assert data.class_names == ("a", "b", "c")


def test_npz_modality_follows_sample_rank(tmp_path: Path) -> None:
    cases = {
        "tab": (RNG.random((5, 6)), "tabular", (5, 6)),
        "seq": (RNG.random((5, 2, 16)), "sequence", (5, 2, 16)),
        "img": (RNG.random((5, 12, 10)), "image", (5, 1, 12, 10)),  # more rows than sequence channels
    }
    for name, (x, modality, shape) in cases.items():
        np.savez(tmp_path / f"{name}.npz", x=x)
        data = load_data(str(tmp_path / f"{name}.npz"))
        assert (data.modality, tuple(data.x.shape), data.y) == (modality, shape, None)
        assert torch.equal(data.x, torch.from_numpy(x.astype(np.float32)).reshape(shape))


def test_uint8_image_array_is_scaled_and_gets_a_channel(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(3, 2, 5), dtype=np.uint8)  # 2 rows, yet uint8 marks it as an image
    np.savez(tmp_path / "u8.npz", x=x)
    data = load_data(str(tmp_path / "u8.npz"))
    assert data.modality == "image"
    assert torch.equal(data.x, torch.from_numpy(x[:, None].astype(np.float32) / np.float32(255)))


def test_pt_tensor_and_dict_round_trip(tmp_path: Path) -> None:
    x = torch.randn(4, 2, 16, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    data = load_data(str(tmp_path / "x.pt"))
    assert (data.modality, data.y) == ("sequence", None) and torch.equal(data.x, x)
    images = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    masks = images[:, 0] > 0.5
    torch.save({"x": images.half(), "y": torch.tensor([1, 0, 1]), "masks": masks}, tmp_path / "d.pt")
    data = load_data(str(tmp_path / "d.pt"))
    assert torch.equal(data.x, images.half().float())
    assert torch.equal(data.y, torch.tensor([1, 0, 1])) and torch.equal(data.masks, masks)


def test_pt_with_other_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"x": torch.zeros(2, 3), "model": torch.nn.Linear(3, 2)}, tmp_path / "m.pt")
    _one_line_error(str(tmp_path / "m.pt"), "objects other than tensors")
    torch.save(collections.OrderedDict(y=torch.zeros(2)), tmp_path / "nox.pt")
    _one_line_error(str(tmp_path / "nox.pt"), "no array named 'x' \\(found: y\\)")
    torch.save([torch.zeros(2, 3)], tmp_path / "list.pt")
    _one_line_error(str(tmp_path / "list.pt"), "must hold a tensor x or a dict")


def test_csv_with_header_picks_the_named_target(tmp_path: Path) -> None:
    x = RNG.normal(size=(6, 3)).astype(np.float32)
    y = [0, 1, 1, 0, 2, 1]
    lines = ["a,Label,b,c"] + [f"{r[0]!r},{t},{r[1]!r},{r[2]!r}" for r, t in zip(x.tolist(), y, strict=True)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    data = load_data(str(tmp_path / "t.csv"))
    assert data.modality == "tabular" and data.feature_names == ("a", "b", "c")
    assert torch.equal(data.x, torch.from_numpy(x)) and torch.equal(data.y, torch.tensor(y))


def test_csv_without_header_uses_the_last_column_and_string_labels(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("1.5,2,cat\n-3,4e-1,dog\n0,0,cat\n")
    data = load_data(str(tmp_path / "t.csv"))
    assert data.feature_names is None and data.label_names == ("cat", "dog")
    assert torch.equal(data.x, torch.tensor([[1.5, 2.0], [-3.0, 0.4], [0.0, 0.0]]))
    assert torch.equal(data.y, torch.tensor([0, 1, 0]))


def test_bad_csv_files(tmp_path: Path) -> None:
    (tmp_path / "text.csv").write_text("a,b,target\n1,x,0\n")
    _one_line_error(str(tmp_path / "text.csv"), "column 'b' holds a non-number 'x'")
    (tmp_path / "ragged.csv").write_text("a,target\n1,0\n2\n")
    _one_line_error(str(tmp_path / "ragged.csv"), "line 3 has 1 fields, expected 2")
    (tmp_path / "float.csv").write_text("a,y\n1,0.5\n")
    _one_line_error(str(tmp_path / "float.csv"), "y must hold integer class labels")
    (tmp_path / "nan.csv").write_text("a,y\nnan,1\n")
    _one_line_error(str(tmp_path / "nan.csv"), "NaN or infinite")


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    for pix, where in zip(pixels, ["dog/b.png", "cat/z.png", "dog/a.PNG"], strict=True):
        _write_png(tmp_path / where, pix)
    _write_png(tmp_path / ".hidden" / "x.png", pixels[0])  # ignored
    data = load_data(str(tmp_path))
    assert data.modality == "image" and data.label_names == ("cat", "dog")
    order = [1, 2, 0]  # files sorted: cat/z, dog/a.PNG, dog/b
    expected = pixels[order].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    assert torch.equal(data.x, torch.from_numpy(expected))
    assert torch.equal(data.y, torch.tensor([0, 1, 1]))


def test_unlabelled_folder_promotes_greyscale_to_colour(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    colour = RNG.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    _write_png(tmp_path / "a.png", grey)
    _write_png(tmp_path / "b.png", colour)
    data = load_data(str(tmp_path))
    assert data.y is None and data.x.shape == (2, 3, 4, 6)
    assert torch.equal(data.x[0], torch.from_numpy(np.stack([grey] * 3).astype(np.float32) / np.float32(255)))


def test_bad_image_folders(tmp_path: Path) -> None:
    _write_png(tmp_path / "sizes" / "a.png", np.zeros((4, 4), np.uint8))
    _write_png(tmp_path / "sizes" / "b.png", np.zeros((4, 5), np.uint8))
    _one_line_error(str(tmp_path / "sizes"), "differ in size \\(4x4, 5x4\\)")
    _write_png(tmp_path / "mixed" / "a.png", np.zeros((4, 4), np.uint8))
    _write_png(tmp_path / "mixed" / "cls" / "b.png", np.zeros((4, 4), np.uint8))
    _one_line_error(str(tmp_path / "mixed"), "mixes images at its top level")
    (tmp_path / "empty").mkdir()
    _one_line_error(str(tmp_path / "empty"), "holds no .png or .jpg images")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    _one_line_error(str(tmp_path / "broken"), "cannot read")


@pytest.mark.parametrize("suffix", [".npz", ".pt", ".csv"])
def test_corrupt_file_gives_input_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"\x00\xff garbage \x80" * 20)
    _one_line_error(str(path), str(path))


def test_arrays_that_do_not_fit(tmp_path: Path) -> None:
    np.savez(tmp_path / "y.npz", x=np.zeros((3, 4)), y=np.zeros(2))
    _one_line_error(str(tmp_path / "y.npz"), "y must have shape \\(3,\\)")
    np.savez(tmp_path / "m.npz", x=np.zeros((3, 1, 4, 4)), masks=np.zeros((3, 4, 5)))
    _one_line_error(str(tmp_path / "m.npz"), "masks must have shape \\(3, 4, 4\\)")
    np.savez(tmp_path / "tab.npz", x=np.zeros((3, 4)), masks=np.zeros((3, 2, 2)))
    _one_line_error(str(tmp_path / "tab.npz"), "masks are only for images")
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 4)), y=np.array([0, -1]))
    _one_line_error(str(tmp_path / "neg.npz"), "negative")
    np.savez(tmp_path / "s.npz", x=np.array(["a", "b"]))
    _one_line_error(str(tmp_path / "s.npz"), "non-empty numeric array")
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 3)), feature_names=np.array(["a", "b"]))
    _one_line_error(str(tmp_path / "f.npz"), "2 feature names do not fit")


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    _one_line_error(str(tmp_path / "nothing.npz"), "no such data file or folder")
    _one_line_error("data/missing", "no such data file or folder")
    (tmp_path / "notes.txt").write_text("1,2\n")
    _one_line_error(str(tmp_path / "notes.txt"), "unsupported data file")
