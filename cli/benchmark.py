"""``xaibench benchmark SUITE.yaml``: run a suite's grid of models, methods and metrics (resumable) and
write one leaderboard."""

from __future__ import annotations

import sys

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("benchmark", cls=PlainCommand)(benchmark)


def benchmark(
    suite: str = typer.Argument(..., metavar="SUITE.yaml", help="The suite: models, data, methods, metrics, "
                                "parameters (see docs/evaluate-and-metrics.md)."),
    out: str = common.out_option("runs/benchmark-<suite name>"),
    batch_size: int = common.batch_option(),
    max_memory: str = common.MAX_MEMORY,
    device: str = common.DEVICE,
    json_mode: bool = common.JSON,
    trust_model: bool = common.TRUST,
) -> None:
    """Evaluate and meta-evaluate every model of a suite, reusing finished cells (an interrupted suite
    continues where it stopped), and write leaderboard.json, .md and .html."""
    from pathlib import Path

    from xaibench.jobs.benchmark import BenchmarkConfig, run_benchmark
    from xaibench.report.leaderboard import verdict

    output = Output(json_mode)

    def told(name: str, kind: str, reused: bool) -> None:
        output.note(f"{name} {kind}: {'reused' if reused else 'running'}")

    config = BenchmarkConfig(suite=Path(suite), out=out, trust_model=trust_model, device=device,
                             batch_size=batch_size, max_memory=max_memory)
    result = run_benchmark(config, ["xaibench", *sys.argv[1:]], on_progress=output.progress, on_cell=told)
    document = {"out": str(result.out), "leaderboard": str(result.out / "leaderboard.html"),
                "reused": result.reused, "computed": result.computed, "seconds": round(result.seconds, 3),
                "models": [{"name": m["name"], "reliable": m["reliable"]} for m in result.board["models"]]}

    def show(console: object) -> None:
        for model in result.board["models"]:
            console.print(f"{model['name']}: {verdict(model)}")
        console.print(f"Leaderboard: {document['leaderboard']}  ({document['seconds']:.1f} s; "
                      f"{len(result.reused)} cells reused, {len(result.computed)} run)")

    output.result(document, show)
