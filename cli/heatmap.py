"""``xaibench heatmap RUN_DIR``: re-export a run's heatmaps with another style, colour map or clipping."""

from __future__ import annotations

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("heatmap", cls=PlainCommand)(heatmap)


def heatmap(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR",
                           help="A run directory written by xaibench explain."),
    style: str = typer.Option("overlay", "--style", metavar="NAME", help="overlay, heatmap or masked."),
    cmap: str = typer.Option(None, "--cmap", metavar="NAME", show_default="RdBu_r for signed, cividis for "
                            "unsigned attributions", help="Matplotlib colour map."),
    clip: float = typer.Option(99.0, "--clip", metavar="PERCENTILE",
                              help="Percentile of |attribution| where colours saturate."),
    alpha: float = typer.Option(0.8, "--alpha", metavar="OPACITY",
                                help="Opacity of the overlay where colours saturate, 0..1."),
    scale: str = common.scale_option("the run's (shared for older runs)"),
    fmt: str = common.format_option("the run's (png for older runs)"),
    out: str = typer.Option(None, "--out", "-o", metavar="PATH", show_default="RUN_DIR/heatmaps, replaced",
                            help="Folder outside the run to write instead."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    json_mode: bool = common.JSON,
) -> None:
    """Re-render the heatmaps of a run (replaces RUN_DIR/heatmaps atomically unless --out is given)."""
    from pathlib import Path

    from xaibench.jobs.heatmap import reexport
    from xaibench.report import HeatmapStyle

    given = {name: value for name, value in (("scale", scale), ("format", fmt)) if value is not None}
    files = reexport(Path(run_dir), HeatmapStyle(style=style, cmap=cmap, clip=clip, alpha=alpha, **given),
                     Path(out) if out else None, overwrite,
                     inherit=tuple(name for name in ("scale", "format") if name not in given))
    folder = str(files[0].parent) if files else str(out or run_dir)
    Output(json_mode).result(
        {"heatmaps": folder, "files": [str(f) for f in files]},
        lambda console: console.print(f"Wrote {len(files)} heatmaps to {folder}"),
    )
