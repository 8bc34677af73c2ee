"""``xaibench explain``: attributions and heatmaps for selected samples, written as a run directory."""

from __future__ import annotations

import sys

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("explain", cls=PlainCommand)(explain)


def explain(
    model: str = common.MODEL,
    method: str = typer.Option("integrated_gradients", "--method", "-m", metavar="NAME",
                              help="Attribution method (xaibench methods lists them)."),
    data: str = common.data_option("test"),
    n: int = common.n_option("16, or the samples of --indices"),
    indices: str = common.INDICES,
    target: str = common.TARGET,
    param: list[str] = common.PARAM,
    layer: str = typer.Option(None, "--layer", metavar="NAME", show_default="CAMs: the last learned map before the head",
                              help="Layer for layer methods (the CAMs, bee's layer variant), e.g. conv3; "
                                   "xaibench inspect lists them. Else a text model's embedding layer."),
    text: list[str] = common.TEXT,
    tokenizer: str = common.TOKENIZER,
    out: str = common.out_option("runs/explain-<model>-<method>-<time>"),
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
    input_shape: str = common.INPUT_SHAPE,
    classes: str = common.CLASSES,
    mean: str = common.MEAN,
    std: str = common.STD,
    normalize: str = common.NORMALIZE,
    resize: str = common.RESIZE,
    center_crop: str = common.CENTER_CROP,
) -> None:
    """Explain a model's predictions: attributions, heatmaps and a run directory."""
    from xaibench.jobs.explain import ExplainConfig
    from xaibench.jobs.explain import explain as run_explain

    output = Output(json_mode)
    params = common.parse_params(param)
    embedding_layer = None
    if layer is not None and common.method_takes_layer(method):
        params["layer"] = layer
    else:
        embedding_layer = layer
    config = ExplainConfig(
        source=common.model_source(model, trust_model, arch, arch_arg, embedding_layer, tokenizer), method=method,
        params=params,
        out=out, overwrite=overwrite, seed=seed, batch_size=batch_size, max_memory=max_memory,
        device=device, dtype=dtype, scale=scale, format=fmt,
        selection=common.selection(data=data, texts=text, n=n, indices=indices, target=target, modality=modality,
                                   input_shape=input_shape, classes=classes, mean=mean, std=std,
                                   normalize=normalize, resize=resize, center_crop=center_crop),
    )
    result = run_explain(config, ["xaibench", *sys.argv[1:]],
                         on_progress=lambda total: output.progress(f"{method}", total))
    summary = {
        "run_dir": str(result.run_dir),
        "heatmaps": str(result.run_dir / "heatmaps"),
        "grid": str(result.run_dir / "heatmaps" / f"grid.{fmt}"),
        "method": method,
        "samples": result.samples,
        "seconds": round(result.seconds, 3),
    }
    if result.tokens is not None:  # text: a page of all texts instead of a grid
        del summary["grid"]
        summary["tokens_html"] = str(result.run_dir / "heatmaps" / "tokens.html")
        summary["tokens"] = result.tokens

    def human(console: object) -> None:
        from rich.text import Text

        console.print(Text.assemble(f"Explained {result.samples} samples with ", (method, "bold"),
                                    f" in {result.seconds:.1f} s"))
        console.print(f"  run directory: {summary['run_dir']}")
        console.print(f"  heatmaps:      {summary['heatmaps']}  ({len(result.heatmaps)} files)")
        if result.tokens is not None:
            print_tokens(console, result.tokens)
            console.print(f"  tokens page:   {summary['tokens_html']}")
        else:
            console.print(f"  overview:      {summary['grid']}")

    output.result(summary, human)


SHOWN_TEXTS = 8  # texts whose token scores are printed; the run directory has them all


def print_tokens(console: object, table: list[dict]) -> None:
    """Each text's tokens with their scores, the strongest bold, as ``token(+0.12)``."""
    from rich.text import Text

    from xaibench.core.text import printable

    for row in table[:SHOWN_TEXTS]:
        strongest = max(abs(v) for v in row["scores"]) or 1.0
        line = Text(f"  #{row['index']} pred {row['prediction']}, target {row['target']}: ")
        for token, score in zip(row["tokens"], row["scores"], strict=True):
            style = ("bold red" if score > 0 else "bold blue") if abs(score) >= 0.5 * strongest else ""
            line.append(f"{printable(token)}({score:+.3g}) ", style=style)
        console.print(line)
    if len(table) > SHOWN_TEXTS:
        console.print(f"  ... and {len(table) - SHOWN_TEXTS} more texts in the run directory")
