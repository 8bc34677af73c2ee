"""``xaibench heatmap RUN_DIR``: re-export a run's heatmaps with another style, colour map or clipping."""

from __future__ import annotations

import typer
from xaibench.cli import common
from xaibench.cli.output import Output


def register(app: typer.Typer) -> None:
    app.command("heatmap")(heatmap)


def heatmap(
    run_dir: str = typer.Argument(..., help="A run directory written by xaibench explain."),
    style: str = typer.Option("overlay", "--style", help="overlay, heatmap or masked."),
    cmap: str = typer.Option(None, "--cmap", help="Matplotlib colour map (default by sign)."),
    clip: float = typer.Option(99.0, "--clip", help="Percentile of |attribution| where colours saturate."),
    alpha: float = typer.Option(0.5, "--alpha", help="Opacity of the overlay, 0..1."),
    out: str = typer.Option(None, "--out", "-o", help="Folder outside the run to write instead of "
                            "replacing RUN_DIR/heatmaps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    json_mode: bool = common.JSON,
) -> None:
    """Re-render the heatmaps of a run (replaces RUN_DIR/heatmaps atomically unless --out is given)."""
    from pathlib import Path

    from xaibench.jobs.heatmap import reexport
    from xaibench.report import HeatmapStyle

    files = reexport(Path(run_dir), HeatmapStyle(style=style, cmap=cmap, clip=clip, alpha=alpha),
                     Path(out) if out else None, overwrite)
    folder = str(files[0].parent) if files else str(out or run_dir)
    Output(json_mode).result(
        {"heatmaps": folder, "files": [str(f) for f in files]},
        lambda console: console.print(f"Wrote {len(files)} heatmaps to {folder}"),
    )
