"""``--help`` of every command speaks plain words: no Python type names, plain metavars, every default
shown (each command's own), and the facts it states match what the jobs do."""

from __future__ import annotations

import re

import pytest
import typer.main
from xaibench.cli.app import app

from tests.cli.conftest import run_main

WIDE = {"COLUMNS": "250"}  # one table row per option, so that an option's line holds its whole help

#: what typer prints for Python types and click ranges when a parameter has no plain metavar
TYPE_LEAKS = re.compile(r"<(bool|str|int|float|path|list|tuple|text|integer)\b|list\[|\brange\b|\[x[<>]=|<=x")

#: value options that have no default: leaving them out selects nothing or changes nothing
NO_DEFAULT = {"--indices", "--param", "--arch", "--arch-arg", "--reference", "--attributions", "--transcript",
              "--base-url", "--llm", "--modality", "--input-shape", "--classes", "--category", "--text",
              "--tokenizer"}


def _commands() -> list[tuple[tuple[str, ...], object]]:
    """Every command and group below the app, as (words after ``xaibench``, click command)."""
    found: list[tuple[tuple[str, ...], object]] = []

    def walk(path: tuple[str, ...], command: object) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk((*path, name), sub)

    walk((), typer.main.get_command(app))
    return found


COMMANDS = _commands()
IDS = [" ".join(path) or "xaibench" for path, _ in COMMANDS]


def _help(*path: str) -> str:
    result = run_main(*path, "--help", env=WIDE)
    assert result.code == 0, result.stderr
    return result.stdout


def _row(text: str, option: str) -> str:
    """The help line of ``option`` (its long name first in the row), whitespace collapsed."""
    rows = [line for line in text.splitlines() if re.match(rf"^│\s*\*?\s*{re.escape(option)}\s", line)]
    assert len(rows) == 1, f"{option}: {rows}"
    return " ".join(rows[0].split())


def _value_options(command: object) -> list[object]:
    return [p for p in command.params if p.param_type_name == "option" and not p.is_flag]


def test_walk_reaches_the_subcommands():
    assert {"explain", "evaluate", "bee pretrain", "bee report", "influence fit", "influence self"} <= set(IDS)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_names_no_python_type(path, command):
    text = _help(*path)
    assert not TYPE_LEAKS.findall(text), TYPE_LEAKS.findall(text)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_value_options_show_a_plain_metavar(path, command):
    text = _help(*path)
    for param in _value_options(command):
        assert param.metavar and re.fullmatch(r"[A-Za-z][A-Za-z0-9_=.,:|\[\]-]*", param.metavar), param.opts
        assert f" {param.metavar} " in _row(text, param.opts[0]), param.opts


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_options_show_their_defaults(path, command):
    text = _help(*path)
    for param in _value_options(command):
        row = _row(text, param.opts[0])
        if param.required:
            assert "[required]" in row and "[default:" not in row, row
        elif param.opts[0] in NO_DEFAULT:
            assert "[default:" not in row, row
        elif param.default is not None:
            assert f"[default: {param.default}]" in row, row
        else:  # computed by the job: said in words, without typer's "(...)" around it
            assert re.search(r"\[default: [^(\]]", row), row


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_flags_show_no_metavar_or_default(path, command):
    text = _help(*path)
    for param in command.params:
        if param.param_type_name == "option" and param.is_flag:
            row = _row(text, param.opts[0])
            assert "[default:" not in row and "<" not in row, row


def test_model_help_lists_every_format():
    from xaibench.models.formats import MODEL_FORMATS

    words = {"checkpoint": "xaibench checkpoint", "state_dict": "state_dict", "safetensors": "safetensors",
             "torchscript": "TorchScript", "export": ".pt2", "pickle": "pickled nn.Module"}
    assert set(words) == set(MODEL_FORMATS.list("*"))
    row = _row(_help("explain"), "MODEL")
    for word in words.values():
        assert word in row, (word, row)
    assert "--arch" in row and "--trust-model" in row


@pytest.mark.parametrize(("path", "constant"), [
    (("explain",), "xaibench.jobs.explain:DEFAULT_SAMPLES"),
    (("evaluate",), "xaibench.jobs.evaluate:DEFAULT_SAMPLES"),
    (("bee", "pretrain"), "xaibench.jobs.bee:DEFAULT_SAMPLES"),
    (("bee", "report"), "xaibench.jobs.bee:DEFAULT_SAMPLES"),
    (("concepts",), "xaibench.jobs.concepts:DEFAULT_IMAGES"),
])
def test_n_shows_the_commands_own_default(path, constant):
    import importlib

    module, name = constant.split(":")
    value = getattr(importlib.import_module(module), name)
    assert f"[default: {value}" in _row(_help(*path), "--n"), (path, value)


@pytest.mark.parametrize(("path", "split"), [
    (("explain",), "test"), (("evaluate",), "test"), (("bee", "pretrain"), "train"),
    (("bee", "report"), "test"), (("concepts",), "train"), (("llm-explain",), "test"),
])
def test_data_names_the_split_it_defaults_to(path, split):
    row = _row(_help(*path), "--data")
    assert f"{split} split" in row and f"{'train' if split == 'test' else 'test'} split" not in row, row


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_command_with_a_batch_size_takes_a_memory_budget(path, command):
    options = {p.opts[0] for p in command.params}
    assert ("--batch-size" in options) == ("--max-memory" in options), path
    if "--batch-size" in options:
        text = _help(*path)
        assert "[default: what --max-memory allows]" in _row(text, "--batch-size")
        assert "[default: $XAIBENCH_MAX_MEMORY, else a share of free memory]" in _row(text, "--max-memory")


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_command_that_loads_a_model_takes_a_device(path, command):
    options = {p.opts[0] for p in command.params}
    loads_a_model = any(p.param_type_name == "argument" and p.name == "model" for p in command.params)
    loads_a_model |= " ".join(path) == "benchmark"  # the models a suite names
    assert ("--device" in options) == loads_a_model, path
    if "--dtype" in options:
        assert "--device" in options and " ".join(path) in ("explain", "evaluate", "bee pretrain"), path
    if loads_a_model:
        assert "[default: auto]" in _row(_help(*path), "--device")


def test_metrics_help_promises_only_the_columns_it_prints():
    text = " ".join(_help("metrics").split())
    assert "--json adds requirements and parameters" in text, text
    header = run_main("metrics", env=WIDE).stdout.split()[:4]
    assert header == ["name", "category", "direction", "description"], header


FIGURE_COMMANDS = {"explain", "evaluate", "heatmap", "concepts", "bee report", "influence score",
                   "influence self", "llm-explain"}


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_command_that_draws_figures_takes_a_format(path, command):
    options = {p.opts[0] for p in command.params}
    assert ("--format" in options) == (" ".join(path) in FIGURE_COMMANDS), path
    if "--format" in options:
        assert "[default: " in _row(_help(*path), "--format")
