"""Curvature factors per tracked module: identity, diagonal, K-FAC, EK-FAC and the exact Fisher.

Grosse et al. (2023), section 2.2, after George et al. (2018). For each tracked module with per-example
gradient matrices G_i (out, in+1) (``tracking``), over the training data:

  kfac      A = E[a a^T] over input activations and S = E[g g^T] over output gradients, with positions
            (sequence steps, conv output pixels) folded into the batch and the count, as kronfluence does;
            eigendecompositions A = Q_A diag(L_A) Q_A^T, S = Q_S diag(L_S) Q_S^T in float64 after
            symmetrising; curvature eigenvalues outer(L_S, L_A). Rows and columns of A (or S) that are
            exactly zero (inputs that are zero padding in every example: 4,096 of the 4,608 columns of a
            ResNet's 3x3 convolution on a 1x1 map) are split off before the eigendecomposition: their unit
            vectors are eigenvectors of eigenvalue 0, so only the rest is decomposed, which is exact.
  ekfac     the same eigenvectors, eigenvalues corrected to Lambda = E_i[(Q_S^T G_i Q_A)^2] (one more pass).
  diagonal  Lambda = E_i[G_i^2] elementwise, no eigenvectors.
  identity  no curvature (the plain gradient dot product).
  exact     the explicit Fisher over all tracked parameters together (not block-diagonal): the empirical
            Fisher E_i[g_i g_i^T], or the true Fisher as the exact expectation over the model's predictive
            distribution (the Gauss-Newton matrix; the factored strategies sample one label per example
            instead). D x D with D the tracked parameter count, so for small models only: it validates
            the others. Stored as the matrix itself; scoring solves with its Cholesky factor.

Labels: "true" Fisher (default) draws each example's target from the model's predictive distribution,
afresh in each pass, with uniforms fixed per example by the seed and the pass (so results depend
neither on the batch size nor on the chunking); "empirical" uses the data's labels. Damping is applied
at scoring time (``scores``).

Devices: the model's passes and the rotated gradients run where the model is; the float64 sums and
eigendecompositions too, except on Apple's MPS (no float64) where they run on the CPU.

Passes run over the data in chunks of ``chunk_size`` examples; after each chunk the running sums (float64)
go to a ``checkpoint`` when one is given, so an interrupted fit resumes from its last completed chunk and
gives bit-for-bit the same factors.

Under torchrun (``xaibench.core.distributed``) each process runs every pass over its contiguous block of the
training rows and the pass's float64 sums (counts included) are summed over the processes before any
eigendecomposition or division, so every process ends with the same factors, equal to one process's up
to summation order. The true-Fisher uniforms are drawn for all rows on every process and indexed by the
global row, so the sampled labels do not depend on the number of processes. Checkpoints hold each
process's own partial sums under a stage name tied to its rank and the world size (``checkpoint_stage``):
a resume continues only with the same number of processes; with another number the stages do not
match and the fit starts over (still correct, as every stage file is complete on its own).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from xaibench.core import distributed
from xaibench.core.errors import InputError
from xaibench.core.progress import advance
from xaibench.influence.eigenbasis import Basis, rotate
from xaibench.influence.task import Task
from xaibench.influence.tracking import (
    Captured,
    capture,
    parameter_count,
    select_modules,
)

STRATEGIES = ("identity", "diagonal", "kfac", "ekfac", "exact")
FISHERS = ("true", "empirical")
EXACT_LIMIT = 20_000  # tracked parameters above which the exact D x D Fisher is refused


@dataclass(frozen=True)
class FitConfig:
    """How to fit factors.

    Attributes:
        strategy: one of STRATEGIES.
        fisher: "true" (labels sampled from the model) or "empirical" (the data's labels).
        modules: glob(s) over module names; None tracks every Linear and Conv2d.
        batch_size: examples per forward/backward pass (the memory knob).
        chunk_size: examples per checkpoint.
        seed: seeds the true-Fisher labels.
    """

    strategy: str = "ekfac"
    fisher: str = "true"
    modules: tuple[str, ...] | None = None
    batch_size: int = 128
    chunk_size: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.fisher not in FISHERS:
            raise InputError(f"fisher must be true or empirical, got {self.fisher!r}")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise InputError("batch_size and chunk_size must be at least 1")


@dataclass
class Factors:
    """Fitted factors: ``tensors`` keyed "<module>/<name>" (or "exact/<name>"), float64: a dict when
    fitted, a ``StoredTensors`` reading each from its file when loaded (``storage.load_factors``)."""

    strategy: str
    shapes: dict[str, tuple[int, int]]  # module name -> (out, in[+1]), in tracking order
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    #: "<module>/A" or "<module>/S" -> how its covariance was decomposed: the LAPACK driver that succeeded
    #: ("eigh", or "svd" where eigh failed to converge) and the exactly zero rows split off first
    decompositions: dict[str, dict[str, object]] = field(default_factory=dict)

    def module(self, name: str, key: str) -> torch.Tensor:
        return self.tensors[f"{name}/{key}"]

    def module_rows(self, name: str, key: str, rows: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Float64 blocks of the rows ``rows`` (ascending; None: all) of a module's matrix, in order:
        read a chunk at a time where the factors are stored (``StoredTensors.row_chunks``), one block
        where they are held."""
        chunks = getattr(self.tensors, "row_chunks", None)
        if chunks is not None:
            yield from chunks(f"{name}/{key}", rows)
            return
        matrix = self.module(name, key)
        yield matrix if rows is None else matrix.index_select(0, rows.to(matrix.device))


class Checkpoint(Protocol):
    """Where a fit keeps its running sums between chunks (``storage.PartialFit`` on disk)."""

    def load(self, stage: str) -> tuple[dict[str, torch.Tensor], int] | None: ...

    def save(self, stage: str, sums: dict[str, torch.Tensor], done: int) -> None: ...


def checkpoint_stage(stage: str) -> str:
    """The checkpoint name of ``stage`` for this process: ``stage`` alone, or ``stage@rank{r}of{w}`` under
    torchrun with w > 1 processes, whose checkpoints hold only their own block's partial work (so a resume
    needs the same number of processes; with another number nothing matches and the work starts over)."""
    w = distributed.world()
    return stage if w.size == 1 else f"{stage}@rank{w.rank}of{w.size}"


def fit_factors(model: nn.Module, task: Task, inputs: torch.Tensor, labels: torch.Tensor,
                config: FitConfig = FitConfig(), checkpoint: Checkpoint | None = None) -> Factors:
    """Fit ``config.strategy``'s factors of ``model`` on training ``inputs`` and ``labels``.

    Under torchrun every process passes all the data, computes over its block of rows and returns the
    same factors (the sums are all-reduced); fewer rows than processes is an InputError.
    """
    modules = select_modules(model, list(config.modules) if config.modules else None)
    shapes = {name: parameter_count(m) for name, m in modules.items()}
    if config.strategy == "exact" and sum(o * i for o, i in shapes.values()) > EXACT_LIMIT:
        raise InputError(f"the exact strategy needs a D x D matrix; {sum(o * i for o, i in shapes.values())} "
                         f"tracked parameters exceed its limit of {EXACT_LIMIT}; track fewer modules")
    tensors: dict[str, torch.Tensor] = {}
    factors = Factors(config.strategy, shapes, tensors)
    block = distributed.shard_rows(len(inputs), check=len(inputs))
    data = _Pass(model, modules, task, inputs, labels.to(inputs.device), config, checkpoint, block)
    if config.strategy in ("kfac", "ekfac"):
        sums = data.run("covariance", _covariance_sums)
        for name in modules:
            for side in ("A", "S"):  # each sum let go once decomposed: the largest are 4608 x 4608 float64
                values, vectors, how = _eigh(sums.pop(f"{name}/{side}"), sums[f"{name}/{side}_count"])
                factors.decompositions[f"{name}/{side}"] = how
                tensors[f"{name}/{side}_values"] = values
                tensors[f"{name}/{side}_vectors"] = vectors
    if config.strategy in ("ekfac", "diagonal"):
        sums = data.run("lambda", _lambda_sums(factors))
        for name in modules:
            tensors[f"{name}/lambda"] = sums[f"{name}/lambda"] / len(inputs)
    if config.strategy == "exact":
        fisher = data.run("exact", _exact_sums)["exact/fisher"] / len(inputs)
        tensors["exact/fisher"] = (fisher + fisher.T) / 2
    return factors


def _eigh(total: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
    """Eigenvalues and eigenvectors of the covariance ``total / count`` (positive semi-definite),
    symmetrised in float64, its exactly zero rows and columns split off: their unit vectors come first,
    with eigenvalue 0, then the eigenpairs of the rest in ascending order; and how it was done
    (``Factors.decompositions``)."""
    total = total.double()
    matrix = (total + total.T).mul_(0.5 / count)
    live = matrix.diagonal() != 0  # a zero diagonal entry of a covariance zeroes its row and column
    if bool(live.all()):
        values, vectors, driver = _eigenpairs(matrix)
        return values, vectors, {"driver": driver, "zero_rows": 0}
    kept, dropped = live.nonzero()[:, 0], (~live).nonzero()[:, 0]
    values, vectors, driver = _eigenpairs(matrix[kept][:, kept])
    size, zeros = len(matrix), len(dropped)
    all_values = torch.cat([values.new_zeros(zeros), values])
    all_vectors = matrix.new_zeros(size, size)
    all_vectors[dropped, torch.arange(zeros, device=matrix.device)] = 1
    all_vectors[kept[:, None], torch.arange(zeros, size, device=matrix.device)] = vectors
    return all_values, all_vectors, {"driver": driver, "zero_rows": zeros}


def _eigenpairs(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``torch.linalg.eigh``, or where it fails to converge (LAPACK's divide and conquer can, on many
    repeated eigenvalues) the singular value decomposition, which for a positive semi-definite matrix
    gives the same eigenpairs, reordered to ascending values; and which of the two gave them."""
    try:
        values, vectors = torch.linalg.eigh(matrix)
        return values, vectors, "eigh"
    except torch.linalg.LinAlgError:
        vectors, values, _ = torch.linalg.svd(matrix)
        order = values.argsort()
        return values[order], vectors[:, order], "svd"


Sums = Callable[["_Pass", torch.Tensor, torch.Tensor], dict[str, "torch.Tensor | Block"]]


def _accumulate(total: dict[str, torch.Tensor], key: str, value: torch.Tensor | Block, wide: torch.device) -> None:
    """Add a batch's ``value`` to ``total[key]``, a float64 sum on ``wide``."""
    if isinstance(value, Block):
        if key not in total:
            total[key] = torch.zeros(value.size, value.size, dtype=torch.float64, device=wide)
        index = value.index.to(wide)
        total[key][index[:, None], index] += widened(value.value, wide)
    elif key in total:
        total[key].add_(widened(value, wide))
    else:
        first = widened(value, wide)  # a copy of its own: a batch may return one tensor under two keys
        total[key] = first.clone() if first is value else first


@dataclass
class _Pass:
    """One pass over the training data in chunks and batches, summing what ``sums`` returns per batch.

    ``block`` is this process's rows (all of them alone); the returned sums are over all processes'.
    """

    model: nn.Module
    modules: dict[str, nn.Module]
    task: Task
    inputs: torch.Tensor
    labels: torch.Tensor
    config: FitConfig
    checkpoint: Checkpoint | None
    block: slice | None = None

    def run(self, stage: str, sums: Sums) -> dict[str, torch.Tensor]:
        block = slice(0, len(self.inputs)) if self.block is None else self.block
        wide = sum_device(self.inputs.device)
        name = checkpoint_stage(stage)
        total, done = {}, 0  # done: rows of the block summed so far
        saved = self.checkpoint.load(name) if self.checkpoint is not None else None
        if saved is not None:
            total, done = {key: value.to(wide) for key, value in saved[0].items()}, saved[1]
            advance(done)
        uniforms = self._uniforms(stage)  # the stage alone: the same draws whatever the number of processes
        size = self.config.chunk_size
        for start in range(block.start + done, block.stop, size):
            stop = min(start + size, block.stop)
            for first in range(start, stop, self.config.batch_size):
                rows = slice(first, min(first + self.config.batch_size, stop))
                for key, value in sums(self, rows, uniforms).items():
                    _accumulate(total, key, value, wide)
                advance(rows.stop - rows.start)
            if self.checkpoint is not None:
                self.checkpoint.save(name, total, stop - block.start)
        return distributed.all_sum(total)  # every process's block, before any division or eigh

    def _uniforms(self, stage: str) -> torch.Tensor | None:
        """One row of uniforms per example, fixed by the seed and the pass; None for the empirical Fisher.

        Each pass draws its own labels, as kronfluence does: reusing the covariance pass's draws in the
        eigenvalue correction fits the corrected eigenvalues to the same few off-label draws that shaped
        the eigenbasis (a confident model draws another label for a handful of examples only), which
        lowered the LDS of true-Fisher EK-FAC on the digits MLP from kronfluence's 0.35 to 0.29
        (benchmarks/influence_quality.py).
        """
        if self.config.fisher == "empirical":
            return None
        with torch.no_grad():
            width = self.model(self.inputs[:1]).reshape(1, -1).shape[1]
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + zlib.crc32(stage.encode()))
        # drawn on the CPU, so that a seed gives the same labels on every device; every row: indexed globally
        return torch.rand(len(self.inputs), width, generator=generator, device="cpu")

    def captured(self, rows: slice, uniforms: torch.Tensor | None) -> dict[str, Captured]:
        """Activations and output gradients of the training loss on ``rows`` (Fisher labels)."""
        labels = self.labels[rows]

        def objective(outputs: torch.Tensor) -> torch.Tensor:
            if uniforms is None:
                return self.task.loss(outputs, labels)
            return self.task.loss(outputs, self.task.sample_targets(outputs, uniforms[rows].to(outputs.device)))

        return capture(self.model, self.modules, self.inputs[rows], objective)[0]


@dataclass(frozen=True)
class Block:
    """A sum that fills only the rows and columns ``index`` of a (size, size) matrix (zero elsewhere)."""

    value: torch.Tensor
    index: torch.Tensor
    size: int


def _covariance_sums(data: _Pass, rows: slice, uniforms: torch.Tensor | None) -> dict[str, torch.Tensor | Block]:
    out: dict[str, torch.Tensor | Block] = {}
    for name, seen in data.captured(rows, uniforms).items():
        a, g = seen.activations, seen.gradients.flatten(0, 1)
        count = torch.tensor(float(a.shape[0] * a.shape[1]), dtype=torch.float64, device=a.device)
        support, size = seen.support(), a.shape[2]
        if support is not None:  # the other columns are zero padding
            a = a.index_select(2, support)
        a = a.flatten(0, 1)
        covariance = a.T @ a
        out.update({f"{name}/A": covariance if support is None else Block(covariance, support, size),
                    f"{name}/S": g.T @ g, f"{name}/A_count": count, f"{name}/S_count": count})
    return out


def _lambda_sums(factors: Factors) -> Sums:
    """Per batch: sum_i (Q_S^T G_i Q_A)^2 (ekfac) or sum_i G_i^2 (diagonal), elementwise."""
    bases: dict[str, Basis] = {}

    def sums(data: _Pass, rows: slice, uniforms: torch.Tensor | None) -> dict[str, torch.Tensor]:
        out = {}
        for name, seen in data.captured(rows, uniforms).items():
            dtype = seen.output_gradients[0].dtype
            if name not in bases:  # the eigenvectors in the passes' dtype, on their device, once
                bases[name] = compute_basis(factors, name, dtype, data.inputs.device)
            rotated = rotate(seen, bases[name], dtype)
            squares = rotated.square_sum()
            if rotated.columns is not None:  # the other columns' (rotated) gradients are zero
                squares = squares.new_zeros(factors.shapes[name]).index_copy_(1, rotated.columns, squares)
            out[f"{name}/lambda"] = squares
        return out

    return sums


def compute_basis(factors: Factors, name: str, dtype: torch.dtype, device: torch.device) -> Basis:
    """The module's eigenvectors in ``dtype`` on ``device`` (no basis for diagonal or identity)."""
    if factors.strategy not in ("kfac", "ekfac"):
        return Basis()
    return Basis(factors.module(name, "S_vectors"), lambda rows: factors.module_rows(name, "A_vectors", rows),
                 dtype, device)


def sum_device(device: torch.device) -> torch.device:
    """Where float64 sums and eigendecompositions run: ``device``, or the CPU for MPS (no float64)."""
    return torch.device("cpu") if device.type == "mps" else device


def widened(value: torch.Tensor, wide: torch.device) -> torch.Tensor:
    """``value`` in float64 on ``wide``: moved first (MPS has no float64), then converted."""
    return value.to(wide).to(torch.float64)


def _exact_sums(data: _Pass, rows: slice, uniforms: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per batch: sum_i g_i g_i^T over flattened gradients, weighted over labels for the true Fisher."""
    wide = sum_device(data.inputs.device)
    if data.config.fisher == "empirical":
        flat = widened(flat_gradients(data.captured(rows, None)), wide)
        return {"exact/fisher": flat.T @ flat}
    with torch.no_grad():
        outputs = data.model(data.inputs[rows])
    fisher = 0
    for targets, weights in data.task.fisher_outcomes(outputs):
        seen = capture(data.model, data.modules, data.inputs[rows], lambda out, t=targets: data.task.loss(out, t))[0]
        flat = widened(flat_gradients(seen), wide) * widened(weights, wide).sqrt()[:, None]
        fisher = fisher + flat.T @ flat
    return {"exact/fisher": fisher}


def flat_gradients(captured: dict[str, Captured]) -> torch.Tensor:
    """Per-example gradients of every tracked module, flattened and concatenated: (B, D)."""
    return torch.cat([seen.per_example().flatten(1) for seen in captured.values()], dim=1)

