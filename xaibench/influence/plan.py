"""Rows per pass, query blocks and factor groups that keep influence's passes within the memory budget.

The budget (``xaibench.core.memory``) bounds what one pass holds beyond the process with its model and
data: the model's activations per row, what influence keeps per row on top (``footprint``), and what
stays held through the passes. Self-influence holds one group of modules' converted factors
(``Influence.module_groups``, at most half the budget) and gives the rest to rows. Pairwise scoring holds
a block of preconditioned queries (at most half the budget) through its passes over the training data,
and while preconditioning them one group of factors too (at most a quarter); rows get what is left.
With ``--batch-size`` every pass takes that many rows and all queries form one block.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from xaibench.core.memory import RowPlan
from xaibench.influence.factors import EXACT_LIMIT
from xaibench.influence.footprint import Footprint
from xaibench.influence.scores import Influence, ScoreConfig


def training_rows(memory: RowPlan, model: nn.Module, sample: torch.Tensor, queries: int = 0,
                  reserved: int = 0) -> int:
    """Rows per training pass over rows like ``sample`` (one row): the model's own cost of a row plus
    what influence keeps per row (``Footprint.training_row``, against ``queries`` queries at once when
    scoring), beside ``reserved`` bytes held through the pass."""
    extra = Footprint.of(model, sample, EXACT_LIMIT).training_row(queries)
    return memory.rows(model, sample, extra_row_bytes=extra, reserved=reserved)


def score_plan(memory: RowPlan, influence: Influence, train_sample: torch.Tensor,
               queries: torch.Tensor | None = None) -> ScoreConfig:
    """``influence.config`` with the rows per pass, query blocks and factor memory of the module
    docstring, for training rows like ``train_sample`` (one row) and the query inputs ``queries`` (None:
    self-influence)."""
    config, model = influence.config, influence.model
    if memory.budget is None:
        return replace(config, batch_size=memory.batch_size, query_batch_size=memory.batch_size)
    budget = memory.budget.bytes
    if queries is None:
        config = replace(config, factor_memory=budget // 2)
        held = replace(influence, config=config).held_bytes(train_sample)
        return replace(config, batch_size=training_rows(memory, model, train_sample, reserved=held))
    footprint = Footprint.of(model, queries[:1], EXACT_LIMIT)
    block = max(1, min(len(queries), budget // 2 // footprint.query()))
    block_bytes = block * footprint.query()
    config = replace(config, factor_memory=budget // 4, query_block=block)
    factors = replace(influence, config=config).held_bytes(train_sample)
    query_rows = memory.rows(model, queries[:1], extra_row_bytes=footprint.query_row(),
                             reserved=block_bytes + factors)
    rows = training_rows(memory, model, train_sample, block, reserved=block_bytes)
    return replace(config, batch_size=rows, query_batch_size=query_rows)
