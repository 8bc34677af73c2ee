"""The documentation runs as shown (README.md and docs/*.md).

- Every command shown in a ``console`` block (docs/refresh.py describes the convention) that calls
  xaibench parses: a known command and subcommand, known flags and valid values, checked by click's own
  parser on the typer app without invoking anything; the names given to --method, --methods, --metrics,
  --reference, --metric, --importance, --strategy and -p are known to the registries.
- Every ``python`` block runs (sybil), in page order, from a scratch folder where sample_models/ and
  docs/ are the repository's; the values after ``>>>`` are checked as doctests.

docs/refresh.py runs the commands for real and writes their output into the pages.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from xaibench.cli.app import app

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def _load_refresh() -> Any:
    spec = importlib.util.spec_from_file_location("xaibench_docs_refresh", REPO / "docs" / "refresh.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


refresh = _load_refresh()


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


# ---------------------------------------------------------------------------------------------
# commands


def xaibench_calls(command: str) -> list[list[str]]:
    """The argument lists given to xaibench in a shell command line: ``xaibench ARGS``, ``torchrun ...
    -m xaibench ARGS`` or ``python -m xaibench ARGS``, after any ``VAR=value`` prefix, in every part of
    a ``&&`` / ``|`` / ``;`` chain."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token in SHELL_OPERATORS:
            parts.append([])
        else:
            parts[-1].append(token)
    calls = []
    for words in parts:
        while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
            words = words[1:]
        if not words:
            continue
        program = Path(words[0]).name
        if program == "xaibench":
            calls.append(words[1:])
        elif program == "torchrun" or program.startswith("python"):
            for i in range(1, len(words) - 1):
                if words[i] == "-m" and words[i + 1] == "xaibench":
                    calls.append(words[i + 2:])
                    break
    return calls


def parse(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``args`` with click exactly as ``xaibench`` would, without running anything: the command's
    path ("bee pretrain") and its parameter values. Raises click's UsageError (or BadParameter) for an
    unknown command, an unknown flag, a missing argument or a value of the wrong type."""
    root = typer.main.get_command(app)
    context = root.context_class(root, info_name="xaibench")
    command, name, rest, path = root, "xaibench", list(args), []
    while hasattr(command, "resolve_command"):  # a group: the next word names its command
        if not rest:
            raise ValueError(f"'{' '.join(['xaibench', *path])}' needs a command")
        name, command, rest = command.resolve_command(context, rest)
        path.append(name)
        if hasattr(command, "resolve_command"):
            context = command.context_class(command, info_name=name, parent=context)
    leaf = command.make_context(name, rest, parent=context)
    return " ".join(path), leaf.params


def check_names(path: str, params: dict[str, Any]) -> None:
    """Raise for a name the registries do not know (UnknownNameError says which, with a suggestion)."""
    from xaibench.metrics import CATEGORIES, METRICS

    from xaibench.attribution import METHODS, parse_params
    from xaibench.concepts import DECOMPOSITIONS, IMPORTANCES
    from xaibench.influence import STRATEGIES

    def method_params(method: str, items: list[str]) -> None:
        raw = dict(item.split("=", 1) for item in items)
        parse_params(METHODS.get(method).Params, raw, owner=f"method {method!r}")

    pairs = params.get("param") or []
    if any("=" not in item for item in pairs):
        raise ValueError(f"-p takes name=value, got {pairs}")
    if path == "explain":
        method_params(params["method"], pairs)
    elif path == "llm-explain":
        method_params("llm", pairs)
    elif path == "bee pretrain":
        METRICS.get(params["metric"])
        method_params("bee", pairs)
    elif path == "evaluate":
        methods = [m.strip() for m in (params["methods"] or "").split(",") if m.strip()]
        reference = params["reference"] if params["reference"] != "ground_truth" else None  # the data's own
        for method in [*methods, *([reference] if reference else [])]:
            METHODS.get(method)
        for item in params["metrics"].split(","):
            _check_metric_item(item.strip(), METRICS, CATEGORIES)
        for item in pairs:
            key, value = item.split("=", 1)
            owner, _, name = key.partition(".")
            registry = METHODS if owner in METHODS else METRICS
            parse_params(registry.get(owner).Params, {name: value}, owner=f"{registry.kind} {owner!r}")
    elif path == "concepts":
        DECOMPOSITIONS.get(params["method"])
        IMPORTANCES.get(params["importance"])
    elif path in ("influence fit", "influence self") and params["strategy"] not in STRATEGIES:
        raise ValueError(f"unknown influence strategy {params['strategy']!r}")
    elif path == "metrics" and params["category"] is not None and params["category"] not in CATEGORIES:
        raise ValueError(f"unknown metric category {params['category']!r}")
    elif path == "methods" and params["pattern"] != "*" and not METHODS.list(params["pattern"]):
        raise ValueError(f"no method matches {params['pattern']!r}")


def _check_metric_item(item: str, metrics: Any, categories: tuple[str, ...]) -> None:
    """An item of --metrics as evaluate resolves it: all, a metric, a category or a glob."""
    if item == "all" or item in metrics or item.removeprefix("category:") in categories:
        return
    if any(ch in item for ch in "*?[") and metrics.list(item):
        return
    metrics.get(item)  # raises UnknownNameError with a suggestion


def command_problems(page: Path) -> list[str]:
    """Every shown xaibench command of a page that does not parse, as "page:line: command: why"
    (commands shown failing, with an ``error:`` line as their output, are meant not to)."""
    text = page.read_text(encoding="utf-8")
    lines = text.split("\n")
    problems = []
    for block in refresh.console_blocks(text):
        for command in block.commands:
            if command.shown_failing:  # shown failing on purpose; docs/refresh.py checks that it fails
                continue
            line = lines.index(command.lines[0], block.start) + 1
            for args in xaibench_calls(command.text):
                try:
                    check_names(*parse(args))
                except Exception as err:  # click's UsageError, UnknownNameError, InputError, ValueError
                    message = err.format_message() if hasattr(err, "format_message") else str(err)
                    problems.append(f"{page.name}:{line}: $ {command.text}: {message}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_shown_commands_parse(page: Path) -> None:
    assert command_problems(page) == []


def test_pages_show_commands() -> None:
    """The parser finds the commands (a convention that matched nothing would pass every page)."""
    found = {page.name: [c for b in refresh.console_blocks(page.read_text(encoding="utf-8"))
                         for c in b.commands] for page in PAGES}
    assert all(found[name] for name in ("README.md", "explain-and-methods.md", "evaluate-and-metrics.md",
                                        "bee.md", "influence.md", "concepts.md", "llm.md", "distributed.md",
                                        "models-and-data.md", "runs-and-safety.md"))
    calls = [args for commands in found.values() for c in commands for args in xaibench_calls(c.text)]
    assert len(calls) > 40


BAD_COMMANDS = [
    ("xaibench explain sample_models/digits_cnn.pt --methd saliency", "No such option"),
    ("xaibench explain sample_models/digits_cnn.pt -m integrated_gradient", "did you mean"),
    ("xaibench explian sample_models/digits_cnn.pt", "No such command"),
    ("xaibench bee pretrian sample_models/digits_cnn.pt", "No such command"),
    ("xaibench explain sample_models/digits_cnn.pt -m saliency -p n_steps=8", "n_steps"),
    ("xaibench explain sample_models/digits_cnn.pt -m integrated_gradients -p n_steps=many", "expects int"),
    ("xaibench explain sample_models/digits_cnn.pt -n 0", "'-n'"),
    ("xaibench evaluate MODEL --methods saliency,bogus --metrics deletion", "bogus"),
    ("xaibench evaluate MODEL --methods saliency --metrics faithfulness,delection", "delection"),
    ("xaibench evaluate MODEL --methods saliency --metrics '*_nothing'", "_nothing"),
    ("xaibench evaluate MODEL --methods saliency --reference ig", "'ig'"),
    ("xaibench evaluate MODEL --methods saliency -p deletion.substrat=blur", "substrat"),
    ("xaibench bee pretrain MODEL --metric delete", "delete"),
    ("xaibench concepts MODEL --class circle --method nfm", "nfm"),
    ("xaibench influence fit MODEL --strategy ekfca", "ekfca"),
    ("torchrun --standalone --nproc-per-node 2 -m xaibench explain MODEL --bogus", "No such option"),
    ("OPENAI_API_KEY=x xaibench llm-explain MODEL -p nmaes=real", "nmaes"),
    ("xaibench heatmap", "Missing argument"),
]


@pytest.mark.parametrize(("command", "why"), BAD_COMMANDS, ids=[c for c, _ in BAD_COMMANDS])
def test_a_bad_command_in_a_page_is_reported(tmp_path: Path, command: str, why: str) -> None:
    """A copy of a real page with one bad command added fails, naming the command and what is wrong."""
    page = tmp_path / "explain-and-methods.md"
    original = (REPO / "docs" / "explain-and-methods.md").read_text(encoding="utf-8")
    page.write_text(f"{original}\n```console\n$ {command}\n```\n", encoding="utf-8")
    problems = command_problems(page)
    assert len(problems) == 1
    assert command in problems[0] and why in problems[0]


def test_norun_blocks_are_checked_too(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```console norun\n$ xaibench explain MODEL --method nope\n```\n", encoding="utf-8")
    assert len(command_problems(page)) == 1


# ---------------------------------------------------------------------------------------------
# links and size

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", _prose(page.read_text(encoding="utf-8")), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def _prose(text: str) -> str:
    """A page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_links_lead_somewhere(page: Path) -> None:
    """Every relative link and image of a page names a file that exists (and a heading that exists)."""
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and anchor not in _anchors(linked)):
            broken.append(target)
    assert broken == []


def test_readme_is_a_landing_page() -> None:
    assert len((REPO / "README.md").read_text(encoding="utf-8")) <= 10_000


# ---------------------------------------------------------------------------------------------
# Python snippets


def _python_pages() -> list[Path]:
    return [page for page in PAGES if "```python" in page.read_text(encoding="utf-8")]


@pytest.mark.parametrize("page", _python_pages(), ids=_page_id)
def test_python_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser

    for linked in ("sample_models", "docs"):
        (tmp_path / linked).symlink_to(REPO / linked, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    document = Sybil(parsers=[PythonCodeBlockParser()]).parse(page)
    examples = list(document)
    assert examples
    for example in examples:
        example.evaluate()
