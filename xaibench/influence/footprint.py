"""What influence's passes keep per row and per query, for the memory budget (``xaibench.core.memory``).

The budget's row cost measures the bytes autograd saves for a model's backward pass; an influence pass
keeps more: the output gradients of every tracked module at once, then, one module at a time, its
unfolded activations, their rotated copies, per-example gradient matrices where a module has several
positions, and the products with the preconditioned query gradients. The query side keeps each query's
preconditioned gradient of every module (on the training support columns) for a whole pass over the
training data. The sizes follow from one probing forward pass of a single sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from xaibench.influence.eigenbasis import by_pairs
from xaibench.influence.tracking import Captured, select_modules, tracked


@dataclass(frozen=True)
class ModuleShape:
    """One tracked module on one sample: positions P, input columns (all, support) and outputs."""

    positions: int
    ins: int
    support: int
    outs: int


@dataclass(frozen=True)
class Footprint:
    """Bytes per row of the passes and per query of the query side, for a model on samples of one shape."""

    modules: tuple[ModuleShape, ...]
    element: int  # bytes per element of the model's dtype
    exact_width: int  # tracked parameters when the exact strategy could run on them, else 0

    @classmethod
    def of(cls, model: nn.Module, sample: torch.Tensor, exact_limit: int) -> Footprint:
        """Probe ``model`` on ``sample`` (one row, batch axis included) over all its trackable modules,
        an upper bound for any subset that ``--modules`` tracks."""
        modules = select_modules(model)
        with tracked(modules) as records, torch.no_grad():
            model(sample)
        shapes = []
        for name, seen in records.items():
            captured = Captured(modules[name], tuple(x for x, _ in seen), ())
            positions, ins = captured.activations.shape[1:]
            support = captured.support()
            outs = sum(out[0].numel() for _, out in seen) // positions
            shapes.append(ModuleShape(int(positions), int(ins), int(ins if support is None else len(support)),
                                      int(outs)))
        element = next((p.element_size() for p in model.parameters()), 4)
        width = sum(m.outs * m.ins for m in shapes)
        return cls(tuple(shapes), element, width if width <= exact_limit else 0)

    def _outputs(self) -> int:
        return sum(m.positions * m.outs for m in self.modules)

    def training_row(self, queries: int = 0) -> int:
        """A training pass (fit, self-influence, pairwise against ``queries`` queries at once)."""
        def one(m: ModuleShape) -> int:
            sides = 2 * m.positions * (m.ins + m.support + 2 * m.outs)
            pairs = (m.positions + 32) * (m.ins + m.outs) if by_pairs(m.positions) else 0
            matrices = 2 * m.outs * m.ins if m.positions > 1 else 0
            products = min(queries * m.positions, m.positions + queries + 100) * m.outs
            return sides + pairs + matrices + products
        return self.element * (self._outputs() + max(map(one, self.modules))) + 16 * self.exact_width

    def query_row(self) -> int:
        """A pass of query gradients being preconditioned: rotated matrices and their products."""
        def one(m: ModuleShape) -> int:
            return 2 * m.positions * (m.ins + m.support + 2 * m.outs) + 3 * m.outs * m.ins
        return self.element * (self._outputs() + max(map(one, self.modules))) + 16 * self.exact_width

    def query(self) -> int:
        """One query's preconditioned gradients, kept for a whole pass over the training data."""
        return self.element * sum(m.outs * m.support for m in self.modules) + 8 * self.exact_width
