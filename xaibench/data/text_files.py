"""Text data from the user: a ``.jsonl`` file, a ``.csv`` with a "text" column, or texts on the command line.

A ``.jsonl`` file holds one JSON object per line, ``{"text": "...", "label": ...}``; blank lines are
skipped. A ``.csv`` file is text data when its first row names a column "text" (in any case) holding at
least one value that is not a number; its optional "label" column labels the texts. A label is a class
index (a non-negative integer) or a class name; either every text has one or none has. Class names are
kept as names (``Dataset.label_names``, their sorted unique values, which ``y`` indexes) until
``data.prepare`` matches them to the model's class names, as for the other data files.

Texts are kept as given (the model's tokenizer normalises them); until it reads them, ``x`` is an empty
(N, 0) tensor. Every text must hold a non-blank character.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.data.base import Dataset

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

TEXT_KEY = "text"
LABEL_KEY = "label"
MAX_LABEL = 2**63 - 1  # the largest int64 class index
Label = int | str


def read_jsonl(path: Path, name: str) -> Dataset:
    """The texts (and labels) of a ``.jsonl`` file, one JSON object a line, as split "all".

    Raises:
        InputError: a line that is not a JSON object with a non-blank "text" string and an optional
            class index or name "label" (naming the line), labels on some lines only, or no text.
    """
    texts: list[str] = []
    labels: list[Label | None] = []
    numbers: list[int] = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as err:  # RecursionError: nesting thousands deep
                raise InputError(f"{name}: line {number} is not valid JSON ({err})") from None
            if not isinstance(record, dict):
                raise InputError(f"{name}: line {number} is not a JSON object with a {TEXT_KEY!r} string")
            texts.append(_text(record.get(TEXT_KEY), name, number))
            labels.append(_label(record.get(LABEL_KEY), name, number))
            numbers.append(number)
    return _dataset(texts, labels, numbers, name)


def text_table(rows: list[list[str]], name: str) -> Dataset | None:
    """Text data from the rows of a csv file (the first row its header), or None when it is not text.

    Args:
        rows: the csv's non-empty rows, the first one the header.
        name: the file's name, for messages.

    Raises:
        InputError: a row of the wrong width, a blank text or label (naming the line), or labels
            that are numbers but not class indices.
    """
    if not rows:
        return None
    header = [cell.strip().lower() for cell in rows[0]]
    text_column = header.index(TEXT_KEY) if TEXT_KEY in header else None
    if text_column is None or all(is_number(row[text_column]) for row in rows[1:] if len(row) > text_column):
        return None
    label_column = header.index(LABEL_KEY) if LABEL_KEY in header else None
    texts, cells = [], []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"{name}: line {number} has {len(row)} fields, expected {len(header)}")
        texts.append(_text(row[text_column], name, number))
        if label_column is not None:
            if not row[label_column].strip():
                raise InputError(f"{name}: line {number} has an empty {LABEL_KEY!r}")
            cells.append(row[label_column].strip())
    labels: list[Label | None] = [None] * len(texts) if label_column is None else _csv_labels(cells, name)
    return _dataset(texts, labels, list(range(2, len(texts) + 2)), name)


def text_dataset(texts: list[str], name: str = "--text") -> Dataset:
    """Unlabelled text data from texts given directly (the CLI's ``--text``), as split "all".

    Raises:
        InputError: no text, or a blank one.
    """
    for position, text in enumerate(texts, start=1):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{name}: text {position} is empty; give a sentence to explain")
    return _dataset(list(texts), [None] * len(texts), list(range(1, len(texts) + 1)), name)


def _text(value: object, name: str, number: int) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name}: line {number} has no {TEXT_KEY!r} string")
    if not value.strip():
        raise InputError(f"{name}: line {number} has an empty {TEXT_KEY!r}")
    return value


def _label(value: object, name: str, number: int) -> Label | None:
    """A JSON label: None (absent), a class index or a class name."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LABEL):
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise InputError(f"{name}: line {number} has {LABEL_KEY!r} {json.dumps(value)[:40]}; expected a "
                     "class index (an integer from 0) or a class name")


def _csv_labels(cells: list[str], name: str) -> list[Label | None]:
    """Class indices when every label is a number, else class names."""
    if not all(is_number(cell) for cell in cells):
        return list(cells)
    values = [float(cell) for cell in cells]
    bad = next((cell for cell, v in zip(cells, values, strict=True)
                if not (v.is_integer() and 0 <= v <= MAX_LABEL)), None)
    if bad is not None:
        raise InputError(f"{name}: label {bad!r} is not a class index (an integer from 0) or a class name")
    return [int(v) for v in values]


def _dataset(texts: list[str], labels: list[Label | None], numbers: list[int], name: str) -> Dataset:
    """A text Dataset (split "all", empty x) with int64 labels, and the label names they index when
    the labels are names.

    Raises:
        InputError: no text, or labels on some lines only, or class indices mixed with names.
    """
    if not texts:
        raise InputError(f"{name} holds no texts")
    labelled = [label is not None for label in labels]
    if any(labelled) and not all(labelled):
        line = numbers[labelled.index(not labelled[0])]
        has, first = ("has no", "has one") if labelled[0] else ("has a", "has none")
        raise InputError(f"{name}: line {line} {has} {LABEL_KEY!r} but line {numbers[0]} {first}; "
                         "label every text or none")
    y, label_names = (None, None) if not any(labelled) else _labels(labels, numbers, name)
    return Dataset(
        x=torch.zeros((len(texts), 0)),
        y=None if y is None else torch.from_numpy(y),
        name=name,
        split="all",
        modality="text",
        indices=torch.arange(len(texts), device="cpu"),
        label_names=label_names,
        texts=tuple(texts),
    )


def _labels(
    labels: list[Label | None], numbers: list[int], name: str
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """int64 labels, and the sorted unique names they index when the labels are names."""
    named = [isinstance(label, str) for label in labels]
    if any(named) and not all(named):
        line = numbers[named.index(not named[0])]
        raise InputError(f"{name}: line {line} mixes class indices and class names as labels; use one kind")
    if not named[0]:
        return np.asarray(labels, dtype=np.int64), None
    names, y = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    return y.astype(np.int64), tuple(str(c) for c in names)


def is_number(cell: str) -> bool:
    """Whether a CSV cell reads as a number."""
    try:
        float(cell)
    except ValueError:
        return False
    return True
