"""Data specs and sample selection: ``load_data("digits:test")``, ``select(data, indices="0,3,10-19")``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.data.base import Dataset
from xaibench.data.builtin import DATASETS
from xaibench.data.files import IMAGE_SUFFIXES, load_file

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

DEFAULT_SPLIT = "test"
_FILE_SUFFIXES = (".npz", ".csv", ".pt", ".jsonl", *IMAGE_SUFFIXES)
_POSITION = re.compile(r"(\d+)(?:\s*-\s*(\d+))?")


def load_data(spec: str) -> Dataset:
    """Load a built-in dataset ``NAME[:SPLIT]`` or a data file / image folder ``PATH``.

    A registered name wins over a file of the same name (write ``./digits`` for the file). The split
    defaults to "test"; "all" is train then test. Files are documented in ``xaibench.data.files``.

    Raises:
        UnknownNameError: an unknown dataset or split name, with the closest known name.
        InputError: a missing, unsupported or corrupt file.
    """
    name, _, split = spec.partition(":")
    path = Path(spec).expanduser()
    path_like = path.exists() or any(sep in spec for sep in "/\\") or path.suffix.lower() in _FILE_SUFFIXES
    if name not in DATASETS and path_like:
        return load_file(path)
    return DATASETS.get(name)(split or DEFAULT_SPLIT)  # an unknown name raises with a suggestion


def select(dataset: Dataset, *, n: int | None = None, indices: str | None = None) -> Dataset:
    """The samples at ``indices`` (positions in ``dataset``), then the first ``n`` of them.

    Args:
        dataset: the data to select from.
        n: keep at most this many samples (after ``indices``); None keeps all.
        indices: comma-separated positions and inclusive ranges, e.g. "0,3,10-19", kept in the order
            given; None means every position.

    Raises:
        InputError: malformed or out-of-range positions, a negative n, or an empty selection.
    """
    if n is not None and n < 0:
        raise InputError(f"n must be 0 or more, got {n}")
    if indices is None and (n is None or n >= len(dataset)) and len(dataset) > 0:
        return dataset
    positions = (torch.arange(len(dataset), device="cpu") if indices is None
                 else _parse_positions(indices, len(dataset)))
    positions = positions[:n]
    if positions.numel() == 0:
        raise InputError(f"no samples selected from {dataset.name} (n={n}, indices={indices!r})")
    return dataset.select(positions)


def _parse_positions(text: str, size: int) -> torch.Tensor:
    """Positions from "0,3,10-19" (ranges inclusive); empty items are skipped."""
    parts = []
    for item in (item.strip() for item in text.split(",")):
        if not item:
            continue
        match = _POSITION.fullmatch(item)
        if match is None:
            raise InputError(f"bad index {item!r} in {text!r}: use positions and ranges such as 0,3,10-19")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise InputError(f"bad range {item!r} in {text!r}: the end comes before the start")
        if last >= size:
            raise InputError(
                f"no samples selected: position {last} is out of range for {size} samples (0-{size - 1})"
            )
        parts.append(torch.arange(first, last + 1, device="cpu"))
    positions = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long, device="cpu")
    if positions.unique().numel() != positions.numel():
        raise InputError(f"position given twice in {text!r}: each sample may be selected once")
    return positions
