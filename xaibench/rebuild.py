"""``xaibench report RUN_DIR``: rebuild an evaluate run's reports from metrics.json and its heatmaps."""

from __future__ import annotations

import json
from pathlib import Path

from xaibench import runs
from xaibench.errors import InputError
from xaibench.evaluate import METRICS_FILE
from xaibench.report.comparison import write_reports

REQUIRED = ("title", "model", "data", "methods", "metrics", "results", "ranking", "skipped")


def rebuild_reports(run_dir: Path) -> tuple[Path, Path]:
    """Rewrite report.md and report.html (each atomically); the model is not needed.

    Raises:
        InputError: not an evaluate run, or an unreadable metrics.json.
    """
    record = runs.read_run(run_dir)
    if record.get("command") != "evaluate":
        raise InputError(f"{run_dir} was written by {record.get('command')!r}; reports come from evaluate runs")
    path = run_dir / METRICS_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    missing = [key for key in REQUIRED if not isinstance(summary, dict) or key not in summary]
    if missing:
        raise InputError(f"{path} is not an evaluate metrics.json (missing {', '.join(missing)})")
    return write_reports(summary, run_dir, method_heatmaps(run_dir, summary["methods"]))


def method_heatmaps(run_dir: Path, methods: list[str]) -> dict[str, list[Path]]:
    """Per-sample heatmap PNGs of each method under heatmaps/<method>/ (the grid excluded)."""
    root = run_dir / runs.HEATMAPS_DIR
    return {name: sorted(p for p in (root / name).glob("*.png") if p.name != "grid.png")
            for name in methods if (root / name).is_dir()}
