"""Scale-out on torch.distributed: the same commands under ``torchrun``.

``torchrun --nproc-per-node N -m xaibench explain ...`` starts N copies of a command with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set. ``session`` joins them into a process group: nccl
when the command runs on CUDA (each process on ``cuda:LOCAL_RANK``, see ``xaibench.core.devices``), gloo
otherwise, with a timeout, so a rank that dies becomes a one-line error on the others instead of a hang
(``XAIBENCH_DIST_TIMEOUT`` seconds, default 600; it also bounds how long a process waits at a gather for
a slower one). nccl would by default end the whole process when a collective times out; xaibench sets
``TORCH_NCCL_ASYNC_ERROR_HANDLING=2`` (abort the communicator and raise) unless the user set it, so the
timeout stays a one-line error. Every rank loads the model
and the data (cheap and deterministic); each computes its contiguous block of samples (``shard_rows``);
the blocks are gathered in rank order, which is the original sample order; only rank 0 writes.

Randomness stays the same whatever the number of processes: per-sample seeds are drawn for the whole
batch on every rank and each rank keeps its block's (``xaibench.attribution.draws.sampled_shard``), and
draws shared by the batch come from the same generator state on every rank.

Launched alone (no WORLD_SIZE above 1) every helper is the identity and torch.distributed is never
touched; torch is imported only when a process group exists, so listings stay light.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from xaibench.core.errors import InputError, RunFailedError, first_line

TIMEOUT_ENV = "XAIBENCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
MAX_TIMEOUT = 365 * 86400.0  # a year; gloo's clock overflows somewhere below a million days
T = TypeVar("T")


class DistributedError(RunFailedError):
    """A process group that could not form, or a collective that failed (a rank died or hangs)."""


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


LAUNCH_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several (WORLD_SIZE above 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise InputError(f"WORLD_SIZE must be a number, got {os.environ['WORLD_SIZE']!r}") from None


def launched_rank() -> str | None:
    """This process's RANK as the launcher set it, without touching torch; None when not launched."""
    try:
        return os.environ.get("RANK", "?") if launched() else None
    except InputError:
        return None


def world() -> World:
    """The process group's rank and size; rank 0 of 1 when there is none."""
    if "torch" not in sys.modules:  # no torch yet: no process group either
        return World()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def timeout() -> float:
    """Seconds from ``XAIBENCH_DIST_TIMEOUT`` (default 600).

    Raises:
        InputError: not a number, or not in (0, ``MAX_TIMEOUT``]: NaN, zero or a negative timeout would
            fail every collective at once, and a huge one overflows the process group's clock.
    """
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT:  # False for NaN too
        raise InputError(f"{TIMEOUT_ENV} must be a positive number of seconds (at most {MAX_TIMEOUT:.0f}), "
                         f"got {text!r}")
    return seconds


def on_cuda(args: list[str]) -> bool:
    """Whether the command line ``args`` runs on CUDA here: ``--device cuda[:N]``, or ``auto`` (the
    default) on a machine whose torch sees this process's GPU (``LOCAL_RANK``)."""
    spec = "auto"
    for i, arg in enumerate(args):
        if arg == "--device" and i + 1 < len(args):
            spec = args[i + 1]
        elif arg.startswith("--device="):
            spec = arg.partition("=")[2]
    spec = spec.strip().lower()
    if spec.startswith("cuda"):
        return True
    if spec != "auto":
        return False
    import torch

    local = os.environ.get("LOCAL_RANK", "0")
    return torch.cuda.is_available() and local.isdigit() and int(local) < torch.cuda.device_count()


@contextmanager
def session(cuda: bool = False) -> Iterator[World]:
    """Join the process group a launcher describes, for the block (nccl when ``cuda``, else gloo);
    nothing when launched alone."""
    if not launched():
        yield World()
        return
    missing = [name for name in LAUNCH_VARIABLES if not os.environ.get(name)]
    if missing:
        raise InputError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start the "
                         "command with torchrun (or unset WORLD_SIZE)")
    import torch
    import torch.distributed as dist

    if cuda:
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout()))
    except (RuntimeError, ValueError) as err:
        raise DistributedError(f"cannot join the process group within {timeout():g} s ({TIMEOUT_ENV}): "
                               f"{first_line(err)}") from None
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def shard_rows(n: int, of: World | None = None, check: int | None = None) -> slice:
    """This rank's contiguous block of ``n`` rows (blocks differ in size by at most one).

    Args:
        check: samples to explain; fewer than processes is an InputError (a rank with nothing to do
            would still have to join every collective of the method).
    """
    w = of or world()
    if check is not None and check < w.size:
        raise InputError(f"{check} samples on {w.size} processes: give at least one sample per process")
    return slice(w.rank * n // w.size, (w.rank + 1) * n // w.size)


def _collective(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except RuntimeError as err:  # gloo / nccl report a dead or silent peer as RuntimeError subclasses
        raise DistributedError(f"{what} failed, another process died or did not answer "
                               f"within {timeout():g} s ({TIMEOUT_ENV}): {first_line(err)}") from None


def gather_rows(local: Any, n: int) -> Any:
    """The blocks of every rank (``local`` is this rank's ``shard_rows(n)``), concatenated in rank order:
    the (n, ...) tensor a single process would have, on every rank."""
    w = world()
    if w.size == 1:
        return local
    import torch
    import torch.distributed as dist

    blocks = [shard_rows(n, World(r, w.size)) for r in range(w.size)]
    sizes = [block.stop - block.start for block in blocks]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=_wire())
    padded[:local.shape[0]] = local.to(padded.device)
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    _collective("gathering results", lambda: dist.all_gather(parts, padded))
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]).to(local.device)


def all_sum(tensors: dict[str, Any]) -> dict[str, Any]:
    """Each tensor summed over the ranks (in place and returned), on every rank."""
    if world().size == 1:
        return tensors
    import torch.distributed as dist

    for key in sorted(tensors):  # the same order on every rank
        moved = tensors[key].to(_wire()).contiguous()
        _collective("summing statistics", lambda moved=moved: dist.all_reduce(moved))
        tensors[key] = moved.to(tensors[key].device)
    return tensors


def _wire() -> Any:
    """The device the process group's collectives take tensors on: this process's GPU under nccl."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_objects(value: Any) -> list[Any]:
    """``value`` from every rank, in rank order (picklable Python objects: notes, transcripts)."""
    w = world()
    if w.size == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    _collective("gathering notes", lambda: dist.all_gather_object(out, value))
    return out


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable Python object: a fitted bank, a run directory name)."""
    if world().size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    _collective("sharing rank 0's result", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def barrier() -> None:
    if world().size > 1:
        import torch.distributed as dist

        _collective("waiting for the other processes", dist.barrier)
