"""Choosing metrics from the command line: names, globs, categories and ``all``; never imports torch."""

from __future__ import annotations

from dataclasses import dataclass

from xaibench.errors import InputError, UnknownNameError
from xaibench.metrics.base import CATEGORIES, METRICS


@dataclass(frozen=True)
class Chosen:
    """A chosen metric; ``explicit`` when the user named it (it must then run, or the command fails)."""

    name: str
    explicit: bool


def choose_metrics(spec: str) -> list[Chosen]:
    """Metrics named by ``spec``, in the order given, without repeats.

    Items (comma-separated): ``all``; a metric name; a category (``faithfulness`` or
    ``category:faithfulness``; where a metric has a category's name, as ``complexity`` does, the bare
    word is the metric and ``category:complexity`` the category); a glob over names (``*sensitivity*``). Metrics selected by ``all``, a category or a
    glob are skipped where they cannot run (no masks, another modality); named ones must run.

    Raises:
        UnknownNameError: for a name that is neither a metric nor a category (with a suggestion).
        InputError: for an empty list or a glob that matches nothing.
    """
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise InputError("--metrics needs at least one metric, category or 'all'")
    chosen: dict[str, Chosen] = {}
    for item in items:
        for name, explicit in _expand(item):
            previous = chosen.get(name)  # a name keeps its first position; naming it makes it explicit
            chosen[name] = Chosen(name, explicit or (previous is not None and previous.explicit))
    return list(chosen.values())


def _expand(item: str) -> list[tuple[str, bool]]:
    if item == "all":
        return [(name, False) for name in _by_category()]
    if item in METRICS:
        return [(item, True)]
    category = item.removeprefix("category:")
    if category in CATEGORIES:
        return [(name, False) for name in _by_category() if METRICS.get(name).category == category]
    if item.startswith("category:"):
        raise UnknownNameError.for_name("metric category", category, list(CATEGORIES))
    if any(ch in item for ch in "*?["):
        names = METRICS.list(item)
        if not names:
            raise InputError(f"no metric matches {item!r}")
        return [(name, False) for name in names]
    raise UnknownNameError.for_name("metric", item, [*METRICS.list(), *CATEGORIES, "all"])


def _by_category() -> list[str]:
    """All metric names, grouped by category in CATEGORIES order, by name within a category."""
    order = {category: i for i, category in enumerate(CATEGORIES)}
    return sorted(METRICS.list(), key=lambda name: (order[METRICS.get(name).category], name))
