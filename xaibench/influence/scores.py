"""Influence scores from fitted factors: pairwise (query x train), self-influence, per-module breakdown.

The score of training example m on query q is g_q^T (G + lambda I)^-1 g_m summed over tracked modules
(block-diagonal curvature; the exact strategy uses its full matrix), with g_q the gradient of the
query's measurement and g_m that of the training loss on m's own label. As in kronfluence there is no
minus sign and no 1/N: both the measurement and the loss are loss-like, so a positive score means a
gradient step on m lowers the query's measurement: m helps the query's prediction (a proponent);
negative: m works against it (an opponent). Self-influence g_m^T (G + lambda I)^-1 g_m is large for
examples the model fits against the grain of the rest, mislabelled ones first.

Damping lambda is absolute, or with ``damping=None`` 0.1 x the mean curvature eigenvalue of each module
(of the whole matrix for exact). The query side is preconditioned once per block of queries (Grosse et
al., section 2.3; ``ScoreConfig.query_block`` queries at a time, all by default, each block one pass over
the training data), optionally compressed to rank r per module by SVD. Training gradients are contracted
from activations and output gradients batch by batch and module by module, so per-example gradient
matrices exist for one module of one batch at a time at most, and not at all where a module has few
positions (``contract``). The factors converted for these products are held for one group of modules at
a time (``Influence.module_groups``, within ``ScoreConfig.factor_memory`` bytes): self-influence makes
one pass over the training data per group, and the query side one per group over the queries. Self-influence never leaves the eigenbasis:
g^T (G + lambda)^-1 g = sum (Q_S^T G Q_A)^2 / (Lambda + lambda), from the rotated gradients
(``eigenbasis``). Input columns that are zero padding for every training example are left out of the
query side and of every product (``Captured.support``): their gradients are zero, so with damping 0 a
zero curvature there no longer turns every score into NaN (0 / 0).

Devices: everything runs where the model and the data are, in the model's dtype (float64 for the exact
strategy); the scores are float32 there, and come back to the CPU only when the caller moves them.

Under torchrun (``xaibench.core.distributed``) pairwise scores and self-influence shard the training set: each
process takes every query against its contiguous block of training examples, and the blocks are gathered
along the training axis in the original order, so every process ends with the whole (modules, queries,
train) or (modules, train) tensor. Checkpoints hold each process's own block under a stage name tied to
its rank and the world size (``factors.checkpoint_stage``): a resume needs the same number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from xaibench.core import distributed
from xaibench.core.errors import InputError
from xaibench.core.progress import advance
from xaibench.influence.eigenbasis import Basis, rotate
from xaibench.influence.factors import (
    Checkpoint,
    Factors,
    checkpoint_stage,
    compute_basis,
)
from xaibench.influence.stored_tensors import CHUNK_BYTES
from xaibench.influence.task import Task
from xaibench.influence.tracking import (
    Captured,
    capture,
    outer_sum,
    select_modules,
    tracked,
)

Gradients = dict[str, torch.Tensor]  # module name -> (rows, out, in[+1])
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> a batch sum
Query = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # (Q, out, columns) or rank-r (left, right)
Columns = dict[str, torch.Tensor | None]  # module name -> training support columns (None: all)
CURVED = ("kfac", "ekfac", "diagonal")  # the strategies that weigh by curvature eigenvalues


@dataclass(frozen=True)
class ScoreConfig:
    """How to score: damping (None = 0.1 x mean eigenvalue), query rank (None = full), rows per pass of
    the training data and of the queries (None: ``batch_size``), queries per block (None: all), chunk,
    and the bytes of factors held at once (None: every module's; ``Influence.module_groups``)."""

    damping: float | None = None
    rank: int | None = None
    batch_size: int = 128
    chunk_size: int = 4096
    query_batch_size: int | None = None
    query_block: int | None = None
    factor_memory: int | None = None

    def __post_init__(self) -> None:
        if self.damping is not None and not (math.isfinite(self.damping) and self.damping >= 0):
            raise InputError(f"damping must be a finite number, 0 or more, got {self.damping}")
        if self.rank is not None and self.rank < 1:
            raise InputError(f"rank must be at least 1, got {self.rank}")
        if min(self.batch_size, self.chunk_size, self.query_batch_size or 1, self.query_block or 1,
               self.factor_memory or 1) < 1:
            raise InputError("batch sizes, chunk size, query block and factor memory must be at least 1")


class Preconditioner:
    """(G + lambda I)^-1 for fitted factors, applied to batches of gradient matrices."""

    def __init__(self, factors: Factors, damping: float | None) -> None:
        self.factors, self.shapes = factors, factors.shapes
        self.damping: dict[str, float] = {}
        self._bases: dict[tuple, Basis] = {}
        self._weights: dict[tuple, torch.Tensor | None] = {}
        for name in self.shapes:
            if factors.strategy in CURVED:
                self.damping[name] = damping if damping is not None else \
                    0.1 * sum(float(block.sum()) for block in self._curvature(name)) / math.prod(self.shapes[name])
        if factors.strategy == "exact":  # the mean eigenvalue is the trace over the dimension
            fisher = factors.tensors["exact/fisher"]
            lam = float(0.1 * fisher.diagonal().mean()) if damping is None else damping
            self.damping["exact"] = lam
            eye = torch.eye(len(fisher), dtype=fisher.dtype, device=fisher.device)
            self.cholesky = torch.linalg.cholesky(fisher + lam * eye)

    def _curvature(self, name: str) -> Iterator[torch.Tensor]:
        """The module's curvature eigenvalues (out, in), float64, as blocks of rows of at most
        ``CHUNK_BYTES``: never whole at once where the factors are stored."""
        if self.factors.strategy == "kfac":
            s_values, a_values = self.factors.module(name, "S_values"), self.factors.module(name, "A_values")
            step = max(1, CHUNK_BYTES // (8 * len(a_values)))
            for first in range(0, len(s_values), step):
                yield torch.outer(s_values[first:first + step], a_values)
        else:
            yield from self.factors.module_rows(name, "lambda")

    def release(self) -> None:
        """Let go of every converted basis and weight (they are read again when next used)."""
        self._bases.clear()
        self._weights.clear()

    def basis(self, name: str, dtype: torch.dtype, device: torch.device) -> Basis:
        """The module's eigenvectors in ``dtype`` on ``device``, converted once."""
        key = (name, dtype, device)
        if key not in self._bases:
            self._bases[key] = compute_basis(self.factors, name, dtype, device)
        return self._bases[key]

    def weights(self, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """1 / (curvature eigenvalues + damping) (out, in) in ``dtype`` on ``device``; None for identity."""
        key = (name, dtype, device)
        if key not in self._weights:
            if self.factors.strategy not in CURVED:
                self._weights[key] = None
            else:
                weights, first = torch.empty(self.shapes[name], dtype=dtype, device=device), 0
                for block in self._curvature(name):  # converted a block at a time
                    weights[first:first + len(block)] = (1 / (block + self.damping[name])).to(device, dtype)
                    first += len(block)
                self._weights[key] = weights
        return self._weights[key]

    def apply(self, grads: Gradients) -> Gradients:
        """Preconditioned gradients, same shapes and dtype (float64 for exact)."""
        if self.factors.strategy == "exact":
            flat = torch.cat([grads[n].flatten(1) for n in self.shapes], dim=1)
            flat = flat.to(self.cholesky.device, self.cholesky.dtype)
            return self._split(torch.cholesky_solve(flat.T, self.cholesky).T.to(flat.device))
        return {name: self._apply_module(name, grads[name]) for name in self.shapes}

    def _apply_module(self, name: str, grads: torch.Tensor) -> torch.Tensor:
        basis = self.basis(name, grads.dtype, grads.device)
        weights = self.weights(name, grads.dtype, grads.device)
        if weights is None:
            return grads
        if not basis.rotates:
            return grads * weights
        q_a = basis.rows(None)[0]
        return basis.s @ ((basis.s.T @ grads @ q_a) * weights) @ q_a.T

    def self_scores(self, grads: Gradients) -> torch.Tensor:
        """g^T (G + lambda)^-1 g per example and module: (modules, rows), from full gradient matrices."""
        conditioned = self.apply(grads)
        return torch.stack([(conditioned[n].double() * grads[n].double()).flatten(1).sum(1)
                            for n in self.shapes])

    def self_score(self, name: str, seen: Captured) -> torch.Tensor:
        """g^T (G + lambda)^-1 g of one module per example of a batch (B,), in the eigenbasis."""
        dtype, device = seen.output_gradients[0].dtype, seen.output_gradients[0].device
        rotated = rotate(seen, self.basis(name, dtype, device), dtype)
        weights = self.weights(name, dtype, device)
        if weights is not None and rotated.columns is not None:
            weights = weights.index_select(1, rotated.columns)
        return rotated.weighted_squares(weights)

    def condition(self, name: str, seen: Captured, columns: torch.Tensor | None) -> torch.Tensor:
        """(G + lambda)^-1 G of a batch's per-example gradients (B, out, len(columns)): the input columns
        ``columns`` only (None: all), in the model's dtype."""
        dtype, device = seen.output_gradients[0].dtype, seen.output_gradients[0].device
        basis, weights = self.basis(name, dtype, device), self.weights(name, dtype, device)
        rotated = rotate(seen, basis, dtype, pairs=False)
        matrices = rotated.matrices()
        if weights is not None:
            matrices = matrices * (weights if rotated.columns is None else weights.index_select(1, rotated.columns))
        if not basis.rotates:  # the input columns ``columns`` of matrices on the columns ``rotated.columns``
            return _moved(matrices, rotated.columns, columns, self.shapes[name][1])
        q_a, eigen = basis.rows(columns)  # the rotated columns that are not zero on ``columns``
        return basis.s @ (_moved(matrices, rotated.columns, eigen, self.shapes[name][1]) @ q_a.T)

    def _split(self, flat: torch.Tensor) -> Gradients:
        sizes = [o * i for o, i in self.shapes.values()]
        return {name: part.reshape(-1, *shape)
                for (name, shape), part in zip(self.shapes.items(), flat.split(sizes, dim=1))}


def held_bytes(factors: Factors, name: str, support: int | None, element: int) -> int:
    """At most the bytes a module's factors take once converted to an ``element``-byte dtype by the
    ``Preconditioner``: Q_S, the rows of Q_A for ``support`` input columns (None: all), and the weights.
    0 for the exact strategy, whose matrix couples every module (``Influence.held_bytes``)."""
    if factors.strategy == "exact":
        return 0
    out, ins = factors.shapes[name]
    rotating = factors.strategy in ("kfac", "ekfac")
    weighted = factors.strategy != "identity"
    return element * (rotating * (out * out + (ins if support is None else support) * ins) + weighted * out * ins)


def conversion_bytes(factors: Factors, name: str, support: int | None) -> int:
    """At most the bytes alive while one module's factors are converted, a block of rows at a time
    (``Basis.rows``, ``Preconditioner.weights``): a float64 block read, its selected columns and their
    conversion, each at most ``CHUNK_BYTES``; less for a smaller matrix."""
    if factors.strategy in ("exact", "identity"):
        return 0
    out, ins = factors.shapes[name]
    rows = ins if support is None else support
    largest = 8 * max(rows * ins if factors.strategy in ("kfac", "ekfac") else 0, out * ins)
    return 3 * min(largest, max(CHUNK_BYTES, 8 * ins))


def _moved(matrices: torch.Tensor, held: torch.Tensor | None, wanted: torch.Tensor | None,
           width: int) -> torch.Tensor:
    """``matrices`` (..., len(held)) holding the columns ``held`` of a ``width``-column matrix that is
    zero elsewhere, as the columns ``wanted`` (None: all)."""
    if held is wanted:
        return matrices
    if held is not None:
        matrices = matrices.new_zeros(*matrices.shape[:-1], width).index_copy_(-1, held, matrices)
    return matrices if wanted is None else matrices.index_select(-1, wanted)


def gradients(model: nn.Module, modules: dict[str, nn.Module], objective: Objective, inputs: torch.Tensor,
              targets: torch.Tensor, batch_size: int) -> Gradients:
    """Per-example gradient matrices of ``objective(outputs, targets)`` for all rows, batched."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    for first in range(0, len(inputs), batch_size):
        rows = slice(first, first + batch_size)
        seen = capture(model, modules, inputs[rows], lambda out, t=targets[rows]: objective(out, t))[0]
        for name in modules:
            parts[name].append(seen[name].per_example())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def compress(conditioned: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-r factors (left (Q, out, r), right (Q, in, r)) of each preconditioned query matrix."""
    u, s, vh = torch.linalg.svd(conditioned, full_matrices=False)
    r = min(rank, s.shape[1])
    return u[..., :r] * s[:, None, :r], vh[:, :r].transpose(1, 2)


def contract(query: Query, seen: Captured, columns: torch.Tensor | None = None) -> torch.Tensor:
    """<query_q, G_b> for every query q and training example b: (Q, B), from activations and gradients;
    the query holds the input columns ``columns`` (None: all), the only ones the training rows fill.

    sum_p g_p^T Q a_p costs Q P out in multiply-adds and no per-example matrix; forming G first costs P
    out in, writing and reading B matrices (about 100 multiply-adds per entry on a CPU, measured), then
    Q out in: the first is taken while Q P < P + Q + 100."""
    a, g = seen.activations, seen.gradients
    if columns is not None:
        a = a.index_select(2, columns)
    a, g = a.to(_dtype(query)), g.to(_dtype(query))
    single = a.shape[1] == 1
    if isinstance(query, tuple):
        left, right = query
        if single:
            return torch.einsum("bo,qok,bi,qik->qb", g[:, 0], left, a[:, 0], right)
        return torch.einsum("qok,boi,qik->qb", left, outer_sum(g, a), right)
    queries, outs, positions = query.shape[0], query.shape[1], a.shape[1]
    if queries * positions < positions + queries + 100:  # sum_p g_p^T Q a_p, no per-example matrices
        products = (query.flatten(0, 1) @ a.flatten(0, 1).T).view(queries, outs, *a.shape[:2])
        return (products * g.permute(2, 0, 1)).sum((1, 3))
    return query.flatten(1) @ outer_sum(g, a).flatten(1).T


def _dtype(query: Query) -> torch.dtype:
    return (query[0] if isinstance(query, tuple) else query).dtype


def training_columns(model: nn.Module, modules: dict[str, nn.Module], sample: torch.Tensor) -> Columns:
    """Each module's support columns for training rows shaped like ``sample`` (one row, batch axis)."""
    with tracked(modules) as records, torch.no_grad():
        model(sample)
    return {name: Captured(modules[name], tuple(x for x, _ in seen), ()).support()
            for name, seen in records.items()}


@dataclass(frozen=True)
class Influence:
    """What scoring needs besides the data: the model, its tracked modules, the task and the factors."""

    model: nn.Module
    task: Task
    factors: Factors
    config: ScoreConfig = ScoreConfig()

    @property
    def modules(self) -> dict[str, nn.Module]:
        modules = select_modules(self.model, list(self.factors.shapes))
        if list(modules) != list(self.factors.shapes):
            raise InputError("the factors were fitted on other modules than this model has")
        return modules

    @cached_property
    def conditioner(self) -> Preconditioner:
        return Preconditioner(self.factors, self.config.damping)

    def module_groups(self, sample: torch.Tensor) -> list[list[str]]:
        """The tracked modules in consecutive groups whose converted factors fit ``config.factor_memory``
        bytes together (``held_bytes``; a module over it alone makes a group of its own),
        for training rows shaped like ``sample`` (one row): a pass holds one group's factors at a time.
        One group without a limit, and for the exact strategy, whose matrix couples every module."""
        names = list(self.factors.shapes)
        if self.config.factor_memory is None or self.factors.strategy == "exact":
            return [names]
        held = self._held(sample)[0]
        groups: list[list[str]] = [[]]
        total = 0
        for name in names:
            if groups[-1] and total + held[name] > self.config.factor_memory:
                groups.append([])
                total = 0
            groups[-1].append(name)
            total += held[name]
        return groups

    def held_bytes(self, sample: torch.Tensor) -> int:
        """At most the bytes of factors held at once by passes over rows like ``sample``: the largest
        group's converted factors, plus what converting one module takes meanwhile; for the exact
        strategy its matrix and Cholesky factor, float64."""
        if self.factors.strategy == "exact":
            size = sum(out * ins for out, ins in self.factors.shapes.values())
            return 16 * size * size
        held, converting = self._held(sample)
        return max(sum(held[name] for name in group) for group in self.module_groups(sample)) \
            + max(converting.values())

    def _held(self, sample: torch.Tensor) -> tuple[dict[str, int], dict[str, int]]:
        """Per module: its converted factors' bytes (``held_bytes``) and its conversion's
        (``conversion_bytes``), for training rows like ``sample``."""
        columns = training_columns(self.model, self.modules, sample)
        element = next((p.element_size() for p in self.model.parameters()), 4)
        sizes = {name: None if cols is None else len(cols) for name, cols in columns.items()}
        return ({name: held_bytes(self.factors, name, size, element) for name, size in sizes.items()},
                {name: conversion_bytes(self.factors, name, size) for name, size in sizes.items()})

    def query_side(self, inputs: torch.Tensor, targets: torch.Tensor,
                   columns: Columns | None = None) -> dict[str, Query]:
        """Preconditioned (and, with a rank, compressed) query gradients of the measurement: (Q, out,
        in[+1]) per module, or only the input columns ``columns`` names (None: all); one group of
        modules at a time (``module_groups``), whose factors are let go before the next."""
        modules, conditioner = self.modules, self.conditioner
        columns = columns or dict.fromkeys(modules)
        targets = targets.to(inputs.device)
        if self.factors.strategy == "exact":
            grads = gradients(self.model, modules, self.task.measurement, inputs, targets, self._query_rows)
            conditioned = {name: matrix if columns[name] is None else matrix.index_select(2, columns[name])
                           for name, matrix in conditioner.apply(grads).items()}
        else:
            conditioned = {}
            for group in self.module_groups(inputs[:1]):
                chosen = {name: modules[name] for name in group}
                for first in range(0, len(inputs), self._query_rows):
                    rows = slice(first, first + self._query_rows)
                    seen = capture(self.model, chosen, inputs[rows],
                                   lambda out, t=targets[rows]: self.task.measurement(out, t))[0]
                    for name in chosen:
                        part = conditioner.condition(name, seen.pop(name), columns[name])
                        if name not in conditioned:  # the whole block's matrices, filled batch by batch
                            conditioned[name] = part.new_empty(len(inputs), *part.shape[1:])
                        conditioned[name][rows] = part
                conditioner.release()
        if self.config.rank is None:
            return conditioned
        return {name: compress(matrix, self.config.rank) for name, matrix in conditioned.items()}

    @property
    def _query_rows(self) -> int:
        return self.config.query_batch_size or self.config.batch_size

    def pairwise(self, queries: torch.Tensor, query_targets: torch.Tensor, train: torch.Tensor,
                 labels: torch.Tensor, checkpoint: Checkpoint | None = None) -> torch.Tensor:
        """Scores (modules, queries, train examples); their sum over modules is the influence."""
        modules, labels = self.modules, labels.to(train.device)
        columns = training_columns(self.model, modules, train[:1])
        block = distributed.shard_rows(len(train), check=len(train))
        out = torch.empty(len(modules), len(queries), block.stop - block.start, dtype=torch.float32,
                          device=train.device)
        step = self.config.query_block or len(queries)
        for first in range(0, len(queries), step):
            picked = slice(first, min(first + step, len(queries)))

            def scorer(picked: slice = picked) -> Callable[[slice], torch.Tensor]:
                query = self.query_side(queries[picked], query_targets[picked], columns)

                def batch(rows: slice) -> torch.Tensor:
                    seen = capture(self.model, modules, train[rows], lambda out: self.task.loss(out, labels[rows]))[0]
                    return torch.stack([contract(query[name], seen.pop(name), columns[name]).double()
                                        for name in modules])
                return batch

            stage = "pairwise" if step >= len(queries) else f"pairwise-queries{picked.start}-{picked.stop}"
            self._fill(stage, out[:, picked], block, scorer, checkpoint)
        return _gathered(out, len(train))

    def self_influence(self, train: torch.Tensor, labels: torch.Tensor,
                       checkpoint: Checkpoint | None = None) -> torch.Tensor:
        """Self-influence per module and training example: (modules, N); one pass over the training
        data per group of modules (``module_groups``), holding only that group's factors."""
        modules, conditioner, labels = self.modules, self.conditioner, labels.to(train.device)
        block = distributed.shard_rows(len(train), check=len(train))
        out = torch.empty(len(modules), block.stop - block.start, dtype=torch.float32, device=train.device)
        groups, first = self.module_groups(train[:1]), 0
        for group in groups:
            chosen = {name: modules[name] for name in group}

            def batch(rows: slice, chosen: dict[str, nn.Module] = chosen) -> torch.Tensor:
                seen = capture(self.model, chosen, train[rows], lambda out: self.task.loss(out, labels[rows]))[0]
                if self.factors.strategy == "exact":
                    return conditioner.self_scores({name: s.per_example() for name, s in seen.items()})
                return torch.stack([conditioner.self_score(name, seen.pop(name)).double() for name in chosen])

            last = first + len(group)
            stage = "self" if len(groups) == 1 else f"self-modules{first}-{last}"
            self._fill(stage, out[first:last], block, lambda batch=batch: batch, checkpoint)
            conditioner.release()
            first = last
        return _gathered(out, len(train))

    def _fill(self, stage: str, out: torch.Tensor, block: slice, scorer: Callable[[], Callable[[slice], torch.Tensor]],
              checkpoint: Checkpoint | None) -> None:
        """Write ``batch(rows)`` (..., rows) into ``out`` (..., block rows) over this process's ``block`` of
        the training rows in chunks, checkpointing each chunk; ``scorer()`` makes ``batch`` (the query
        side), and is not called when the checkpoint holds every row already."""
        name = checkpoint_stage(stage)
        saved = checkpoint.load(name) if checkpoint is not None else None
        done = 0  # rows of the block done
        if saved is not None:
            done = saved[1]
            out[..., :done] = saved[0]["scores"].to(out.device, out.dtype)
        advance(done)
        if block.start + done >= block.stop:
            return
        batch = scorer()
        size, step = self.config.chunk_size, self.config.batch_size
        for start in range(block.start + done, block.stop, size):
            stop = min(start + size, block.stop)
            for first in range(start, stop, step):
                last = min(first + step, stop)
                out[..., first - block.start:last - block.start] = batch(slice(first, last))
                advance(last - first)
            if checkpoint is not None:
                checkpoint.save(name, {"scores": out[..., :stop - block.start]}, stop - block.start)


def _gathered(local: torch.Tensor, n: int) -> torch.Tensor:
    """This process's block of scores (..., rows), or under torchrun every process's along the rows."""
    if distributed.world().size == 1:
        return local
    return distributed.gather_rows(local.movedim(-1, 0), n).movedim(0, -1).contiguous()
