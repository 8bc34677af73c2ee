"""Markdown for the reports: text from a run made inert, code spans, pipe tables."""

from __future__ import annotations

import html
from typing import Any


def inert(value: Any) -> str:
    """Text from a run summary as inert Markdown: one line, HTML special characters as entities, and the
    characters that open links, images or code spans escaped (names in metrics.json can be anything)."""
    text = " ".join(str(value).split())
    text = html.escape(text, quote=False)
    return "".join(f"\\{c}" if c in "\\`[]" else c for c in text)


def code(value: Any) -> str:
    """A code span around one line of ``value``, fenced by more backticks than any run inside it."""
    text = " ".join(str(value).split())
    longest = run = 0
    for c in text:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A pipe table, the first column left-aligned and the values right-aligned; pipes in cells escaped."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---", *["---:"] * (len(header) - 1)]), *(line(row) for row in rows)]
