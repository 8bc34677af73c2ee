"""Choosing metrics from the command line: names, globs, categories and ``all``; never imports torch."""

from __future__ import annotations

from dataclasses import dataclass

from xaibench.metrics.base import CATEGORIES, METRICS

from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError


@dataclass(frozen=True)
class Chosen:
    """A chosen metric; ``explicit`` when the user named it (it must then run, or the command fails)."""

    name: str
    explicit: bool


def choose_metrics(spec: str, *, concept: bool = False) -> list[Chosen]:
    """Metrics named by ``spec``, in the order given, without repeats.

    Items (comma-separated): ``all``; a metric name; a category (``faithfulness`` or
    ``category:faithfulness``; where a metric has a category's name, as ``complexity`` does, the bare
    word is the metric and ``category:complexity`` the category); a glob over names (``*sensitivity*``). Metrics selected by ``all``, a category or a
    glob are skipped where they cannot run (no masks, another modality); named ones must run.

    Attribution metrics (``xaibench evaluate``) and concept metrics (``xaibench concepts``) are two
    families: ``concept`` says which one is chosen from. ``all`` and globs silently leave out the other
    family; naming one of its metrics or its category, or a glob that matches only its metrics, is an
    IncompatibleError that names the command to use.

    Raises:
        UnknownNameError: for a name that is neither a metric nor a category (with a suggestion).
        IncompatibleError: for a metric or a category of the other family.
        InputError: for an empty list or a glob that matches nothing.
    """
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise InputError("--metrics needs at least one metric, category or 'all'")
    chosen: dict[str, Chosen] = {}
    for item in items:
        for name, explicit in _expand(item, concept):
            previous = chosen.get(name)  # a name keeps its first position; naming it makes it explicit
            chosen[name] = Chosen(name, explicit or (previous is not None and previous.explicit))
    return list(chosen.values())


def _expand(item: str, concept: bool) -> list[tuple[str, bool]]:
    if item == "all":
        return [(name, False) for name in _by_category(concept)]
    if item in METRICS:
        if METRICS.get(item).concept != concept:
            kind, command = _family(not concept)
            raise IncompatibleError(f"{item} is {'an' if concept else 'a'} {kind} metric: use {command}")
        return [(item, True)]
    category = item.removeprefix("category:")
    if category in CATEGORIES:
        names = [name for name in _by_category(concept) if METRICS.get(name).category == category]
        if not names:  # every category holds metrics of one family only
            kind, command = _family(not concept)
            raise IncompatibleError(f"category {category} holds {kind} metrics: use {command}")
        return [(name, False) for name in names]
    if item.startswith("category:"):
        raise UnknownNameError.for_name("metric category", category, list(CATEGORIES))
    if any(ch in item for ch in "*?["):
        names = METRICS.list(item)
        if not names:
            raise InputError(f"no metric matches {item!r}")
        kept = [name for name in names if METRICS.get(name).concept == concept]
        if not kept:
            kind, command = _family(not concept)
            raise IncompatibleError(f"{item!r} matches only {kind} metrics: use {command}")
        return [(name, False) for name in kept]
    raise UnknownNameError.for_name("metric", item, [*METRICS.list(), *CATEGORIES, "all"])


def _family(concept: bool) -> tuple[str, str]:
    """How an error names a family of metrics, and the command that runs them."""
    return ("concept", "xaibench concepts") if concept else ("attribution", "xaibench evaluate")


def _by_category(concept: bool) -> list[str]:
    """The metric names of one family, grouped by category in CATEGORIES order, by name within one."""
    order = {category: i for i, category in enumerate(CATEGORIES)}
    names = [name for name in METRICS.list() if METRICS.get(name).concept == concept]
    return sorted(names, key=lambda name: (order[METRICS.get(name).category], name))
