"""``xaibench concepts``: the concepts a model uses at a layer for a class, and how much each matters."""

from __future__ import annotations

import sys
from typing import Any

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("concepts", cls=PlainCommand)(concepts)


def concepts(
    model: str = common.MODEL,
    class_spec: str = typer.Option(..., "--class", "-c", metavar="NAME|INDEX",
                                   help="Class name or index whose concepts to extract."),
    layer: str = typer.Option(None, "--layer", metavar="NAME", show_default="the last convolutional block's "
                              "output", help="Layer to split the model at; xaibench inspect lists them."),
    data: str = common.data_option("train"),
    n: int = common.n_option("64", "images of the class"),
    n_concepts: int = typer.Option(10, "--n-concepts", "-k", min=1, metavar="K",
                                   help="Concepts to extract (at least 1)."),
    method: str = typer.Option("nmf", "--method", "-m", metavar="NAME",
                               help="Dictionary learning: nmf, kmeans, pca, sparse or semi_nmf."),
    importance: str = typer.Option("sobol", "--importance", metavar="NAME", help="sobol, gradient_input, "
                                   "integrated_gradients, occlusion, saliency or rise."),
    mode: str = typer.Option("patches", "--mode", metavar="NAME", help="patches (CRAFT crops), holistic "
                             "(every position) or pooled (one vector per image)."),
    patch_size: float = typer.Option(0.25, "--patch-size", metavar="FRACTION",
                                     help="Crop side as a fraction of the image side."),
    out: str = common.out_option("runs/concepts-<model>-<class>-<time>"),
    fmt: str = common.format_option(),
    overwrite: bool = common.OVERWRITE,
    seed: int = common.SEED,
    batch_size: int = common.batch_option(),
    max_memory: str = common.MAX_MEMORY,
    device: str = common.DEVICE,
    json_mode: bool = common.JSON,
    trust_model: bool = common.TRUST,
    arch: str = common.ARCH,
    arch_arg: list[str] = common.ARCH_ARG,
    modality: str = common.MODALITY,
    input_shape: str = common.INPUT_SHAPE,
    classes: str = common.CLASSES,
    mean: str = common.MEAN,
    std: str = common.STD,
    normalize: str = common.NORMALIZE,
    resize: str = common.RESIZE,
    center_crop: str = common.CENTER_CROP,
) -> None:
    """Extract a class's concepts (dictionary learning at a layer), their importance and a report."""
    from pathlib import Path

    from xaibench.concepts.extract import Settings
    from xaibench.jobs.concepts import ConceptJob, run_concepts

    output = Output(json_mode)
    job = ConceptJob(
        source=common.model_source(model, trust_model, arch, arch_arg), class_spec=class_spec, layer=layer,
        selection=common.selection(data=data, n=n, indices=None, target="pred", modality=modality,
                                   input_shape=input_shape, classes=classes, mean=mean, std=std,
                                   normalize=normalize, resize=resize, center_crop=center_crop),
        settings=Settings(method=method, n_concepts=n_concepts, mode=mode, importance=importance,
                          patch_size=patch_size, seed=seed, batch_size=batch_size),
        out=Path(out) if out else None, overwrite=overwrite, max_memory=max_memory, device=device, format=fmt)
    with output.progress(f"concepts ({method}, {importance})", None):
        summary = run_concepts(job, ["xaibench", *sys.argv[1:]])

    def human(console: Any) -> None:
        from xaibench.report.style import concept_label

        console.print(f"{summary['n_concepts']} {method} concepts of class {summary['class']!r} at "
                      f"{summary['layer']} from {summary['rows']} {mode} rows of {summary['images']} images "
                      f"in {summary['seconds']:.1f} s")
        ranked = sorted(enumerate(summary["global_importance"]), key=lambda item: -item[1])
        console.print("  importance (" + importance + "): " + ", ".join(f"{concept_label(i)} {v:.3g}" for i, v in ranked))
        for name, value in summary["metrics"].items():
            arrow = "higher is better" if value["higher_is_better"] else "lower is better"
            shown = "n/a" if value["value"] is None else f"{value['value']:.4g}"
            console.print(f"  {name:<14} {shown:>10}  ({arrow})")
        console.print(f"  split: {summary['split']}")
        console.print(f"  run directory: {summary['run_dir']}  (report.html)")

    output.result(summary, human)
