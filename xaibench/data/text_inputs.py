"""Text data read by a text model's tokenizer: token ids, evidence masks and the explained embeddings.

Text datasets hold sentences (``Dataset.texts``); what a model takes depends on its tokenizer, so the
tokens are made here, once the model is known. The content tokens of every text (its special tokens
left out, ``xaibench.models.text``) become ``Dataset.x`` as ids (N, L), their strings ``Dataset.tokens``,
and, where the data knows which words decide the label (``Dataset.evidence``), a token is evidence when
its characters overlap such a word: ``Dataset.masks`` (N, L), what the localisation metrics read.

One length per batch: a batch of texts is explained without padding (no attention mask can then be
mismatched with the rows a method builds), so ``tokenised`` takes texts of one token length;
``length_groups`` splits a selection by length (``xaibench.data.text_lengths`` prepares each group).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.data.base import Dataset

if TYPE_CHECKING:
    import torch

    from xaibench.models.text import Encoded, TextClassifier
else:
    torch = lazy_import("torch")


def tokenised(data: Dataset, model: TextClassifier, spec: str) -> Dataset:
    """``data`` with ids, tokens and evidence masks from ``model``'s tokenizer.

    Raises:
        InputError: data that is not text, texts of different token lengths, or a template whose special
            tokens differ between texts.
    """
    if data.texts is None:
        raise InputError(f"the model reads text but {spec} is {data.modality} data; give text with --text, "
                         "a .jsonl or .csv file with a text column, or a text dataset")
    encoded = model.tokenizer.encode(data.texts)
    layout = (tuple(model.prefix.tolist()), tuple(model.suffix.tolist()))
    if any((e.prefix, e.suffix) != layout for e in encoded):
        raise InputError("the tokenizer puts different special tokens around different texts")
    lengths = Counter(len(e.ids) for e in encoded)
    if len(lengths) > 1:
        common = ", ".join(f"{count} of {length}" for length, count in lengths.most_common(4))
        raise InputError(f"the selected texts have {len(lengths)} token lengths ({common}); explain takes them, "
                         "but this command compares texts of one length: select them with --indices")
    (length,) = lengths
    total, limit = len(layout[0]) + length + len(layout[1]), model.max_tokens
    if limit is not None and total > limit:
        raise InputError(f"the texts have {total} tokens with the special tokens, more than the model's {limit}; "
                         "xaibench does not cut texts short: shorten them")
    ids = torch.tensor([e.ids for e in encoded], dtype=torch.long, device="cpu")
    masks = None if data.evidence is None else evidence_masks(encoded, data.evidence)
    return replace(data, x=ids.float(), masks=masks, tokens=tuple(e.tokens for e in encoded))


def evidence_masks(encoded: list[Encoded], evidence: tuple[tuple[tuple[int, int], ...], ...]) -> torch.Tensor:
    """(N, L) bool: the content tokens whose character span overlaps one of the sample's evidence spans."""
    rows = [[any(start < end_word and start_word < end for start_word, end_word in spans) for start, end in e.offsets]
            for e, spans in zip(encoded, evidence, strict=True)]
    return torch.tensor(rows, dtype=torch.bool, device="cpu")


def length_groups(data: Dataset, model: TextClassifier) -> list[list[int]]:
    """Positions of ``data``'s texts grouped by their content-token count, groups in order of first
    appearance, positions in order within each."""
    groups: dict[int, list[int]] = {}
    for position, encoded in enumerate(model.tokenizer.encode(data.texts)):
        groups.setdefault(len(encoded.ids), []).append(position)
    return list(groups.values())
