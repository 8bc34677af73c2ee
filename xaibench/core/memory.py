"""The memory budget of one pass, and the rows per pass it allows.

One knob bounds memory everywhere: the rows (samples, path points, noise copies, perturbed copies) that
go through the model in one forward or backward pass. ``--batch-size`` sets it directly; otherwise every
job derives it from a budget in bytes for one pass: ``--max-memory``, else the ``XAIBENCH_MAX_MEMORY``
environment variable, else a share of the free memory of the device the model runs on (a quarter of the
free RAM, at most 512 MiB, on a CPU; half of the free memory of a GPU).

A row's cost is measured, not guessed: ``row_bytes`` runs the model on one and on two copies of a sample
under autograd's saved-tensor hooks and counts the bytes each pass keeps for backward; the difference is
one row's activations (weights, saved in both, cancel). This works for every model format, TorchScript
and exported programs included, because autograd saves tensors the same way for all of them. On the
shapes CNN the measured peak of a forward and backward pass on CPU was 1.06-1.23x the saved bytes for
256-1024 rows; the margin below (a quarter more, plus four copies of the input row for the input, its
gradient and the perturbed or interpolated copy a method builds) keeps the estimate above the peak.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import InputError, XaibenchWarning
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

ENV_VAR = "XAIBENCH_MAX_MEMORY"
CPU_SHARE = 0.25  # of the free RAM: the rest is the process itself, its data and the other programs
CPU_CAP = 512 << 20  # larger passes are no faster on a CPU and would only raise the peak (benchmarks/memory_budget.py)
FALLBACK = CPU_CAP  # when the free memory cannot be read
GPU_SHARE = 0.5  # of the free device memory: a GPU needs wide passes to be fast
SAVED_MARGIN = 1.25
INPUT_COPIES = 4

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
SMALLEST = 1 << 20


def parse_size(text: str, source: str) -> int:
    """Bytes from ``512M``, ``2G``, ``1.5GiB``, ``2GB`` or a plain number of bytes.

    K, M, G and T (and KiB, MiB, GiB, TiB) are powers of 1024; KB, MB, GB and TB powers of 1000.

    Raises:
        InputError: not a size, or under 1 MiB (``source`` names the flag or variable).
    """
    match = _SIZE.fullmatch(text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise InputError(f"{source} takes a size like 512M, 2G or 1.5GiB, got {text!r}")
    size = int(float(match.group(1)) * unit)
    if size < SMALLEST:
        raise InputError(f"{source} must be at least 1M, got {text!r}")
    return size


def format_size(size: float) -> str:
    """``1073741824`` -> ``1.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Budget:
    """Bytes one pass may use and where that number came from (shown in run.json)."""

    bytes: int
    source: str


def resolve_budget(max_memory: str | None, device: torch.device | str = "cpu") -> Budget:
    """The budget from ``--max-memory``, else ``XAIBENCH_MAX_MEMORY``, else the device's default.

    Raises:
        InputError: a malformed size in the flag or the environment variable.
    """
    if max_memory is not None:
        return Budget(parse_size(max_memory, "--max-memory"), "--max-memory")
    if os.environ.get(ENV_VAR, "").strip():
        return Budget(parse_size(os.environ[ENV_VAR], ENV_VAR), ENV_VAR)
    return default_budget(torch.device(device))


def default_budget(device: torch.device) -> Budget:
    """A share of the free memory of ``device`` (see the module docstring)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return Budget(int(free * GPU_SHARE), "default: half of the GPU's free memory")
    if device.type == "mps":
        free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        return Budget(max(SMALLEST, int(free * GPU_SHARE)), "default: half of the GPU's free memory")
    free = free_ram()
    if free is None:
        return Budget(FALLBACK, "default: 512 MiB (the free memory could not be read)")
    return Budget(max(SMALLEST, min(CPU_CAP, int(free * CPU_SHARE))),
                  "default: a quarter of the free memory, at most 512 MiB")


def free_ram() -> int | None:
    """Bytes of RAM available to new allocations (Linux ``MemAvailable``, else free pages), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def row_bytes(forward: Callable[[torch.Tensor], Any], sample: torch.Tensor) -> int:
    """Bytes one row costs in a forward and backward pass of ``forward`` on rows like ``sample``.

    ``sample`` is one row with its batch axis, on the model's device. Measured as described in the
    module docstring; never below the input copies alone.
    """
    one = _saved_bytes(forward, sample)
    two = _saved_bytes(forward, torch.cat([sample, sample]))
    input_row = sample.numel() * sample.element_size()
    return int(SAVED_MARGIN * max(0, two - one)) + INPUT_COPIES * input_row


def _saved_bytes(forward: Callable[[torch.Tensor], Any], rows: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    inputs = rows.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward(inputs)
    return sum(storages.values())


@dataclass
class RowPlan:
    """Rows per pass for one job: ``batch_size`` when the user gave it, else what ``budget`` allows.

    ``rows(forward, sample)`` measures a row once per sample shape and caches it; ``record()`` is
    what run.json keeps under "memory".
    """

    batch_size: int | None
    budget: Budget | None
    _measured: dict[tuple[tuple[int, ...], int, int], tuple[int, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, batch_size: int | None, max_memory: str | None,
           device: torch.device | str = "cpu") -> RowPlan:
        """The plan for the flags: ``--batch-size`` wins; a budget is resolved only without it.

        Raises:
            InputError: a batch size under 1 or a malformed ``--max-memory`` / ``XAIBENCH_MAX_MEMORY``.
        """
        if batch_size is not None:
            if batch_size < 1:
                raise InputError(f"batch size must be at least 1, got {batch_size}")
            if max_memory is not None:
                raise InputError("give --batch-size or --max-memory, not both")
            return cls(batch_size, None)
        return cls(None, resolve_budget(max_memory, device))

    def rows(self, forward: Callable[[torch.Tensor], Any], sample: torch.Tensor, extra_row_bytes: int = 0,
             reserved: int = 0) -> int:
        """Rows per pass for rows shaped like ``sample`` (one row, batch axis included); a job that
        keeps more per row than the pass itself (influence's per-example gradients) adds
        ``extra_row_bytes``, and one that holds ``reserved`` bytes through its passes (influence's
        factors) leaves them out of the budget."""
        if self.batch_size is not None:
            return self.batch_size
        assert self.budget is not None
        key = (tuple(sample.shape[1:]), extra_row_bytes, reserved)
        if key not in self._measured:
            per_row = row_bytes(forward, sample[:1]) + extra_row_bytes
            left = self.budget.bytes - reserved
            self._measured[key] = (per_row, max(1, left // max(1, per_row)))
            if per_row > left:
                held = f" beside {format_size(reserved)} held" if reserved else ""
                warnings.warn(f"one row of shape {list(key[0])} needs about {format_size(per_row)}{held}, more "
                              f"than the memory budget of {format_size(self.budget.bytes)} ({self.budget.source}); "
                              "running one row per pass", XaibenchWarning, stacklevel=2)
        return self._measured[key][1]

    def record(self) -> dict[str, Any]:
        """``{"batch_size"}`` when given, else the budget, its source, and per measured sample shape
        the bytes of a row and the rows per pass chosen."""
        if self.budget is None:
            return {"batch_size": self.batch_size, "source": "--batch-size"}
        return {
            "budget_bytes": self.budget.bytes, "budget": format_size(self.budget.bytes),
            "source": self.budget.source,
            "passes": [{"sample_shape": list(shape), "row_bytes": per_row, "rows_per_pass": rows,
                        **({"held_bytes": held} if held else {})}
                       for (shape, _extra, held), (per_row, rows) in self._measured.items()],
        }

