"""Factor tensors read from their safetensors file when used, not held in memory all at once.

A ResNet-18's EK-FAC factors are 800 MiB of float64, three quarters of them the 4,608 x 4,608
eigenvector matrices of layer4's activation covariances, of which scoring at 32x32 uses 512 rows. Holding
them all would put influence scoring far over its memory budget, so ``StoredTensors`` is a read-only
mapping over the file: each access reads one tensor (``row_chunks`` only some rows, ``CHUNK_BYTES`` at a time)
and checks its values again, since the file may have changed since it was opened; ``verify`` reads every
tensor once, a chunk at a time, before any work starts.

The file is read with plain reads, not mapped into memory: mapped pages would count towards the
process's resident memory, which the budget bounds. The format is safetensors': an 8-byte little-endian
header length, a JSON header of dtype, shape and byte offsets per tensor, then the raw little-endian
bytes. Nothing in it is ever executed; the header is checked (keys, shapes, dtypes, offsets inside the
file and matching the shapes) before any byte of data is read.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from xaibench.core.errors import InputError, first_line

CHUNK_BYTES = 16 << 20  # rows read at once, counted as the float64 they become
HEADER_BASE, HEADER_PER_KEY = 64 << 10, 1 << 10  # a longer header is not a factors file: refused unparsed
#: the dtypes factors may be stored in: safetensors' code, bytes per element
STORED = {"float64": ("F64", 8), "float32": ("F32", 4), "bfloat16": ("BF16", 2)}
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class StoredTensors(Mapping[str, torch.Tensor]):
    """The tensors ``expected`` (key -> shape) of a safetensors file, stored in ``dtype`` (``STORED``),
    read on access as float64 onto ``device``; ``what`` names them in messages ("ekfac factors").

    Raises (on construction and on every read):
        InputError: the file is unreadable or not safetensors, holds other keys, shapes or dtypes, or
            (on read) NaN or infinite values; one line naming the file.
    """

    def __init__(self, path: Path, expected: dict[str, tuple[int, ...]], what: str,
                 device: torch.device | str = "cpu", dtype: str = "float64") -> None:
        self.path, self.expected, self.what, self.device = Path(path), expected, what, torch.device(device)
        self.dtype = dtype
        self._code, self._size = STORED[dtype]
        self._identity: tuple[int, ...] = ()
        self._offsets = self._read_header()

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.expected:
            raise KeyError(key)
        shape = self.expected[key]
        out = torch.empty(shape[0] if shape else 1, self._width(key), dtype=torch.float64, device="cpu")
        for start, window in self._windows(key, range(-(-len(out) // self._step(key)))):
            out[start:start + len(window)] = window.view(len(window), -1)
        return self._checked(key, out.reshape(shape))

    def __contains__(self, key: object) -> bool:
        return key in self.expected

    def __iter__(self) -> Iterator[str]:
        return iter(self.expected)

    def __len__(self) -> int:
        return len(self.expected)

    def row_chunks(self, key: str, indices: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """The rows ``indices`` (ascending, in range; None: all) of a matrix, in order, as checked
        float64 blocks of at most ``CHUNK_BYTES`` (or one row) read one at a time."""
        rows, step = self.expected[key][0], self._step(key)
        if indices is None:
            for _start, window in self._windows(key, range(-(-rows // step))):
                yield self._checked(key, window)
            return
        wanted = indices.cpu()
        if len(wanted) and (bool((wanted[1:] < wanted[:-1]).any()) or wanted[0] < 0 or wanted[-1] >= rows):
            raise ValueError(f"rows of {key!r} must be ascending and in range")
        for start, window in self._windows(key, torch.unique(wanted // step).tolist()):
            picked = wanted[(wanted >= start) & (wanted < start + step)] - start
            yield self._checked(key, window.index_select(0, picked))

    def verify(self, checks: Mapping[str, Callable[[torch.Tensor], None]] | None = None) -> None:
        """Read every tensor once, ``CHUNK_BYTES`` at a time, and check its values; ``checks`` maps keys
        to a further check of the whole tensor (raising InputError on a defect)."""
        for key, shape in self.expected.items():
            if checks and key in checks:
                checks[key](self[key])
                continue
            rows = shape[0] if shape else 1
            for _start, window in self._windows(key, range(-(-rows // self._step(key)))):
                self._checked(key, window)

    def _step(self, key: str) -> int:
        """Rows per read of ``key``."""
        return max(1, CHUNK_BYTES // (8 * self._width(key)))

    def _width(self, key: str) -> int:
        """Elements per row: of a matrix its columns, of a vector or scalar 1."""
        shape = self.expected[key]
        return shape[1] if len(shape) == 2 else 1

    def _windows(self, key: str, chunks: Iterable[int]) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, the rows) of the numbered chunks of ``key``, each read alone."""
        step, shape = self._step(key), self.expected[key]
        rows = shape[0] if shape else 1
        for chunk in chunks:
            start = chunk * step
            window = self._read_rows(key, start, min(start + step, rows))
            yield start, window if len(shape) == 2 else window.flatten()

    def _read_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of ``key`` as (rows, width) float64, by a plain read of their bytes."""
        width = self._width(key)
        size = (stop - start) * width * self._size
        buffer = bytearray(size)
        try:
            with open(self.path, "rb") as stored:
                if _identity(os.fstat(stored.fileno())) != self._identity:
                    raise InputError(f"{self.path}: changed since it was loaded (fitted again?); run again")
                stored.seek(self._offsets[key] + start * width * self._size)
                got = stored.readinto(buffer)
        except OSError as err:
            raise InputError(f"{self.path}: cannot be read ({first_line(err)})") from None
        if got != size:
            raise InputError(f"{self.path}: not a safetensors file (tensor {key!r} is cut short)")
        if size == 0:
            return torch.empty(0, width, dtype=torch.float64, device="cpu")
        if self._code == "F64" and sys.byteorder == "little":  # the file's order: used as it is, no copy
            return torch.frombuffer(buffer, dtype=torch.float64).view(stop - start, width)
        # the file's byte order (little-endian), whatever the machine's; bfloat16 is float32's upper half
        if self._code == "BF16":
            upper = np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16
            values = upper.view(np.float32)
        else:
            values = np.frombuffer(buffer, dtype="<f8" if self._code == "F64" else "<f4")
        return torch.from_numpy(values.astype(np.float64)).view(stop - start, width)

    def _read_header(self) -> dict[str, int]:
        """Each expected key's first byte in the file, once the header is checked against ``expected``."""
        limit = HEADER_BASE + HEADER_PER_KEY * len(self.expected)
        try:
            with open(self.path, "rb") as stored:
                self._identity = _identity(os.fstat(stored.fileno()))
                total = self._identity[2]
                head = stored.read(8)
                length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                if not 2 <= length <= min(limit, total - 8):
                    raise ValueError(f"no header of 2 to {limit} bytes")
                text = stored.read(length)
            header = json.loads(text)
        except (OSError, ValueError, UnicodeDecodeError, RecursionError, struct.error) as err:
            raise InputError(f"{self.path}: not a safetensors file ({first_line(err)})") from None
        if not isinstance(header, dict):
            raise InputError(f"{self.path}: not a safetensors file (its header is not an object)")
        header.pop("__metadata__", None)
        extra = sorted(set(header) - set(self.expected))
        if extra:
            raise InputError(f"{self.path}: holds unexpected tensor {_shown(extra[0])} for {self.what}")
        missing = [key for key in self.expected if key not in header]
        if missing:
            raise InputError(f"{self.path}: misses tensor {missing[0]!r} of {self.what}")
        data = 8 + len(text)
        return {key: self._checked_entry(key, header[key], data, total) for key in self.expected}

    def _checked_entry(self, key: str, entry: object, data: int, total: int) -> int:
        """The first byte of ``key``'s data, after its header entry is checked."""
        if not isinstance(entry, dict):
            raise InputError(f"{self.path}: not a safetensors file (entry {key!r} is not an object)")
        shape, dtype, offsets = entry.get("shape"), entry.get("dtype"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            raise InputError(f"{self.path}: not a safetensors file (tensor {key!r} has no valid shape)")
        if tuple(shape) != self.expected[key]:
            raise InputError(f"{self.path}: tensor {key!r} has shape {tuple(shape)} where {self.what} need "
                             f"{self.expected[key]}")
        if dtype != self._code:
            shown = _DTYPES.get(dtype, str(dtype).lower()) if isinstance(dtype, str) else _shown(dtype)
            raise InputError(f"{self.path}: tensor {key!r} is {shown}, not {self.dtype}")
        numel = 1
        for n in shape:
            numel *= n
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
                and 0 <= offsets[0] and offsets[1] - offsets[0] == self._size * numel
                and data + offsets[1] <= total):
            raise InputError(f"{self.path}: not a safetensors file (tensor {key!r} lies outside the file)")
        return data + offsets[0]

    def _checked(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(tensor).all():
            raise InputError(f"{self.path}: tensor {key!r} holds NaN or infinite values")
        return tensor.to(self.device)


def _identity(status: os.stat_result) -> tuple[int, ...]:
    """What tells a file from its replacement: device, inode, size, modification time."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
