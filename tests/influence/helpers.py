"""Reference per-example gradients (torch.func), tiny models and file-safety probes for the influence tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from xaibench.influence.tracking import gradient_matrix


class SequenceMLP(nn.Module):
    """A Linear applied to every position of (B, T, D) inputs, then pooled: several positions per example."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 5)
        self.head = nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.inner(x)).mean(1))


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 2, bias=False),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).double()


def padded_cnn(seed: int = 0) -> nn.Module:
    """Convolutions on maps so small that zero padding fills some kernel taps at every position: on (2, 3, 3)
    inputs, "0" sees 2x2 outputs (every tap used somewhere: 4 positions), "2" a 1x1 output reading 4 of 9
    taps, "4" a 1x1 map reading only its centre tap (as a ResNet-18's layer4 at 32x32)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(),
                         nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.Tanh(),
                         nn.Conv2d(4, 5, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(5, 3)).double()


def autograd_gradients(model: nn.Module, modules: dict[str, nn.Module], inputs: torch.Tensor,
                       targets: torch.Tensor, loss) -> dict[str, torch.Tensor]:
    """Per-example gradient matrices (B, out, in[+1]) of ``loss`` on each example alone, by torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p: dict, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss(functional_call(model, p, (x[None],)), t[None])

    per = vmap(grad(one), in_dims=(None, 0, 0))(params, inputs, targets)
    return {name: torch.stack([gradient_matrix(module, per[f"{name}.weight"][i],
                                               per.get(f"{name}.bias", [None] * len(inputs))[i])
                               for i in range(len(inputs))])
            for name, module in modules.items()}


class PickledMarker:
    """A pickle payload: unpickling it creates the file ``marker`` (proof that a loader ran it)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (self.marker, "w")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its kind and content (link target, file bytes), to prove no write."""
    state: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            state[key] = ("link", os.readlink(path))
        elif path.is_dir():
            state[key] = ("dir",)
        else:
            state[key] = ("file", path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state
