"""The memory budget: sizes, where the budget comes from, a row's measured cost and the rows per pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xaibench.core import memory
from xaibench.core.errors import InputError, XaibenchWarning
from xaibench.core.memory import Budget, RowPlan, parse_size, resolve_budget, row_bytes


@pytest.mark.parametrize(("text", "size"), [
    ("512M", 512 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("2GB", 2 * 10**9), ("1048576", 1 << 20),
    (" 64 mib ", 64 << 20), ("1T", 1 << 40),
])
def test_sizes_in_binary_and_decimal_units(text, size):
    assert parse_size(text, "--max-memory") == size


@pytest.mark.parametrize("text", ["abc", "12x", "", "-1G", "1e9", "0", "100K", "1 G B"])
def test_malformed_or_tiny_sizes_are_refused_naming_the_source(text):
    with pytest.raises(InputError, match="XAIBENCH_MAX_MEMORY"):
        parse_size(text, "XAIBENCH_MAX_MEMORY")


def test_the_flag_wins_over_the_environment_which_wins_over_the_default(monkeypatch):
    monkeypatch.setenv(memory.ENV_VAR, "300M")
    assert resolve_budget("200M") == Budget(200 << 20, "--max-memory")
    assert resolve_budget(None) == Budget(300 << 20, memory.ENV_VAR)
    monkeypatch.delenv(memory.ENV_VAR)
    monkeypatch.setattr(memory, "free_ram", lambda: 1 << 30)
    assert resolve_budget(None).bytes == 256 << 20  # a quarter of 1 GiB
    monkeypatch.setattr(memory, "free_ram", lambda: 64 << 30)
    assert resolve_budget(None).bytes == memory.CPU_CAP
    monkeypatch.setattr(memory, "free_ram", lambda: None)
    assert resolve_budget(None).bytes == memory.FALLBACK


def test_a_row_costs_its_saved_activations_plus_input_copies():
    # Linear(10, 1000) keeps its input (10 floats) for backward and ReLU its output (1000 floats),
    # which the second Linear keeps too (one storage); the weights are kept once, whatever the rows.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 1000), nn.ReLU(), nn.Linear(1000, 3))
    saved = 4 * (10 + 1000)
    assert row_bytes(model, torch.zeros(1, 10)) == int(memory.SAVED_MARGIN * saved) + memory.INPUT_COPIES * 40


def test_plan_rows_follow_the_budget_and_batch_size_wins():
    model = nn.Sequential(nn.Linear(10, 1000), nn.ReLU(), nn.Linear(1000, 3))
    sample = torch.zeros(1, 10)
    plan = RowPlan.of(None, "1M")
    per_row = row_bytes(model, sample)
    assert plan.rows(model, sample) == (1 << 20) // per_row
    assert plan.rows(model, sample, extra_row_bytes=(1 << 20) // 2) == (1 << 20) // (per_row + (1 << 19))
    assert plan.record()["passes"][0] == {"sample_shape": [10], "row_bytes": per_row,
                                          "rows_per_pass": (1 << 20) // per_row}
    assert RowPlan.of(7, None).rows(model, sample) == 7
    assert RowPlan.of(7, None).record() == {"batch_size": 7, "source": "--batch-size"}
    with pytest.raises(InputError, match="not both"):
        RowPlan.of(7, "1G")


def test_a_row_larger_than_the_budget_runs_alone_and_is_reported():
    model = nn.Sequential(nn.Linear(10, 300_000), nn.ReLU())
    plan = RowPlan.of(None, "1M")
    with pytest.warns(XaibenchWarning, match="more than the memory budget of 1.0 MiB"):
        assert plan.rows(model, torch.zeros(1, 10)) == 1


def test_row_slices_cover_the_rows_and_none_for_no_rows() -> None:
    from xaibench.core.batches import row_slices

    assert list(row_slices(5, 2)) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert list(row_slices(5, None)) == [slice(0, 5)]
    assert list(row_slices(0, None)) == [] and list(row_slices(0, 3)) == []
