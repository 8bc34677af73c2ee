"""A ``torch.export`` program as an ordinary module, so that attribution code treats it like any other.

The module is the program unflattened (``exported_layers.unflattened``): the eager model's layer names,
standard layers restored, forward hooks that fire. A program exported without a dynamic batch dimension
was specialised to its example's batch size; most graphs still compute the same thing for any number of
rows, which ``runs_any_batch`` establishes before the size check is dropped. Where it cannot be shown,
inputs run in chunks of the fixed size, and methods that hook layers are refused
(``xaibench.models.layers.require_hooks``): a hook would see padded chunks instead of the batch.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from xaibench.core.devices import module_device
from xaibench.models.exported_layers import leafspec_notice_ignored, unflattened

PROBE_SEED = 0  # the random rows on which the batched and the chunked forward must agree


class ExportedModule(nn.Module):
    """The unflattened module tree of an exported program behind one forward.

    The wrapper shares the tree's children, parameters and buffers (the very dicts), so its
    ``named_modules`` are the eager model's names, and device moves and copies see one set of tensors.

    Args:
        root: ``exported_layers.unflattened(program)``.
        batch_size: the batch size the program runs at only, or None when it runs at any. With a fixed
            size, inputs run in chunks of that size, the last chunk padded with zeros whose outputs are
            dropped (rows do not interact in a classifier's forward).
        sample_shape: the shape of one row that a static program, freed of its batch size check, was
            exported for and still requires; None where the program checks its inputs itself.
    """

    def __init__(self, root: nn.Module, batch_size: int | None,
                 sample_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.batch_size, self.sample_shape = batch_size, sample_shape
        self.__dict__.update(root=root, _modules=root._modules, _parameters=root._parameters,
                             _buffers=root._buffers)

    def train(self, mode: bool = True) -> ExportedModule:
        """Sets the flags only: the exported graph keeps the mode it was exported in."""
        self.training = mode
        self.root.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sample_shape is not None and tuple(x.shape[1:]) != self.sample_shape:
            raise RuntimeError(f"the exported program takes inputs of shape (N, "
                               f"{', '.join(map(str, self.sample_shape))}), not {tuple(x.shape)}")
        if self.batch_size is None or x.shape[0] == self.batch_size:
            return self.root(x)
        return in_chunks(self.root, x, self.batch_size)

    def __deepcopy__(self, memo: dict[int, Any]) -> ExportedModule:
        """A copy whose graphs share their metadata with the original's: it holds example tensors of
        symbolic sizes, which cannot be copied, and running never writes to it."""
        for module in self.root.modules():
            graph = getattr(module, "graph", None)
            for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
                memo.setdefault(id(node.meta), node.meta)
        meta = getattr(self.root, "meta", None)  # the program's graph metadata (unflatten shares it)
        if meta is not None:
            memo.setdefault(id(meta), meta)
        clone = ExportedModule.__new__(ExportedModule)
        memo[id(self)] = clone
        with leafspec_notice_ignored():
            clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone


def in_chunks(module: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """``module`` run on rows of ``x`` in chunks of exactly ``size`` rows, the last padded with zeros."""
    outputs = []
    for part in x.split(size):
        pad = size - part.shape[0]
        if pad:
            part = torch.cat([part, part.new_zeros((pad, *part.shape[1:]))])
        outputs.append(module(part)[: size - pad])
    return torch.cat(outputs)


def exported_module(program: torch.export.ExportedProgram) -> ExportedModule:
    """The program as an ``ExportedModule``, running at any batch size where that is shown to be sound."""
    root = unflattened(program)
    size = fixed_batch_size(program)
    probe = None if size is None else _example(program, size + 1, module_device(root))
    if probe is not None and runs_any_batch(root, probe, size):
        root.check_input_constraints = False  # it would refuse other batch sizes: the wrapper checks the rest
        return ExportedModule(root, None, tuple(probe.shape[1:]))
    return ExportedModule(root, size)


def runs_any_batch(root: nn.Module, probe: torch.Tensor, size: int) -> bool:
    """Whether the graph, specialised to ``size`` rows, computes the same for any number of rows.

    Two checks on ``probe`` (a batch of another size): exporting the graph again with a symbolic batch
    size succeeds (no operation bakes in the example's size, or torch.export refuses to generalise it),
    and the batched forward equals the chunked one (the output has a row per input row, rows unmixed).
    """
    checks = getattr(root, "check_input_constraints", None)
    root.check_input_constraints = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.export(_Call(root), (probe,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        with torch.no_grad():
            whole, parts = root(probe), in_chunks(root, probe, size)
        return whole.shape == parts.shape and torch.allclose(whole, parts, rtol=1e-4, atol=1e-5)
    except Exception:  # noqa: BLE001 (any failure to generalise, of whatever type torch raises)
        return False
    finally:
        root.check_input_constraints = checks


class _Call(nn.Module):
    """``root`` behind a forward of one named argument, as ``dynamic_shapes`` needs to address it."""

    def __init__(self, root: nn.Module) -> None:
        super().__init__()
        self.root = root

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.root(x)


def fixed_batch_size(program: torch.export.ExportedProgram) -> int | None:
    """The batch size a single-input program was specialised to; None if dynamic or not knowable."""
    value = _input(program)
    if value is not None and value.dim() > 0 and isinstance(value.shape[0], int):
        return int(value.shape[0])
    return None


def _input(program: torch.export.ExportedProgram) -> torch.Tensor | None:
    """The example (a fake tensor) of a single-input program's input; None for other programs."""
    names = program.graph_signature.user_inputs
    if len(names) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            value = node.meta.get("val")
            return value if isinstance(value, torch.Tensor) else None
    return None


def _example(program: torch.export.ExportedProgram, rows: int, device: torch.device) -> torch.Tensor | None:
    """Random rows (zeros for integer inputs) on ``device``, shaped as the program's input but for the
    batch (drawn on the CPU, the same on any device); None when another axis is dynamic too."""
    value = _input(program)
    if value is None or not all(isinstance(n, int) for n in value.shape[1:]):
        return None
    shape = (rows, *value.shape[1:])
    if not value.dtype.is_floating_point:
        return torch.zeros(shape, dtype=value.dtype, device=device)
    draws = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randn(shape, generator=draws, device="cpu").to(device, value.dtype)
