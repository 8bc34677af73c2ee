"""From an LLM's reply to a feature ranking, or a recorded failure: never a guess.

Kroeger et al. (2023) ask for the top-k features "on the last line, most important first" and parse by
taking the last line and stripping words and punctuation. Real replies are less tidy, so:

1. The answer line: the last line that carries a marker ("answer:", "final rank:", "ranking:", "top
   features:", ...), else the last non-empty line that names a feature, else a trailing numbered or
   bulleted list (one feature per item).
2. Features are matched by their prompt label (A, B, ...) or their real name, case-, space-, underscore-
   and punctuation-tolerant, longest name first. A one-letter label counts as a standalone token, and a
   lower-case one only on a line that is nothing but a list (so the article "a" is never feature A). In
   prose, "I" and "A" may be English words: before a contraction ("I'm") or "I" before a verb of
   opinion ("I think") they are words; before a word that continues a ranking ("A and C", "I is the
   most important") or punctuation they are labels; before any other lower-case word ("A change in C",
   "A significantly affects") they are ambiguous, and a line with such a token is not parsed.
3. Duplicates keep their first position. On a list line, one-letter tokens that name no feature (a
   hallucinated "Z") are reported as invalid; nothing unknown is ever mapped to a feature.
4. Fewer than k valid features, or an ambiguous "I" / "A" on the answer line: the reply is recorded as
   unparsed (``ok`` false, with the reason).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

MARKERS = ("final answer", "final rank", "final ranking", "answer", "ranking", "rank", "top features",
           "top-k features", "most important features", "important features", "features")
_MARKER = re.compile(r"^\W*(?:" + "|".join(re.escape(m) for m in MARKERS) + r")\s*[:=-]\s*(.*)$", re.IGNORECASE)
_CONTINUES = {"and", "or", "then", "is", "are", "was", "has", "had", "have", "seems", "appears", "matters",
              "comes", "also", "as", "with", "followed", "first", "second", "third", "next", "last", "most",
              "least", "by", "than", "ranks", "ranked", "being", "clearly", "strongly", "affects", "drives"}
_OPINION = {"think", "believe", "would", "will", "can", "cannot", "could", "should", "am", "have", "see",
            "notice", "found", "find", "conclude", "suspect", "expect", "guess", "estimate", "rank", "must",
            "need", "might", "may", "did", "do", "observe", "observed", "noticed", "hope", "feel", "want"}
_ITEM = re.compile(r"^\s*(?:\d+\s*[.)\]:-]|[-*\u2022])\s*(.+?)\s*$")


@dataclass(frozen=True)
class Parsed:
    """A parsed reply: ``ranking`` (feature names, most important first) when ``ok``, else ``reason``."""

    ranking: tuple[str, ...]
    ok: bool
    line: str
    invalid: tuple[str, ...] = field(default_factory=tuple)
    reason: str | None = None


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[\s_\-]+", " ", text.strip().lower()).split())


def _vocabulary(features: Sequence[str], labels: Sequence[str] | None) -> dict[str, str]:
    """Normalised spelling -> feature name, for labels and names; longest spellings first."""
    vocabulary = {}
    for i, name in enumerate(features):
        vocabulary[_normal(name)] = name
        if labels is not None:
            vocabulary[_normal(labels[i])] = name
    return dict(sorted(vocabulary.items(), key=lambda item: -len(item[0])))


def _pattern(spelling: str) -> str:
    """A spelling as a regex: words joined by any run of spaces, underscores or hyphens."""
    return r"[\s_\-]+".join(re.escape(word) for word in spelling.split(" "))


def _matches(line: str, vocabulary: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Features named on ``line`` in order of appearance, label-like tokens that name none, and labels
    that may be English words."""
    bare = line
    for spelling in vocabulary:
        if len(spelling) > 1:
            bare = re.sub(_pattern(spelling), " ", bare, flags=re.IGNORECASE)
    list_only = not re.search(r"[A-Za-z]{2,}", bare)  # nothing but names, letters and punctuation
    found: list[tuple[int, str]] = []
    ambiguous: list[str] = []
    taken = [False] * len(line)
    for spelling, name in vocabulary.items():
        single = len(spelling) == 1
        flags = re.IGNORECASE if not single or list_only else 0
        pattern = r"(?<![A-Za-z0-9])" + (re.escape(spelling.upper()) if single and not list_only
                                          else _pattern(spelling))
        for match in re.finditer(pattern + r"(?![A-Za-z0-9])", line, flags):
            span = range(match.start(), match.end())
            reading = _reading(line, match.start(), match.end()) if single and not list_only else "label"
            if reading == "ambiguous":
                ambiguous.append(match.group(0))
            if reading != "label":
                continue
            if not any(taken[i] for i in span):
                for j in span:
                    taken[j] = True
                found.append((match.start(), name))
    invalid = [tok for tok in re.findall(r"(?<![A-Za-z0-9])[A-Z](?![A-Za-z0-9])", line)
               if tok.lower() not in vocabulary] if list_only else []  # in prose, "I" is no label
    return [name for _, name in sorted(found)], invalid, ambiguous


def _reading(line: str, start: int, end: int) -> str:
    """How to read the one-letter token line[start:end] in prose: "label", "word" or "ambiguous"."""
    token, after = line[start:end], line[end:]
    if token not in ("I", "A"):
        return "label"
    if re.match(r"['\u2019][a-z]", after):
        return "word"
    word = re.match(r" +([a-z]+)", after)
    if not word or word.group(1) in _CONTINUES:
        return "label"
    return "word" if token == "I" and word.group(1) in _OPINION else "ambiguous"


def _candidates(reply: str) -> list[str]:
    """Answer lines in order of preference (see the module docstring)."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    marked = [m.group(1) for line in lines if (m := _MARKER.match(line)) and m.group(1).strip()]
    items: list[str] = []
    for line in reversed(lines):
        item = _ITEM.match(line)
        if not item:
            break
        items.insert(0, item.group(1))
    trailing = [", ".join(items)] if len(items) > 1 else []
    return [*reversed(marked), *trailing, *reversed(lines)]


def parse_ranking(reply: str, features: Sequence[str], k: int, labels: Sequence[str] | None = None) -> Parsed:
    """The ranking a reply gives, or why it gives none.

    Args:
        reply: the LLM's whole reply.
        features: the feature names, in the data's order.
        k: how many features the prompt asked for; fewer valid ones make the reply unparsed.
        labels: how the prompt named the features (e.g. A, B, ...), one per feature; real names are
            accepted too.
    """
    if labels is not None and len(labels) != len(features):
        raise ValueError("labels must name every feature once")
    vocabulary = _vocabulary(features, labels)
    fallback = Parsed((), False, "", (), "the reply names no feature")
    for line in _candidates(reply or ""):
        named, invalid, ambiguous = _matches(line, vocabulary)
        ranking = tuple(dict.fromkeys(named))
        if ambiguous:
            return Parsed((), False, line, tuple(invalid),
                          f"{ambiguous[0]!r} may be the English word or feature {ambiguous[0]}")
        if not ranking:
            continue
        if len(ranking) < k:
            return Parsed(ranking, False, line, tuple(invalid), f"{len(ranking)} valid features, {k} asked")
        return Parsed(ranking[:k], True, line, tuple(invalid))
    return fallback


def letters(count: int) -> list[str]:
    """Prompt labels A, B, ..., Z, AA, AB, ... for ``count`` features."""
    out = []
    for i in range(count):
        label, n = "", i
        while True:
            label = string.ascii_uppercase[n % 26] + label
            n = n // 26 - 1
            if n < 0:
                break
        out.append(label)
    return out
