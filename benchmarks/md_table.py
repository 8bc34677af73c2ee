"""Markdown tables for the benchmarks' printed reports (pasted into RESULTS.md)."""

from __future__ import annotations


def table(header: list[str], lines: list[list[str]]) -> None:
    """Print a markdown table, then a blank line."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in header) + "|")
    for line in lines:
        print("| " + " | ".join(line) + " |")
    print()
