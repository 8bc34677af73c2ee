"""``xaibench evaluate`` (score methods with metrics, write reports) and ``xaibench report`` (rebuild them)."""

from __future__ import annotations

import sys

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("evaluate", cls=PlainCommand)(evaluate)
    app.command("report", cls=PlainCommand)(report)


def evaluate(
    model: str = common.MODEL,
    methods: str = typer.Option(None, "--methods", "-m", metavar="LIST",
                                show_default="the methods of the --attributions runs",
                                help="Methods to compare, comma-separated."),
    metrics: str = typer.Option("faithfulness", "--metrics", metavar="LIST", help="Metric names, categories "
                                "(faithfulness or category:faithfulness), globs or 'all'."),
    data: str = common.data_option("test", ", or that of the --attributions runs"),
    n: int = common.n_option("32, or the samples of --indices or of the --attributions runs"),
    indices: str = common.INDICES,
    target: str = common.TARGET,
    param: list[str] = typer.Option(None, "--param", "-p", metavar="NAME.KEY=VALUE", help="Parameter of a "
                                    "method or metric (repeatable), e.g. -p deletion.substrate=blur."),
    reference: str = typer.Option(None, "--reference", metavar="METHOD", help="Method whose attributions "
                                  "serve as the reference of the agreement metrics, or ground_truth for the "
                                  "attributions known to be right, which synthetic data carries (the "
                                  "synthetic_* datasets)."),
    attributions: list[str] = typer.Option(None, "--attributions", metavar="RUN_DIR", help="Reuse the "
                                           "attributions of an explain or evaluate run (repeatable)."),
    out: str = common.out_option("runs/evaluate-<model>-<time>"),
    scale: str = common.scale_option(),
    fmt: str = common.format_option(),
    overwrite: bool = common.OVERWRITE,
    seed: int = common.SEED,
    batch_size: int = common.batch_option(),
    max_memory: str = common.MAX_MEMORY,
    device: str = common.DEVICE,
    dtype: str = common.DTYPE,
    json_mode: bool = common.JSON,
    trust_model: bool = common.TRUST,
    arch: str = common.ARCH,
    arch_arg: list[str] = common.ARCH_ARG,
    modality: str = common.MODALITY,
    text: list[str] = common.TEXT,
    tokenizer: str = common.TOKENIZER,
    input_shape: str = common.INPUT_SHAPE,
    classes: str = common.CLASSES,
    mean: str = common.MEAN,
    std: str = common.STD,
    normalize: str = common.NORMALIZE,
    resize: str = common.RESIZE,
    center_crop: str = common.CENTER_CROP,
) -> None:
    """Score attribution methods with metrics; write metrics.json, metrics.csv, report.md and report.html."""
    from xaibench.jobs.evaluate import EvaluateConfig
    from xaibench.jobs.evaluate import evaluate as run_evaluate

    output = Output(json_mode)
    config = EvaluateConfig(
        source=common.model_source(model, trust_model, arch, arch_arg, tokenizer=tokenizer),
        methods=tuple(m.strip() for m in (methods or "").split(",") if m.strip()), metrics=metrics,
        params=common.parse_named_params(param), reference=reference,
        attributions=tuple(attributions or ()), out=out, overwrite=overwrite, seed=seed,
        batch_size=batch_size, max_memory=max_memory, device=device, dtype=dtype, scale=scale, format=fmt,
        selection=common.selection(data=data, texts=text, n=n, indices=indices, target=target, modality=modality,
                                   input_shape=input_shape, classes=classes, mean=mean, std=std,
                                   normalize=normalize, resize=resize, center_crop=center_crop),
    )
    result = run_evaluate(config, ["xaibench", *sys.argv[1:]], on_progress=output.progress)
    summary = result.summary
    document = {
        "run_dir": str(result.run_dir),
        "report": str(result.run_dir / "report.html"),
        "metrics_json": str(result.run_dir / "metrics.json"),
        "ranking": summary["ranking"],
        "skipped": summary["skipped"],
        "seconds": round(result.seconds, 3),
    }
    output.result(document, lambda console: _print_ranking(console, summary, document))


def report(
    run_dir: str = typer.Argument(..., metavar="RUN_DIR",
                           help="A run directory written by xaibench evaluate."),
    json_mode: bool = common.JSON,
) -> None:
    """Rebuild report.md and report.html of an evaluate run from its metrics.json and heatmaps."""
    from pathlib import Path

    from xaibench.jobs.report import rebuild_reports

    md, html = rebuild_reports(Path(run_dir))
    Output(json_mode).result({"report_md": str(md), "report_html": str(html)},
                             lambda console: console.print(f"Wrote {md} and {html}"))


def _print_ranking(console: object, summary: dict, document: dict) -> None:
    """Metrics as rows, methods (best first) as columns: fits a terminal for many metrics."""
    from rich.table import Table
    from rich.text import Text

    ranking = summary["ranking"]
    table = Table(title=summary["title"], box=None, pad_edge=False)
    table.add_column("metric", no_wrap=True)
    for row in ranking:
        table.add_column(row["method"], justify="right")
    for name, meta in summary["metrics"].items():
        arrow = "↑" if meta["higher_is_better"] else "↓"
        table.add_row(f"{name} {arrow}", *[_fmt(summary["results"][r["method"]][name]["mean"])
                                           for r in ranking])
    table.add_row(Text("mean rank", style="bold"), *[Text(_fmt(r["mean_rank"]), style="bold") for r in ranking])
    console.print(table)
    for skip in summary["skipped"]:
        console.print(f"skipped {skip['metric']}: {skip['reason']}", style="dim")
    console.print(f"Report: {document['report']}  ({document['seconds']:.1f} s)")


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
