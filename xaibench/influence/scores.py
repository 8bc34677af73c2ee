"""Influence scores from fitted factors: pairwise (query x train), self-influence, per-module breakdown.

The score of training example m on query q is g_q^T (G + lambda I)^-1 g_m summed over tracked modules
(block-diagonal curvature; the exact strategy uses its full matrix), with g_q the gradient of the
query's measurement and g_m that of the training loss on m's own label. As in kronfluence there is no
minus sign and no 1/N: both the measurement and the loss are loss-like, so a positive score means a
gradient step on m lowers the query's measurement: m helps the query's prediction (a proponent);
negative: m works against it (an opponent). Self-influence g_m^T (G + lambda I)^-1 g_m is large for
examples the model fits against the grain of the rest, mislabelled ones first.

Damping lambda is absolute, or with ``damping=None`` 0.1 x the mean curvature eigenvalue of each module
(of the whole matrix for exact). The query side is preconditioned once (Grosse et al., section 2.3),
optionally compressed to rank r per module by SVD; training gradients are contracted from activations
and output gradients batch by batch, so per-example gradient matrices exist for one batch at a time at
most (and not at all for single-position Linear layers).

Under torchrun (``xaibench.core.distributed``) pairwise scores and self-influence shard the training set: each
process takes every query against its contiguous block of training examples, and the blocks are gathered
along the training axis in the original order, so every process ends with the whole (modules, queries,
train) or (modules, train) tensor. Checkpoints hold each process's own block under a stage name tied to
its rank and the world size (``factors.checkpoint_stage``): a resume needs the same number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xaibench.core import distributed
from xaibench.core.errors import InputError
from xaibench.core.progress import advance
from xaibench.influence.factors import Checkpoint, Factors, checkpoint_stage
from xaibench.influence.task import Task
from xaibench.influence.tracking import Captured, capture, select_modules

Gradients = dict[str, torch.Tensor]  # module name -> (rows, out, in[+1])
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> a batch sum


@dataclass(frozen=True)
class ScoreConfig:
    """How to score: damping (None = 0.1 x mean eigenvalue), query rank (None = full), batch, chunk."""

    damping: float | None = None
    rank: int | None = None
    batch_size: int = 128
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        if self.damping is not None and not (math.isfinite(self.damping) and self.damping >= 0):
            raise InputError(f"damping must be a finite number, 0 or more, got {self.damping}")
        if self.rank is not None and self.rank < 1:
            raise InputError(f"rank must be at least 1, got {self.rank}")


class Preconditioner:
    """(G + lambda I)^-1 for fitted factors, applied to batches of gradient matrices."""

    def __init__(self, factors: Factors, damping: float | None) -> None:
        self.factors, self.shapes = factors, factors.shapes
        self.damping: dict[str, float] = {}
        for name in self.shapes:
            curvature = self._eigenvalues(name)
            if curvature is not None:
                self.damping[name] = float(0.1 * curvature.mean()) if damping is None else damping
        if factors.strategy == "exact":  # the mean eigenvalue is the trace over the dimension
            fisher = factors.tensors["exact/fisher"]
            lam = float(0.1 * fisher.diagonal().mean()) if damping is None else damping
            self.damping["exact"] = lam
            self.cholesky = torch.linalg.cholesky(fisher + lam * torch.eye(len(fisher), dtype=fisher.dtype))

    def _eigenvalues(self, name: str) -> torch.Tensor | None:
        strategy, get = self.factors.strategy, self.factors.tensors.get
        if strategy == "kfac":
            return torch.outer(get(f"{name}/S_values"), get(f"{name}/A_values"))
        if strategy in ("ekfac", "diagonal"):
            return get(f"{name}/lambda")
        return None

    def apply(self, grads: Gradients) -> Gradients:
        """Preconditioned gradients, same shapes and dtype (float64 for exact)."""
        if self.factors.strategy == "exact":
            flat = torch.cat([grads[n].flatten(1) for n in self.shapes], dim=1).double()
            return self._split(torch.cholesky_solve(flat.T, self.cholesky).T)
        return {name: self._apply_module(name, grads[name]) for name in self.shapes}

    def _apply_module(self, name: str, grads: torch.Tensor) -> torch.Tensor:
        strategy = self.factors.strategy
        if strategy == "identity":
            return grads
        curvature = (self._eigenvalues(name) + self.damping[name]).to(grads.dtype)
        if strategy == "diagonal":
            return grads / curvature
        q_s = self.factors.module(name, "S_vectors").to(grads.dtype)
        q_a = self.factors.module(name, "A_vectors").to(grads.dtype)
        return q_s @ ((q_s.T @ grads @ q_a) / curvature) @ q_a.T

    def self_scores(self, grads: Gradients) -> torch.Tensor:
        """g^T (G + lambda)^-1 g per example and module: (modules, rows)."""
        conditioned = self.apply(grads)
        return torch.stack([(conditioned[n].double() * grads[n].double()).flatten(1).sum(1)
                            for n in self.shapes])

    def _split(self, flat: torch.Tensor) -> Gradients:
        sizes = [o * i for o, i in self.shapes.values()]
        return {name: part.reshape(-1, *shape)
                for (name, shape), part in zip(self.shapes.items(), flat.split(sizes, dim=1))}


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


def contract(query: torch.Tensor | tuple[torch.Tensor, torch.Tensor], seen: Captured) -> torch.Tensor:
    """<query_q, G_b> for every query q and training example b: (Q, B), from activations and gradients."""
    a, g = seen.activations.to(_dtype(query)), seen.gradients.to(_dtype(query))
    single = a.shape[1] == 1
    if isinstance(query, tuple):
        left, right = query
        if single:
            return torch.einsum("bo,qok,bi,qik->qb", g[:, 0], left, a[:, 0], right)
        return torch.einsum("qok,boi,qik->qb", left, seen.per_example().to(left.dtype), right)
    if single:
        return torch.einsum("qoi,bi,bo->qb", query, a[:, 0], g[:, 0])
    return query.flatten(1) @ seen.per_example().to(query.dtype).flatten(1).T


def _dtype(query: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.dtype:
    return (query[0] if isinstance(query, tuple) else query).dtype


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

    def query_side(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, object]:
        """Preconditioned (and, with a rank, compressed) query gradients of the measurement."""
        grads = gradients(self.model, self.modules, self.task.measurement, inputs, targets,
                          self.config.batch_size)
        conditioned = Preconditioner(self.factors, self.config.damping).apply(grads)
        if self.config.rank is None:
            return conditioned
        return {name: compress(matrix, self.config.rank) for name, matrix in conditioned.items()}

    def pairwise(self, queries: torch.Tensor, query_targets: torch.Tensor, train: torch.Tensor,
                 labels: torch.Tensor, checkpoint: Checkpoint | None = None) -> torch.Tensor:
        """Scores (modules, queries, train examples); their sum over modules is the influence."""
        query = self.query_side(queries, query_targets)
        modules = self.modules

        def batch(rows: slice) -> torch.Tensor:
            seen = capture(self.model, modules, train[rows], lambda out: self.task.loss(out, labels[rows]))[0]
            return torch.stack([contract(query[name], seen[name]).double() for name in modules])

        return self._columns("pairwise", len(train), batch, checkpoint)

    def self_influence(self, train: torch.Tensor, labels: torch.Tensor,
                       checkpoint: Checkpoint | None = None) -> torch.Tensor:
        """Self-influence per module and training example: (modules, N)."""
        modules, conditioner = self.modules, Preconditioner(self.factors, self.config.damping)

        def batch(rows: slice) -> torch.Tensor:
            seen = capture(self.model, modules, train[rows], lambda out: self.task.loss(out, labels[rows]))[0]
            return conditioner.self_scores({name: s.per_example() for name, s in seen.items()})

        return self._columns("self", len(train), batch, checkpoint)

    def _columns(self, stage: str, n: int, batch: Callable[[slice], torch.Tensor],
                 checkpoint: Checkpoint | None) -> torch.Tensor:
        """Concatenate ``batch(rows)`` (..., rows) over the data in chunks, checkpointing each chunk.

        Under torchrun over this process's block of the ``n`` rows, then gathered from every process
        along the last axis in row order; fewer rows than processes is an InputError.
        """
        block, name = distributed.shard_rows(n, check=n), checkpoint_stage(stage)
        saved = checkpoint.load(name) if checkpoint is not None else None
        columns, done = ([saved[0]["scores"]], saved[1]) if saved is not None else ([], 0)  # done: block rows
        advance(done)
        size, step = self.config.chunk_size, self.config.batch_size
        for start in range(block.start + done, block.stop, size):
            stop = min(start + size, block.stop)
            for first in range(start, stop, step):
                columns.append(batch(slice(first, min(first + step, stop))))
                advance(min(first + step, stop) - first)
            if checkpoint is not None:
                columns = [torch.cat(columns, dim=-1)]
                checkpoint.save(name, {"scores": columns[0]}, stop - block.start)
        local = torch.cat(columns, dim=-1).float()
        if distributed.world().size == 1:
            return local
        return distributed.gather_rows(local.movedim(-1, 0), n).movedim(0, -1).contiguous()
