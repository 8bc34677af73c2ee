"""Crafted data files: each is refused with one InputError line naming the file, silently and quickly.

Nothing here may print a warning (the CLI's stderr carries exactly one line), escape as a raw exception
(exit 1), unpickle, decode a format its name does not promise, or block on a special file.
"""

from __future__ import annotations

import gc
import io
import os
import struct
import threading
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaibench.core.errors import InputError
from xaibench.core.text import printable
from xaibench.data import load_data


def _refused(path: Path | str, *fragments: str) -> str:
    """The InputError message for ``path``; fails on a warning, a second line or a missing fragment."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as info:
            load_data(str(path))
    message = str(info.value)
    assert [str(w.message) for w in caught] == []
    assert "\n" not in message and message.isprintable(), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that declares ``width`` x ``height`` RGB pixels (what a decompression bomb does)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_decompression_bomb_png_is_refused(tmp_path: Path) -> None:
    png_header(tmp_path / "bomb" / "a.png", 15000, 15000)
    _refused(tmp_path / "bomb", "a.png: an image of 225000000 pixels is over the limit of 89478485 pixels "
             "(a decompression bomb?)")


def test_image_over_the_limit_but_under_pils_error_is_refused(tmp_path: Path) -> None:
    png_header(tmp_path / "big" / "a.png", 10000, 10000)  # PIL only warns between 1x and 2x its limit
    _refused(tmp_path / "big", "a.png: an image of 10000x10000 = 100000000 pixels is over the limit of "
             "89478485 pixels")


def _open_for_writing(fifo: Path) -> None:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader: nothing to release
        pass


def test_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "x.npz"
    os.mkfifo(fifo)
    # opening a FIFO for reading blocks until a writer comes: if the loader ever opens it, this writer
    # releases it after 10 s, so that the test fails on the wrong message instead of hanging
    release = threading.Timer(10, _open_for_writing, [fifo])
    release.start()
    try:
        _refused(fifo, "x.npz", "not a regular file")
    finally:
        release.cancel()


@pytest.mark.parametrize("protocol", [4, 5])
def test_pt_of_a_newer_pickle_protocol_is_refused_silently(tmp_path: Path, protocol: int) -> None:
    torch.save(torch.zeros(2, 3), tmp_path / "p.pt", pickle_protocol=protocol)
    _refused(tmp_path / "p.pt", "p.pt", f"pickle protocol {protocol}", "re-save")


def test_pt_with_a_sparse_tensor_is_refused(tmp_path: Path) -> None:
    torch.save({"x": torch.eye(3).to_sparse()}, tmp_path / "s.pt")
    _refused(tmp_path / "s.pt", "s.pt", "'x'", "sparse_coo", "dense")


def test_pt_with_mixed_key_types_and_no_x(tmp_path: Path) -> None:
    torch.save({1: torch.zeros(2), "a": torch.zeros(2)}, tmp_path / "k.pt")
    _refused(tmp_path / "k.pt", "k.pt has no array named 'x' (found: 1, a)")


def test_npz_whose_header_claims_a_huge_array_is_refused(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10**12, 30)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 16)
    _refused(tmp_path / "huge.npz", "cannot read", "huge.npz", "Unable to allocate 218. TiB")


def test_corrupt_compressed_npz(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "c.npz", x=np.arange(1200.0).reshape(40, 30))
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[60:63] = bytes(b ^ 0xFF for b in data[60:63])  # inside the deflate stream of x.npy
    (tmp_path / "c.npz").write_bytes(bytes(data))
    _refused(tmp_path / "c.npz", "cannot read", "c.npz", "Error -3 while decompressing data")


def test_csv_with_a_field_over_the_csv_limit(tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text("a,b\n" + "1" * 200_000 + ",1\n")
    _refused(tmp_path / "big.csv", "big.csv", "field larger than field limit")


def test_values_beyond_float32_are_refused_without_a_numpy_warning(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.full((2, 3), 1e300))
    _refused(tmp_path / "x.npz", "x.npz: x contains NaN or infinite values (or values beyond float32's "
             "range)")


@pytest.mark.parametrize(("label", "dtype"), [(1e30, np.float64), (2**63, np.uint64)])
def test_labels_too_large_for_int64(tmp_path: Path, label: float, dtype: type) -> None:
    np.savez(tmp_path / "y.npz", x=np.zeros((2, 3)), y=np.array([label, 0], dtype=dtype))
    _refused(tmp_path / "y.npz", "y.npz", "y holds class labels too large")


def test_names_that_are_not_utf8_become_printable(tmp_path: Path) -> None:
    name = tmp_path / b"d\xff.npz".decode("utf-8", "surrogateescape")
    np.savez(name, x=np.zeros((2, 3)))
    assert load_data(str(name)).name == str(tmp_path / "d\\xff.npz")
    images = tmp_path / "imgs" / b"cat\xff".decode("utf-8", "surrogateescape")
    images.mkdir(parents=True)
    Image.new("L", (4, 4)).save(images / "a.png")
    assert load_data(str(tmp_path / "imgs")).label_names == ("cat\\xff",)


def test_printable() -> None:
    assert printable("model\udcff.pt") == "model\\xff.pt"  # an undecodable byte of a file name
    assert printable("caf\udcc3\udca9") == "café"  # escaped bytes that are UTF-8 after all
    assert printable("a\ud800b\x1b[31m\n") == "a\\ud800b\\x1b[31m\\n"
    assert printable("plain é name") == "plain é name"


def test_truncated_npz_leaves_no_file_open(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 3)))
    (tmp_path / "t.npz").write_bytes((tmp_path / "t.npz").read_bytes()[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_data(str(tmp_path / "t.npz"))
        except InputError as error:
            assert str(error) == f"cannot read {tmp_path / 't.npz'}: File is not a zip file"
        gc.collect()  # an unclosed file warns when it is collected
    assert [str(w.message) for w in caught] == []


def test_npy_named_npz_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "a.npz").open("wb") as handle:
        np.save(handle, np.zeros((3, 4)))
    _refused(tmp_path / "a.npz", "a.npz is a single .npy array, not an .npz archive; save it with "
             "numpy.savez(path, x=...)")


@pytest.mark.parametrize("kind", ["EPS", "BMP"])
def test_image_in_another_format_under_an_image_name_is_not_decoded(tmp_path: Path, kind: str) -> None:
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / "a.png", format=kind)  # EPS would run Ghostscript
    _refused(tmp_path / "imgs", "cannot read", "cannot identify image file", "a.png")
