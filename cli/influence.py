"""``xaibench influence fit | score | self``: which training examples drove a prediction (EK-FAC)."""

from __future__ import annotations

import math
import sys
from typing import Any

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand, PlainGroup

influence_app = typer.Typer(cls=PlainGroup, no_args_is_help=True,
                            help="Influence functions (EK-FAC): training examples behind predictions.")

TRAIN = typer.Option(None, "--train", metavar="NAME[:SPLIT]|PATH", show_default="the model's dataset, "
                     "train split", help="Training data, with labels.")
TRAIN_N = typer.Option(None, "--train-n", min=1, metavar="N", show_default="all",
                       help="Use the first N training examples (at least 1).")
STRATEGY = typer.Option("ekfac", "--strategy", metavar="NAME",
                        help="identity, diagonal, kfac, ekfac or exact (small models).")
FISHER = typer.Option("true", "--fisher", metavar="true|empirical",
                      help="true (labels sampled from the model) or empirical (data labels).")
MODULES = typer.Option(None, "--modules", metavar="GLOBS", show_default="every Linear and Conv2d",
                       help="Glob(s) over module names to track, comma-separated, e.g. 'conv*,fc'.")
DAMPING = typer.Option("heuristic", "--damping", metavar="NUMBER|heuristic", help="Absolute damping (e.g. "
                       "1e-3), or heuristic: 0.1 x the mean curvature eigenvalue of each module.")
MEASUREMENT = typer.Option("loss", "--measurement", metavar="loss|margin", help="Query measurement.")
CHUNK = typer.Option(4096, "--chunk-size", min=1, metavar="N", help="Examples per checkpoint (an interrupted "
                     "run resumes from the last one).")
RANK = typer.Option(None, "--rank", min=1, metavar="R", show_default="full",
                    help="Compress each query gradient to this rank (at least 1).")
BATCH = common.batch_option()


def register(app: typer.Typer) -> None:
    app.add_typer(influence_app, name="influence")


def _fit_config(strategy: str, fisher: str, modules: str | None, batch_size: int | None, chunk_size: int,
                seed: int) -> Any:
    from xaibench.influence import FitConfig

    patterns = tuple(p.strip() for p in modules.split(",") if p.strip()) if modules else None
    return FitConfig(strategy=strategy, fisher=fisher, modules=patterns, batch_size=batch_size or 128,
                     chunk_size=chunk_size, seed=seed)


def _score_config(damping: str, rank: int | None, batch_size: int | None, chunk_size: int) -> Any:
    from xaibench.core.errors import InputError
    from xaibench.influence import ScoreConfig

    try:
        value = None if damping == "heuristic" else float(damping)
    except ValueError:
        value = math.nan
    if value is not None and not math.isfinite(value):  # nan / inf parse as floats but damp nothing
        raise InputError(f"--damping must be a number or 'heuristic', got {damping!r}")
    return ScoreConfig(damping=value, rank=rank, batch_size=batch_size or 128, chunk_size=chunk_size)


def _train(train: str | None, train_n: int | None, options: dict[str, Any]) -> Any:
    return common.selection(data=train, n=train_n, indices=None, target="label", **options)


def _data_options(modality: str | None, input_shape: str | None, classes: str | None, mean: str | None,
                  std: str | None, normalize: str | None, resize: str | None,
                  center_crop: str | None) -> dict[str, Any]:
    """The metadata and preprocessing options, the same for training and query data."""
    return {"modality": modality, "input_shape": input_shape, "classes": classes, "mean": mean, "std": std,
            "normalize": normalize, "resize": resize, "center_crop": center_crop}


@influence_app.command("fit", cls=PlainCommand)
def fit(
    model: str = common.MODEL,
    train: str = TRAIN,
    train_n: int = TRAIN_N,
    strategy: str = STRATEGY,
    fisher: str = FISHER,
    modules: str = MODULES,
    out: str = common.out_option("factors/<model>-<strategy>", "Factors directory"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing factors directory."),
    factor_dtype: str = typer.Option("float64", "--factor-dtype", metavar="DTYPE",
                                     help="Store the factors as float64, float32 (half the disk and "
                                          "reading) or bfloat16 (a quarter, about 3 significant digits)."),
    chunk_size: int = CHUNK,
    seed: int = common.SEED,
    batch_size: int = BATCH,
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
    """Fit curvature factors on training data and save them for influence score / self."""
    from pathlib import Path

    from xaibench.jobs.influence import FitJob
    from xaibench.jobs.influence import fit as run_fit

    output = Output(json_mode)
    source = common.model_source(model, trust_model, arch, arch_arg)
    options = _data_options(modality, input_shape, classes, mean, std, normalize, resize, center_crop)
    job = FitJob(source=source, train=_train(train, train_n, options), overwrite=overwrite,
                 config=_fit_config(strategy, fisher, modules, batch_size, chunk_size, seed),
                 out=Path(out) if out else Path("factors") / f"{source.stem}-{strategy}",
                 batch_size=batch_size, max_memory=max_memory, device=device, factor_dtype=factor_dtype)
    with output.progress(f"influence fit ({strategy})", None):
        summary = run_fit(job, ["xaibench", *sys.argv[1:]])

    def human(console: Any) -> None:
        console.print(f"Fitted {summary['strategy']} factors ({summary['fisher']} Fisher) on "
                      f"{summary['samples']} examples in {summary['seconds']:.1f} s")
        console.print(f"  factors: {summary['factors']} ({summary['dtype']})")
        for name, (rows, cols) in summary["modules"].items():
            console.print(f"  {name:<20} gradient {rows} x {cols}")

    output.result(summary, human)


@influence_app.command("score", cls=PlainCommand)
def score(
    model: str = common.MODEL,
    factors: str = typer.Option(..., "--factors", "-f", metavar="PATH",
                                help="Directory written by influence fit."),
    query: str = typer.Option(None, "--query", "-q", metavar="NAME[:SPLIT]|PATH",
                              show_default="the model's dataset, test split", help="Query data."),
    n: int = typer.Option(8, "--n", "-n", min=1, metavar="N", help="Use the first N queries (at least 1)."),
    indices: str = common.INDICES,
    target: str = common.TARGET,
    train: str = TRAIN,
    train_n: int = TRAIN_N,
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, metavar="K",
                              help="Proponents and opponents per query (at least 1)."),
    measurement: str = MEASUREMENT,
    damping: str = DAMPING,
    rank: int = RANK,
    out: str = common.out_option("runs/influence-score-<model>-<time>"),
    fmt: str = common.format_option(),
    overwrite: bool = common.OVERWRITE,
    chunk_size: int = CHUNK,
    batch_size: int = BATCH,
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
    """Rank training examples by their influence on each query's prediction."""
    from xaibench.jobs.influence import ScoreJob
    from xaibench.jobs.influence import score as run_score

    output = Output(json_mode)
    options = _data_options(modality, input_shape, classes, mean, std, normalize, resize, center_crop)
    job = ScoreJob(
        source=common.model_source(model, trust_model, arch, arch_arg), factors=_path(factors),
        train=_train(train, train_n, options), measurement=measurement, top_k=top_k, out=_path(out),
        overwrite=overwrite, score=_score_config(damping, rank, batch_size, chunk_size),
        query=common.selection(data=query, n=None if indices else n, indices=indices, target=target,
                               **options),
        batch_size=batch_size, max_memory=max_memory, format=fmt, device=device)
    with output.progress("influence score", None):
        summary = run_score(job, ["xaibench", *sys.argv[1:]])
    output.result(summary, lambda console: _print_queries(console, summary))


@influence_app.command("self", cls=PlainCommand)
def self_influence(
    model: str = common.MODEL,
    train: str = TRAIN,
    train_n: int = TRAIN_N,
    factors: str = typer.Option(None, "--factors", "-f", metavar="PATH", show_default="fit --strategy "
                                "factors in memory", help="Directory written by influence fit."),
    strategy: str = STRATEGY,
    fisher: str = FISHER,
    modules: str = MODULES,
    top_k: int = typer.Option(24, "--top-k", "-k", min=1, metavar="K",
                              help="Examples listed and shown (at least 1)."),
    damping: str = DAMPING,
    out: str = common.out_option("runs/influence-self-<model>-<time>"),
    fmt: str = common.format_option(),
    overwrite: bool = common.OVERWRITE,
    chunk_size: int = CHUNK,
    seed: int = common.SEED,
    batch_size: int = BATCH,
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
    """Rank training examples by self-influence: likely mislabelled or atypical examples first."""
    from xaibench.jobs.influence import ScoreJob
    from xaibench.jobs.influence import score as run_score

    output = Output(json_mode)
    options = _data_options(modality, input_shape, classes, mean, std, normalize, resize, center_crop)
    job = ScoreJob(
        source=common.model_source(model, trust_model, arch, arch_arg), factors=_path(factors),
        train=_train(train, train_n, options), query=None, top_k=top_k, out=_path(out), overwrite=overwrite,
        score=_score_config(damping, None, batch_size, chunk_size),
        fit=_fit_config(strategy, fisher, modules, batch_size, chunk_size, seed),
        batch_size=batch_size, max_memory=max_memory, format=fmt, device=device)
    with output.progress("influence self", None):
        summary = run_score(job, ["xaibench", *sys.argv[1:]])

    def human(console: Any) -> None:
        console.print(f"Self-influence ({summary['strategy']}) of {summary['ranking'] and summary['samples']} "
                      "training examples, highest first (likely mislabelled or atypical):")
        for rank_, example in enumerate(summary["ranking"], 1):
            flag = "  label != prediction" if example["label"] != example["prediction"] else ""
            console.print(f"  {rank_:>3}. #{example['index']:<6} label {example['label']:<8} "
                          f"{_score(example['self_influence'], '.4g'):>12}{flag}")
        _print_files(console, summary)

    output.result(summary, human)


def _path(value: str | None) -> Any:
    from pathlib import Path

    return None if value is None else Path(value)


def _print_queries(console: Any, summary: dict[str, Any]) -> None:
    console.print(f"Influence ({summary['strategy']}, measurement {summary['measurement']}, damping "
                  f"{summary['damping']}); {summary['sign']}")
    for record in summary["queries"]:
        console.print(f"\nquery #{record['index']}  label {record['label']}  prediction {record['prediction']}")
        for kind in ("proponents", "opponents"):
            examples = ", ".join(f"#{e['index']} ({e['label']}) {_score(e['score'], '+.3g')}"
                                 for e in record[kind])
            console.print(f"  {kind:<10}  {examples}")
    _print_files(console, summary)


def _score(value: float | None, spec: str) -> str:
    """A score as ``spec`` formats it; an undefined one (null in JSON) as NaN."""
    return "NaN" if value is None else format(value, spec)


def _print_files(console: Any, summary: dict[str, Any]) -> None:
    console.print(f"\n  run directory: {summary['run_dir']}")
    if summary.get("montage"):
        console.print(f"  montage:       {summary['montage']}")
