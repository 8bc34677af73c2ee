"""Listing commands (``xaibench methods``, ``metrics``, ``datasets``); they never import torch."""

from __future__ import annotations

import typer
from xaibench.cli import common
from xaibench.cli.output import Output
from xaibench.cli.plain_help import PlainCommand


def register(app: typer.Typer) -> None:
    app.command("methods", cls=PlainCommand)(methods)
    app.command("datasets", cls=PlainCommand)(datasets)
    app.command("metrics", cls=PlainCommand)(metrics)


def methods(
    pattern: str = typer.Argument("*", metavar="PATTERN", help="Glob(s), comma-separated, e.g. '*gradient*'."),
    modality: str = typer.Option(None, "--modality", metavar="image|tabular|sequence",
                            help="Only methods for this modality."),
    json_mode: bool = common.JSON,
) -> None:
    """List attribution methods: modalities, what each computes (with its paper) and its parameters."""
    from xaibench.attribution import METHODS, describe_params

    common.parse_modality(modality)
    rows = []
    for name in METHODS.list(pattern):
        cls = METHODS.get(name)
        if modality and modality not in cls.modalities:
            continue
        rows.append({
            "name": name, "category": cls.category, "modalities": list(cls.modalities),
            "signed": cls.signed, "needs_gradients": cls.needs_gradients, "stochastic": cls.stochastic,
            "params": describe_params(cls.Params), "description": cls.description,
        })
    shown = [{**row, "about": row["description"] + (f"\n  {_cell(row['params'])}" if row["params"] else "")}
             for row in rows]  # the paper, then the parameters with their defaults
    Output(json_mode).result(rows, lambda console: _table(console, shown, ["name", "category", "modalities",
                                                                           "about"]))


def metrics(
    pattern: str = typer.Argument("*", metavar="PATTERN", help="Glob(s), comma-separated, e.g. '*sensitivity*'."),
    category: str = typer.Option(None, "--category", metavar="NAME", help="Only metrics of this category."),
    json_mode: bool = common.JSON,
) -> None:
    """List evaluation metrics with their category, score direction and description.

    --json adds requirements and parameters.
    """
    from xaibench.metrics import CATEGORIES, METRICS

    from xaibench.attribution import describe_params
    from xaibench.core.errors import UnknownNameError

    if category is not None and category not in CATEGORIES:
        raise UnknownNameError.for_name("metric category", category, list(CATEGORIES))
    rows = []
    for name in METRICS.list(pattern):
        cls = METRICS.get(name)
        if category and cls.category != category:
            continue
        needs = [what for what, flag in (("model", cls.needs_model), ("explainer", cls.needs_explainer),
                                         ("masks", cls.needs_masks), ("reference", cls.needs_reference))
                 if flag]
        rows.append({
            "name": name, "category": cls.category,
            "direction": "higher is better" if cls.higher_is_better else "lower is better",
            "higher_is_better": cls.higher_is_better, "needs": needs, "modalities": list(cls.modalities),
            "stochastic": cls.stochastic, "curve": cls.curve_label, "params": describe_params(cls.Params),
            "description": cls.description,
        })
    rows.sort(key=lambda row: (CATEGORIES.index(row["category"]), row["name"]))
    Output(json_mode).result(rows, lambda console: _table(console, rows, ["name", "category", "direction",
                                                                          "description"]))


def datasets(json_mode: bool = common.JSON) -> None:
    """List the built-in datasets (all generated or shipped offline)."""
    from xaibench.data import DATASETS

    rows = [{"name": name, "modality": entry.modality, "splits": list(entry.splits),
             "description": entry.description} for name, entry in DATASETS.items()]
    Output(json_mode).result(rows, lambda console: _table(console, rows, ["name", "modality",
                                                                          "splits", "description"]))


def _table(console: object, rows: list[dict], columns: list[str]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i < len(columns) - 1)
    for row in rows:
        table.add_row(*[_cell(row[c]) for c in columns])
    console.print(table)


def _cell(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
