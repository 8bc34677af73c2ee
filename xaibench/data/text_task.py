"""A generated text classification task whose deciding words are known: ``planted_text``.

Each sample is a review-like sentence of exactly ``SENTENCE_WORDS`` = 12 lower-case words separated by
single spaces, without punctuation. Eleven or ten of the words are fillers drawn uniformly from
``FILLERS``: function words, film nouns and verbs, and decoy adjectives (``DECOYS``, such as "long" or
"quiet") that look like opinions but carry none. The other one or two words are planted at random
positions and decide the label: they are drawn (distinct) from the lexicon of the sample's class,
``LEXICONS`` (three disjoint sentiment lexicons of eight words, none of them a filler). The label is
therefore a deterministic function of the planted words, ``label_of``: a model can be exact, and the
right explanation of a prediction is the planted words. ``evidence`` holds their character spans
(start, end), which the model's tokenizer turns into token masks.

Every sentence has the same number of words because xaibench explains texts of one token length per
batch: a word-level tokenizer gives every sentence the same token count, so no padding (and no attention
mask) is needed. Classes are balanced and shuffled; train and test draw from different seeds.
"""

from __future__ import annotations

import numpy as np

from xaibench.data.base import Dataset
from xaibench.data.builtin import _builtin, _dataset

SENTENCE_WORDS = 12
CLASS_NAMES = ("negative", "neutral", "positive")
LEXICONS = (
    ("awful", "terrible", "boring", "dreadful", "horrible", "dull", "painful", "tedious"),
    ("average", "ordinary", "adequate", "acceptable", "moderate", "standard", "typical", "passable"),
    ("excellent", "wonderful", "brilliant", "superb", "delightful", "great", "amazing", "charming"),
)
DECOYS = ("long", "short", "old", "new", "red", "quiet", "large", "small", "early", "late")
FILLERS = (
    "the", "a", "this", "that", "its", "and", "with", "of", "in", "was", "is", "very", "quite", "film",
    "movie", "story", "plot", "actor", "scene", "ending", "music", "director", "script", "cast",
    "seemed", "felt", "looked", "had", "for", "at", *DECOYS,
)
SIZES = {"train": 4000, "test": 1000}
SEEDS = {"train": 50, "test": 51}


def label_of(words: list[str] | tuple[str, ...]) -> int:
    """The class of a sentence's words: the class whose lexicon holds its lexicon words.

    Raises:
        ValueError: the words hold no lexicon word, or words of more than one class.
    """
    classes = {c for c, lexicon in enumerate(LEXICONS) for word in words if word in lexicon}
    if len(classes) != 1:
        raise ValueError(f"words of {len(classes)} classes, expected exactly one")
    return classes.pop()


Spans = tuple[tuple[int, int], ...]


def generate(n: int, seed: int) -> tuple[tuple[str, ...], np.ndarray, tuple[Spans, ...]]:
    """``n`` sentences with planted class words.

    Args:
        n: number of sentences.
        seed: seed of the ``np.random.Generator``; the same seed gives the same sentences.

    Returns:
        the sentences, int64 labels (N,) with balanced, shuffled classes, and per sentence the
        character spans (start, end) of its planted words in word order.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    texts, evidence = [], []
    for label in labels:
        words = [str(word) for word in rng.choice(FILLERS, size=SENTENCE_WORDS)]
        planted = int(rng.integers(1, 3))
        positions = sorted(rng.choice(SENTENCE_WORDS, size=planted, replace=False).tolist())
        for position, word in zip(positions, rng.choice(LEXICONS[label], size=planted, replace=False),
                                  strict=True):
            words[position] = str(word)
        starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]])
        texts.append(" ".join(words))
        evidence.append(tuple((int(starts[p]), int(starts[p]) + len(words[p])) for p in positions))
    return tuple(texts), labels, tuple(evidence)


@_builtin(
    "planted_text", modality="text",
    description="generated 12-word sentences (4000 train, 1000 test) whose 1-2 planted sentiment words "
                "decide the label, their character spans as evidence; 3 classes",
)
def planted_text(split: str) -> Dataset:
    """Sentences of ``generate``; ``x`` is empty (N, 0) until a model's tokenizer reads the texts."""
    texts, labels, evidence = generate(SIZES[split], SEEDS[split])
    return _dataset("planted_text", split, "text", np.zeros((len(texts), 0)), labels,
                    texts=texts, evidence=evidence, class_names=CLASS_NAMES)
