"""Runs that were edited or forged, and careless --out folders, never cost a user a file (issue 14).

The runs are made through the installed entry point; the many tampered cases run ``main`` in this
process (``run_main``), the same code without an interpreter start each.

Each test starts from a real run written by the installed entry point, tampers with one thing, and
checks the contract: exit 2 with one line on stderr, nothing written outside the named output, the run
itself unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import SAMPLES, run_cli, run_main

DIGITS = str(SAMPLES / "digits_cnn.pt")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """One explain run and one evaluate run, made once (in this process); tests tamper with copies."""
    root = tmp_path_factory.mktemp("made")
    explain = run_main("explain", DIGITS, "--method", "saliency", "--n", "3", "--out", str(root / "explain"))
    assert explain.code == 0, explain.stderr
    evaluate = run_main("evaluate", DIGITS, "--methods", "saliency,random", "--metrics", "deletion,sparseness",
                       "--n", "3", "--out", str(root / "evaluate"))
    assert evaluate.code == 0, evaluate.stderr
    return {"explain": root / "explain", "evaluate": root / "evaluate"}


def _copy(made: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(made[kind], tmp_path / "work" / kind))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256), to prove nothing changed."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused(result, *fragments: str) -> str:
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --- 1. names read from a run become paths only after validation ------------------------------------------

@pytest.mark.parametrize("stem", ["../../../escaped", "/abs/victim", "a/b", "..", ".hidden", ""])
def test_heatmap_stems_from_run_json_never_leave_the_run(made, tmp_path, stem):
    run = _copy(made, "explain", tmp_path)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"mine")
    _edit_json(run / "run.json", lambda d: d["heatmaps"]["stems"].__setitem__(0, stem.replace(
        "/abs/victim", str(tmp_path / "victim"))))
    before = snapshot(tmp_path)
    refused(run_main("heatmap", str(run), "--style", "heatmap"), "run.json", "stem")
    assert snapshot(tmp_path) == before  # the run's heatmaps intact, nothing written outside


def test_report_does_not_embed_files_named_by_a_forged_method(made, tmp_path):
    run = _copy(made, "evaluate", tmp_path)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "private.png").write_bytes((run / "heatmaps" / "saliency" / "grid.png").read_bytes())
    _edit_json(run / "metrics.json", lambda d: d["methods"].__setitem__(0, str(outside)))
    before = snapshot(tmp_path)
    refused(run_main("report", str(run)), "metrics.json", "not a plain name")
    assert snapshot(tmp_path) == before


def test_report_ignores_a_heatmap_folder_that_links_out_of_the_run(made, tmp_path):
    run = _copy(made, "evaluate", tmp_path)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "private.png").write_bytes(b"\x89PNG private")
    shutil.rmtree(run / "heatmaps" / "random")
    (run / "heatmaps" / "random").symlink_to(outside, target_is_directory=True)
    assert run_main("report", str(run)).code == 0
    assert "private" not in (run / "report.html").read_text()
    assert "private" not in (run / "report.md").read_text()


# --- 2, 3. --overwrite replaces only what xaibench provably wrote ----------------------------------------

def _foreign_folder_with_marker(tmp_path: Path, marker: str) -> Path:
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / marker).write_text('{"command": "explain"}')
    (folder / "thesis.tex").write_text("three years of work")
    return folder


@pytest.mark.parametrize("marker", ["run.json", "xaibench-manifest.json"])
def test_explain_overwrite_keeps_a_folder_with_a_users_file(tmp_path, marker):
    folder = _foreign_folder_with_marker(tmp_path, marker)
    before = snapshot(folder)
    refused(run_main("explain", DIGITS, "--method", "saliency", "--n", "2", "--out", str(folder), "--overwrite"),
            "not written by xaibench")
    assert snapshot(folder) == before


def test_influence_fit_overwrite_keeps_a_folder_with_a_users_file(tmp_path):
    folder = _foreign_folder_with_marker(tmp_path, "factors.json")
    before = snapshot(folder)
    refused(run_main("influence", "fit", DIGITS, "--train-n", "8", "--out", str(folder), "--overwrite"),
            "not written by xaibench")
    assert snapshot(folder) == before


def test_heatmap_out_overwrite_keeps_a_folder_with_a_users_file(made, tmp_path):
    folder = _foreign_folder_with_marker(tmp_path, "grid.png")
    before = snapshot(folder)
    refused(run_main("heatmap", str(made["explain"]), "--out", str(folder), "--overwrite"), "not written by xaibench")
    assert snapshot(folder) == before


def test_overwrite_refuses_a_run_with_an_added_or_edited_file(made, tmp_path):
    run = _copy(made, "explain", tmp_path)
    (run / "notes.txt").write_text("my notes")
    refused(run_main("explain", DIGITS, "--method", "saliency", "--n", "2", "--out", str(run), "--overwrite"),
            "notes.txt was not written by xaibench")
    (run / "notes.txt").unlink()
    (run / "heatmaps" / "grid.png").write_bytes(b"edited")
    refused(run_main("explain", DIGITS, "--method", "saliency", "--n", "2", "--out", str(run), "--overwrite"),
            "grid.png changed since xaibench wrote it")


def test_overwrite_replaces_xaibench_runs_including_after_a_heatmap_reexport(made, tmp_path):
    run = _copy(made, "explain", tmp_path)
    assert run_main("heatmap", str(run), "--style", "masked").code == 0  # rewrites heatmaps/ and run.json
    result = run_main("explain", DIGITS, "--method", "saliency", "--n", "2", "--out", str(run), "--overwrite")
    assert result.code == 0, result.stderr
    assert json.loads((run / "run.json").read_text())["data"]["samples"] == 2
    evaluate = _copy(made, "evaluate", tmp_path)
    assert run_main("report", str(evaluate)).code == 0  # rewrites the reports
    result = run_main("evaluate", DIGITS, "--methods", "saliency", "--metrics", "sparseness", "--n", "2",
                     "--out", str(evaluate), "--overwrite")
    assert result.code == 0, result.stderr


def test_bee_report_never_replaces_a_file_it_did_not_write(made, tmp_path, cli_in_process):
    policy = tmp_path / "policy.safetensors"
    trained = cli_in_process("bee", "pretrain", DIGITS, "--n", "4", "-p", "rounds=1", "-p", "n_steps=4", "-p", "arms=zero,blur",
                  "--out", str(policy))
    assert trained.code == 0, trained.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    refused(cli_in_process("bee", "report", DIGITS, str(policy), "--n", "4", "--out", str(notes)), "--overwrite")
    refused(cli_in_process("bee", "report", DIGITS, str(policy), "--n", "4", "--out", str(notes), "--overwrite"),
            "not a chart written by xaibench")
    assert notes.read_text() == "mine"
    (tmp_path / "bee_arms.png").write_bytes(b"someone else's chart")
    refused(cli_in_process("bee", "report", DIGITS, str(policy), "--n", "4"), "bee_arms.png", "--overwrite")
    assert (tmp_path / "bee_arms.png").read_bytes() == b"someone else's chart"
    chart = tmp_path / "chart.png"
    assert cli_in_process("bee", "report", DIGITS, str(policy), "--n", "4", "--out", str(chart)).code == 0
    assert cli_in_process("bee", "report", DIGITS, str(policy), "--n", "4", "--out", str(chart), "--overwrite").code == 0


# --- 6. malformed run.json / metrics.json: exit 2, one line, nothing changed ------------------------------

@pytest.mark.parametrize("text", ["not json", "[1, 2]", "null", '{"heatmaps": null}',
                                  '{"command": "explain", "heatmaps": {"modality": null}}'])
def test_heatmap_refuses_a_malformed_run_json(made, tmp_path, text):
    run = _copy(made, "explain", tmp_path)
    (run / "run.json").write_text(text)
    before = snapshot(tmp_path)
    refused(run_main("heatmap", str(run)), "run.json")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda h: h["style"].update(scale="everything"), "heatmaps.style"),
    (lambda h: h["style"].update(format="exe"), "heatmaps.style"),
    (lambda h: h["style"].update(format=["svg"]), "heatmaps.style.format"),
    (lambda h: h["style"].update(payload=1), "heatmaps.style.payload"),
    (lambda h: h.update(style="overlay"), "heatmaps.style"),
    (lambda h: h.update(misclassified=[1, 0, 0]), "heatmaps.misclassified"),
    (lambda h: h.update(misclassified=[True]), "heatmaps.misclassified"),
    (lambda h: h.update(value_label={"a": 1}), "heatmaps.value_label"),
])
def test_heatmap_refuses_a_forged_style_or_sample_flags(made, tmp_path, change, fragment):
    run = _copy(made, "explain", tmp_path)
    _edit_json(run / "run.json", lambda d: change(d["heatmaps"]))
    before = snapshot(tmp_path)
    refused(run_main("heatmap", str(run)), "run.json", fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("change", [
    lambda d: d.__setitem__("methods", "saliency"),
    lambda d: d.__setitem__("title", None),
    lambda d: d["metrics"]["deletion"].__setitem__("higher_is_better", "yes"),
    lambda d: d["results"]["saliency"]["deletion"].__setitem__("mean", "high"),
    lambda d: d["results"]["saliency"]["deletion"]["curve"].__setitem__("mean", [1.0]),
    lambda d: d.__setitem__("ranking", [{"method": "saliency", "mean_rank": 1, "ranks": None}]),
    lambda d: d.__setitem__("skipped", [{"method": 1}]),
])
def test_report_refuses_a_malformed_metrics_json(made, tmp_path, change):
    run = _copy(made, "evaluate", tmp_path)
    _edit_json(run / "metrics.json", change)
    before = snapshot(tmp_path)
    refused(run_main("report", str(run)), "metrics.json")
    assert snapshot(tmp_path) == before


# --- 11. report.md escapes what metrics.json says -----------------------------------------------------------

def test_report_markdown_escapes_names_from_metrics_json(made, tmp_path):
    run = _copy(made, "evaluate", tmp_path)

    def forge(data):
        data["title"] = "<script>alert(1)</script>\n<img src=x onerror=alert(2)>"
        data["metrics"]["deletion"]["category"] = "<b>faithfulness</b>"
        data["skipped"] = [{"method": "a`b", "metric": "[x](http://evil)", "reason": "<script>"}]
        data["model"]["path"] = "x` <script>"
    _edit_json(run / "metrics.json", forge)
    assert run_main("report", str(run)).code == 0
    markdown = (run / "report.md").read_text()
    lines = markdown.splitlines()
    assert lines[0] == "# &lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(2)&gt;"
    assert "## &lt;b&gt;faithfulness&lt;/b&gt;" in lines
    assert "- `` a`b `` × `[x](http://evil)`: &lt;script&gt;" in lines  # code spans are literal text
    assert "- model: `` x` <script> `` (sha256" in markdown  # a fence longer than the backticks inside
    outside_code = re.sub(r"(`+)[^`].*?\1", "", markdown)
    assert "<" not in outside_code and "](http" not in outside_code
    assert "<script>" not in (run / "report.html").read_text()


# --- 8, 10. usage errors and interrupts are one line ----------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["explain", DIGITS, "--n", "0"], "--n"),
    (["explain", DIGITS, "--no-such-option"], "--no-such-option"),
    (["explain"], "MODEL"),
    (["evaluate", DIGITS, "--methods"], "--methods"),
    (["explain", DIGITS, "--seed", "99999999999999999999999"], "--seed"),
    (["explain", DIGITS, "--seed", "-1"], "--seed"),
    (["no-such-command"], "no-such-command"),
])
def test_usage_errors_are_one_line(args, fragment, tmp_path):
    refused(run_main(*args, cwd=tmp_path), fragment)
    assert not (tmp_path / "runs").exists()


def test_usage_errors_through_the_installed_entry_point_are_one_line(tmp_path):
    refused(run_cli("explain", DIGITS, "--n", "0", cwd=tmp_path), "--n")


def test_an_out_name_longer_than_the_file_system_allows(tmp_path):
    refused(run_main("explain", DIGITS, "--n", "2", "--out", str(tmp_path / ("x" * 300))), "bytes long")
    assert list(tmp_path.iterdir()) == []


def test_names_that_read_as_markup_print_as_they_are(tmp_path):
    """Printing happens after the run is committed: a path like runs/[/]x must neither fail nor vanish."""
    result = run_main("explain", DIGITS, "--method", "saliency", "--n", "1", "--out", "runs/[/]x", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "runs/[/]x" in result.stdout and (tmp_path / "runs" / "[" / "]x" / "run.json").is_file()
