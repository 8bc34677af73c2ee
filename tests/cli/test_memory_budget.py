"""Every command derives its rows per pass from one memory budget and records it in run.json."""

from __future__ import annotations

import json
from contextlib import contextmanager

import torch

from tests.cli.conftest import SAMPLES

SHAPES = str(SAMPLES / "shapes_cnn.pt")


@contextmanager
def widest_pass():
    """The most rows any module of any model received in one call while the block runs."""
    seen = [0]

    def hook(_module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            seen[0] = max(seen[0], args[0].shape[0])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def test_a_metric_that_reexplains_stays_within_the_rows_the_budget_allows(cli_in_process, tmp_path):
    """max_sensitivity re-explains 3 noisy copies of each of 2 samples with smoothgrad, which draws 5
    noisy copies of each: 30 rows at once without a budget. 12M allows a few rows of the shapes CNN."""
    with widest_pass() as seen:
        result = cli_in_process(
            "evaluate", SHAPES, "--methods", "smoothgrad", "--metrics", "max_sensitivity", "-n", "2",
            "-p", "max_sensitivity.samples=3", "-p", "smoothgrad.n_samples=5", "--out", str(tmp_path / "run"),
            env={"XAIBENCH_MAX_MEMORY": "12M"})
    assert result.code == 0, result.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())["memory"]
    assert record["source"] == "XAIBENCH_MAX_MEMORY" and record["budget_bytes"] == 12 << 20
    (chosen,) = record["passes"]
    assert chosen["rows_per_pass"] == (12 << 20) // chosen["row_bytes"]
    assert 1 < chosen["rows_per_pass"] < 30
    # whole samples' noise copies share a pass (5 rows each), never more rows than the budget allows
    assert 5 <= seen[0] <= chosen["rows_per_pass"]


def test_batch_size_replaces_the_budget_and_both_together_are_refused(cli_in_process, tmp_path):
    with widest_pass() as seen:
        result = cli_in_process("explain", SHAPES, "-m", "saliency", "-n", "9", "-b", "4",
                                "--out", str(tmp_path / "run"))
    assert result.code == 0, result.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["memory"] == {
        "batch_size": 4, "source": "--batch-size"}
    assert seen[0] == 4
    refused = cli_in_process("explain", SHAPES, "-b", "7", "--max-memory", "1G", "--out", str(tmp_path / "x"))
    assert refused.code == 2 and refused.stderr.count("\n") == 1 and "not both" in refused.stderr
    bad = cli_in_process("explain", SHAPES, "--out", str(tmp_path / "x"), env={"XAIBENCH_MAX_MEMORY": "lots"})
    assert bad.code == 2 and "XAIBENCH_MAX_MEMORY takes a size" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_a_budget_under_one_row_warns_in_one_line_and_runs_row_by_row(cli_in_process, tmp_path):
    with widest_pass() as seen:
        result = cli_in_process("explain", SHAPES, "-m", "saliency", "-n", "3", "--max-memory", "1M",
                                "--out", str(tmp_path / "run"))
    assert result.code == 0, result.stderr
    assert result.stderr.startswith("warning: one row of shape [3, 64, 64] needs about")
    assert seen[0] == 2  # the probe's two rows; every pass of the method has one
