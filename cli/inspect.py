"""``xaibench inspect MODEL``: format, metadata, layers with output shapes, parameter count."""

from __future__ import annotations

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("inspect", cls=PlainCommand)(inspect)


def inspect(
    model: str = common.MODEL,
    trust_model: bool = common.TRUST,
    arch: str = common.ARCH,
    arch_arg: list[str] = common.ARCH_ARG,
    input_shape: str = common.INPUT_SHAPE,
    device: str = common.DEVICE,
    json_mode: bool = common.JSON,
) -> None:
    """Show what a model file holds: format, metadata, layers and parameter count."""
    from xaibench.core.devices import resolve_device
    from xaibench.models import load_model, summarize

    loaded = load_model(model, trust_model=trust_model, arch=arch,
                        arch_kwargs=common.parse_arch_args(arch_arg), device=resolve_device(device))
    summary = summarize(loaded, common.parse_shape(input_shape))
    summary = {"path": loaded.path, "sha256": loaded.sha256, **summary}
    Output(json_mode).result(summary, lambda console: _print(console, summary))


def _print(console: object, summary: dict) -> None:
    """The summary for a person (the console prints no markup: a class named "[/]" shows as it is)."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text.assemble((str(summary["path"]), "bold"), f"  format: {summary['format']}  "
                                f"parameters: {summary['parameters']:,}"))
    meta = {k: v for k, v in summary["meta"].items() if v is not None}
    for key, value in meta.items():
        shown = value if not isinstance(value, list) or len(value) <= 12 else [*value[:12], "..."]
        console.print(f"  {key}: {shown}")
    table = Table("layer", "type", "output shape", "params", box=None, pad_edge=False)
    for layer in summary["layers"]:
        shape = "?" if layer["output_shape"] is None else str(tuple(layer["output_shape"]))
        table.add_row(Text(layer["name"]), Text(layer["type"]), shape, f"{layer['params']:,}")
    console.print(table)
