"""A ``torch.export`` program as an ordinary module, so that attribution code treats it like any other.

Two differences from a plain module are hidden here: the module that ``ExportedProgram.module()``
returns refuses ``train()`` / ``eval()`` (its behaviour was fixed when it was exported), and a program
exported without a dynamic batch dimension only accepts the example's batch size.
"""

from __future__ import annotations

import torch
from torch import nn


class ExportedModule(nn.Module):
    """Wraps the module of an exported program.

    Args:
        program: ``ExportedProgram.module()``.
        batch_size: the batch size the program was specialised to, or None when the batch dimension
            is dynamic. With a fixed size, inputs run in chunks of that size, the last chunk padded
            with zeros whose outputs are dropped (rows do not interact in a classifier's forward).
    """

    def __init__(self, program: nn.Module, batch_size: int | None) -> None:
        super().__init__()
        self.program = program
        self.batch_size = batch_size

    def train(self, mode: bool = True) -> ExportedModule:
        """Only sets the flag: the exported graph keeps the mode it was exported in."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_size is None or x.shape[0] == self.batch_size:
            return self.program(x)
        outputs = []
        for part in x.split(self.batch_size):
            pad = self.batch_size - part.shape[0]
            if pad:
                part = torch.cat([part, part.new_zeros((pad, *part.shape[1:]))])
            outputs.append(self.program(part)[: self.batch_size - pad])
        return torch.cat(outputs)


def fixed_batch_size(program: torch.export.ExportedProgram) -> int | None:
    """The batch size a single-input program was specialised to; None if dynamic or not knowable."""
    names = program.graph_signature.user_inputs
    if len(names) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            value = node.meta.get("val")
            if isinstance(value, torch.Tensor) and value.dim() > 0 and isinstance(value.shape[0], int):
                return int(value.shape[0])
    return None
