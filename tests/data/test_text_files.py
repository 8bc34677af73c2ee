"""Text data files (.jsonl, .csv with a text column) and texts given on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xaibench.core.errors import InputError
from xaibench.data import load_data
from xaibench.data.text_files import text_dataset


def _jsonl(tmp_path: Path, *lines: object, raw: str | None = None) -> Path:
    path = tmp_path / "texts.jsonl"
    path.write_text(raw if raw is not None else "\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def _csv(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "texts.csv"
    path.write_text(content)
    return path


def test_jsonl_with_class_indices_keeps_texts_as_given(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"text": "A Great film", "label": 2}, {"text": "dull  plot ", "label": 0})
    data = load_data(str(path))
    assert (data.modality, data.split, data.name) == ("text", "all", str(path))
    assert data.texts == ("A Great film", "dull  plot ")
    assert data.x.shape == (2, 0) and data.y.tolist() == [2, 0] and data.y.dtype == torch.int64
    assert torch.equal(data.indices, torch.arange(2))
    assert (data.label_names, data.evidence, data.tokens, data.masks) == (None, None, None, None)


def test_jsonl_string_labels_become_sorted_label_names(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"text": "a", "label": "positive"}, {"text": "b", "label": "negative"},
                  {"text": "c", "label": "positive"})
    data = load_data(str(path))
    assert data.label_names == ("negative", "positive") and data.y.tolist() == [1, 0, 1]


def test_jsonl_without_labels_and_blank_lines(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, raw='{"text": "one"}\n\n   \n{"text": "two", "id": 7}\n')
    data = load_data(str(path))
    assert data.texts == ("one", "two") and data.y is None and data.label_names is None


@pytest.mark.parametrize(("raw", "message"), [
    ('{"text": "ok"}\n{"text": "broken"\n', "line 2 is not valid JSON"),
    ('["text"]\n', "line 1 is not a JSON object"),
    ('{"text": "ok"}\n\n{"label": 1}\n', "line 3 has no 'text' string"),
    ('{"text": 5}\n', "line 1 has no 'text' string"),
    ('{"text": "  "}\n', "line 1 has an empty 'text'"),
    ('{"text": "a", "label": -1}\n', "line 1 has 'label' -1; expected a class index"),
    ('{"text": "a", "label": 1.0}\n', "line 1 has 'label' 1.0"),
    ('{"text": "a", "label": true}\n', "line 1 has 'label' true"),
    ('{"text": "a", "label": 9223372036854775808}\n', "line 1 has 'label' 9223372036854775808"),
    ('{"text": "a", "label": 1}\n{"text": "b"}\n', "line 2 has no 'label' but line 1 has one"),
    ('{"text": "a"}\n{"text": "b", "label": 0}\n', "line 2 has a 'label' but line 1 has none"),
    ('{"text": "a", "label": 1}\n{"text": "b", "label": "x"}\n', "line 2 mixes class indices and class names"),
    ("\n\n", "holds no texts"),
    ("[" * 100_000 + "\n", "line 1 is not valid JSON"),
])
def test_bad_jsonl_lines_are_named(tmp_path: Path, raw: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        load_data(str(_jsonl(tmp_path, raw=raw)))


def test_jsonl_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_bytes(b'{"text": "\xff\xfe"}\n')
    with pytest.raises(InputError, match="cannot read"):
        load_data(str(path))


def test_csv_with_a_text_column_and_string_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path, 'id,Text,label\n1,"a good, long film",pos\n2,bad,neg\n3,42,pos\n')
    data = load_data(str(path))
    assert data.modality == "text" and data.texts == ("a good, long film", "bad", "42")
    assert data.label_names == ("neg", "pos") and data.y.tolist() == [1, 0, 1]


def test_csv_with_class_indices_or_no_labels(tmp_path: Path) -> None:
    assert load_data(str(_csv(tmp_path, "text,label\nfine,1\nawful,0.0\n"))).y.tolist() == [1, 0]
    unlabelled = load_data(str(_csv(tmp_path, "text\nfine\nawful\n")))
    assert unlabelled.texts == ("fine", "awful") and unlabelled.y is None


def test_csv_with_a_numeric_text_column_stays_tabular(tmp_path: Path) -> None:
    data = load_data(str(_csv(tmp_path, "text,b,label\n1,2,0\n3,4,1\n")))
    assert data.modality == "tabular" and data.texts is None
    assert data.x.tolist() == [[1.0, 2.0], [3.0, 4.0]] and data.y.tolist() == [0, 1]


@pytest.mark.parametrize(("content", "message"), [
    ("text,label\nfine,1\nawful\n", "line 3 has 1 fields, expected 2"),
    ("text,label\nfine,1\n ,0\n", "line 3 has an empty 'text'"),
    ("text,label\nfine,1\nawful,\n", "line 3 has an empty 'label'"),
    ("text,label\nfine,1\nawful,1.5\n", "label '1.5' is not a class index"),
    ("text,label\nfine,1\nawful,-1\n", "label '-1' is not a class index"),
])
def test_bad_csv_text_rows(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_data(str(_csv(tmp_path, content)))


def test_text_dataset_from_the_command_line() -> None:
    data = text_dataset(["The film was Great", "dull"])
    assert (data.name, data.split, data.modality) == ("--text", "all", "text")
    assert data.texts == ("The film was Great", "dull") and data.x.shape == (2, 0) and data.y is None
    assert torch.equal(data.indices, torch.arange(2))
    with pytest.raises(InputError, match="text 2 is empty"):
        text_dataset(["fine", " "])
    with pytest.raises(InputError, match="--text holds no texts"):
        text_dataset([])


def test_a_missing_jsonl_is_a_file_not_a_dataset_name() -> None:
    with pytest.raises(InputError, match="no such data file"):
        load_data("reviews.jsonl")
