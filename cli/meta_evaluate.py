"""``xaibench meta-evaluate``: which metrics can be trusted on a model (MetaQuantus's resilience and
reactivity tests)."""

from __future__ import annotations

import sys

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("meta-evaluate", cls=PlainCommand)(meta_evaluate)


def meta_evaluate(
    model: str = common.MODEL,
    metrics: str = typer.Option("faithfulness", "--metrics", metavar="LIST", help="Metrics to judge: names, "
                                "categories, globs or 'all'."),
    methods: str = typer.Option("saliency,integrated_gradients,gradient_shap", "--methods", "-m", metavar="LIST",
                                help="Methods whose explanations the metrics score (two or more), comma-separated."),
    data: str = common.data_option("test"),
    n: int = common.n_option("16"),
    indices: str = common.INDICES,
    perturbations: int = typer.Option(5, "--perturbations", "-k", min=1, metavar="K",
                                      help="Draws of each of the four perturbation tests."),
    param: list[str] = typer.Option(None, "--param", "-p", metavar="NAME.KEY=VALUE", help="Parameter of a "
                                    "method or metric (repeatable), e.g. -p deletion.substrate=blur."),
    reference: str = typer.Option(None, "--reference", metavar="ground_truth", help="ground_truth: the known "
                                  "attributions of synthetic data serve as the agreement metrics' reference."),
    out: str = common.out_option("runs/meta-evaluate-<model>-<time>"),
    overwrite: bool = common.OVERWRITE,
    seed: int = common.SEED,
    batch_size: int = common.batch_option(),
    max_memory: str = common.MAX_MEMORY,
    device: str = common.DEVICE,
    json_mode: bool = common.JSON,
    trust_model: bool = common.TRUST,
    arch: str = common.ARCH,
    arch_arg: list[str] = common.ARCH_ARG,
) -> None:
    """Rank metrics by how far they can be trusted on this model: scores should stay under noise that keeps
    the predictions and worsen under noise that changes them. Writes meta_evaluation.json and reports."""
    from xaibench.metrics.meta_evaluation import MetaParams

    from xaibench.jobs.meta_evaluate import MetaEvaluateConfig, run_meta_evaluation

    output = Output(json_mode)
    config = MetaEvaluateConfig(
        source=common.model_source(model, trust_model, arch, arch_arg),
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()), metrics=metrics,
        params=common.parse_named_params(param), reference=reference, meta=MetaParams(perturbations=perturbations),
        out=out,
        overwrite=overwrite, seed=seed, batch_size=batch_size, max_memory=max_memory, device=device,
        selection=common.selection(data=data, n=n, indices=indices, target="pred"),
    )
    result = run_meta_evaluation(config, ["xaibench", *sys.argv[1:]], on_progress=output.progress)
    summary = result.summary
    document = {"run_dir": str(result.run_dir), "report": str(result.run_dir / "report.html"),
                "ranking": summary["ranking"], "scores": summary["scores"], "seconds": round(result.seconds, 3)}
    output.result(document, lambda console: _print(console, summary, document))


def _print(console: object, summary: dict, document: dict) -> None:
    from rich.table import Table

    table = Table(title=f"Meta-evaluation: {summary['title']}", box=None, pad_edge=False)
    for column in ("metric", "MC", "resilience", "reactivity", "model MC", "input MC"):
        table.add_column(column, justify="left" if column == "metric" else "right", no_wrap=True)
    for name in summary["ranking"]:
        scores = summary["scores"][name]
        table.add_row(name, *(_fmt(v) for v in (scores["mc"], scores["resilience"], scores["reactivity"],
                                                 scores["model"]["MC"], scores["input"]["MC"])))
    console.print(table)
    console.print(f"Report: {document['report']}  ({document['seconds']:.1f} s)")


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
