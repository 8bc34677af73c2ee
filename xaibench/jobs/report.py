"""``xaibench report RUN_DIR``: rebuild an evaluate run's reports from metrics.json and its heatmaps."""

from __future__ import annotations

from pathlib import Path

from xaibench.core import ownership, runs
from xaibench.core.errors import InputError
from xaibench.jobs import record_checks as records
from xaibench.jobs.evaluate import METRICS_FILE
from xaibench.report.comparison import HTML_FILE, MARKDOWN_FILE, write_reports


def rebuild_reports(run_dir: Path) -> tuple[Path, Path]:
    """Rewrite report.md and report.html (each atomically); the model is not needed.

    Raises:
        InputError: not an evaluate run, or a metrics.json that is unreadable or malformed (checked
            whole before anything is written).
    """
    record = runs.read_run(run_dir)
    if record.get("command") != "evaluate":
        raise InputError(f"{run_dir} was written by {str(record.get('command'))[:40]!r}; reports come from "
                         "evaluate runs")
    path = run_dir / METRICS_FILE
    summary = records.evaluate_summary(runs.read_json(path), path)
    written = write_reports(summary, run_dir, method_heatmaps(run_dir, summary["methods"]))
    ownership.update_manifest(run_dir, [MARKDOWN_FILE, HTML_FILE])
    return written


def method_heatmaps(run_dir: Path, methods: list[str]) -> dict[str, list[Path]]:
    """Per-sample heatmap PNGs of each method under heatmaps/<method>/ (the grid excluded); only regular
    files that lie inside the run (a link out of it is ignored)."""
    root = run_dir / runs.HEATMAPS_DIR
    inside = run_dir.resolve()
    found = {}
    for name in methods:
        folder = root / runs.plain_name(name, "method name", run_dir / METRICS_FILE)
        if folder.is_dir() and not folder.is_symlink() and inside in folder.resolve().parents:
            found[name] = sorted(p for p in folder.glob("*.png")
                                 if p.name != "grid.png" and p.is_file() and not p.is_symlink())
    return found
