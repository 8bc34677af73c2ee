"""The generated text task: determinism, one word count, labels decided by the planted words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaibench.data import DATASETS, load_data, select, text_task
from xaibench.data.text_task import (
    FILLERS,
    LEXICONS,
    SENTENCE_WORDS,
    generate,
    label_of,
)


def test_registered_with_metadata() -> None:
    entry = DATASETS.get("planted_text")
    assert (entry.modality, entry.splits) == ("text", ("train", "test"))
    assert "planted" in entry.description


@pytest.mark.parametrize(("split", "size", "counts"),
                         [("train", 4000, [1334, 1333, 1333]), ("test", 1000, [334, 333, 333])])
def test_split_fields(split: str, size: int, counts: list[int]) -> None:
    data = load_data(f"planted_text:{split}")
    assert (data.name, data.split, data.modality, len(data)) == ("planted_text", split, "text", size)
    assert data.x.shape == (size, 0) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64 and torch.equal(data.indices, torch.arange(size))
    assert data.class_names == ("negative", "neutral", "positive")
    assert len(data.texts) == len(data.evidence) == size
    assert np.bincount(data.y.numpy()).tolist() == counts
    assert (data.masks, data.tokens, data.label_names) == (None, None, None)


def test_every_sentence_has_the_same_words_count_in_lower_case() -> None:
    for text in load_data("planted_text:test").texts:
        words = text.split(" ")
        assert len(words) == SENTENCE_WORDS and all(word.isalpha() and word.islower() for word in words)


def test_planted_words_decide_the_label_and_the_spans_point_at_them() -> None:
    data = load_data("planted_text:test")
    for text, spans, label in zip(data.texts, data.evidence, data.y.tolist(), strict=True):
        planted = [text[start:end] for start, end in spans]
        assert 1 <= len(planted) <= 2 and len(set(planted)) == len(planted)
        assert [c for c, lexicon in enumerate(LEXICONS) if set(planted) <= set(lexicon)] == [label]
        assert all(start == 0 or text[start - 1] == " " for start, _ in spans)  # whole words
        assert all(end == len(text) or text[end] == " " for _, end in spans)
        rest = text
        for start, end in reversed(spans):
            rest = rest[:start] + rest[end:]
        assert all(word in FILLERS for word in rest.split())  # no lexicon word outside the spans
        assert label_of(text.split(" ")) == label


def test_lexicons_are_disjoint_from_each_other_and_the_fillers() -> None:
    words = [word for lexicon in LEXICONS for word in lexicon]
    assert len(set(words)) == len(words) == 24
    assert not set(words) & set(FILLERS)


def test_label_of_refuses_no_class_and_two_classes() -> None:
    with pytest.raises(ValueError, match="0 classes"):
        label_of(["the", "film"])
    with pytest.raises(ValueError, match="2 classes"):
        label_of(["awful", "great"])


def test_deterministic_and_seeded_per_split() -> None:
    first, second = generate(30, 7), generate(30, 7)
    assert first[0] == second[0] and first[2] == second[2] and np.array_equal(first[1], second[1])
    assert generate(30, 8)[0] != first[0]
    test = DATASETS.get("planted_text")("test")
    DATASETS.get("planted_text").cache_clear()
    again = DATASETS.get("planted_text")("test")
    assert again is not test and again.texts == test.texts and torch.equal(again.y, test.y)
    assert again.texts == generate(1000, text_task.SEEDS["test"])[0]
    assert load_data("planted_text:train").texts[:5] != test.texts[:5]


def test_all_split_and_selection_keep_texts_and_evidence() -> None:
    train, test = load_data("planted_text:train"), load_data("planted_text:test")
    everything = load_data("planted_text:all")
    assert everything.texts == train.texts + test.texts
    assert everything.evidence == train.evidence + test.evidence
    picked = select(test, indices="3,1")
    assert picked.texts == (test.texts[3], test.texts[1])
    assert picked.evidence == (test.evidence[3], test.evidence[1])
