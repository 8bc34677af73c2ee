"""Where a job computes: ``--device auto|cpu|cuda|cuda:N|mps``, resolved once per job.

"auto" takes a CUDA GPU when torch sees one, else Apple's MPS, else the CPU. Under ``torchrun`` every
process on a GPU machine takes its own GPU, ``cuda:LOCAL_RANK`` (for "auto" and "cuda"; an explicit
"cuda:N" is taken as given). The model, the data and everything a method, metric, policy, concept
factorisation or influence factor creates live on that device; results come back to the CPU only to be
written.

Random draws do not depend on the device: they are made by CPU generators and moved
(``xaibench.attribution.draws``), because torch's CUDA and CPU generators give different numbers for
the same seed. What may still differ between devices is float rounding (other kernels, other
summation orders), never which noise, masks or baselines were drawn.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(spec: str | None = "auto") -> torch.device:
    """The device ``spec`` names on this machine.

    Raises:
        InputError: an unknown name, or a device this machine does not have (no CUDA, a CUDA index
            past the last GPU, no MPS).
    """
    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return _cuda(_local_rank(), "auto")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise InputError("--device mps: this machine has no MPS device (Apple GPU); use cpu or auto")
        return torch.device("mps")
    if text == "cuda":
        return _cuda(_local_rank(), text)
    if text.startswith("cuda:") and text[5:].isdigit():
        return _cuda(int(text[5:]), text)
    raise InputError(f"--device must be {CHOICES}, got {spec!r}")


def _cuda(index: int, asked: str) -> torch.device:
    """``cuda:index`` when this machine has it; InputError naming what was ``asked`` and what it has."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(f"--device {asked}: torch sees no CUDA GPU here (a CPU build of torch, or no driver); "
                         "use cpu or auto")
    if index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        rank = f" (LOCAL_RANK {index})" if asked in ("auto", "cuda") else ""
        raise InputError(f"--device {asked}{rank}: this machine has {count} CUDA GPU{'s' * (count > 1)} ({have})")
    return torch.device("cuda", index)


def _local_rank() -> int:
    """This process's GPU index under torchrun (LOCAL_RANK), 0 when launched alone."""
    text = os.environ.get("LOCAL_RANK", "0")
    if not text.isdigit():
        raise InputError(f"LOCAL_RANK must be a process index, got {text!r}")
    return int(text)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def require_float64(device: torch.device, what: str) -> torch.device:
    """``device`` when it computes in float64; MPS does not, and ``what`` needs it (an InputError)."""
    if device.type == "mps":
        raise InputError(f"{what} computes in float64, which MPS does not have; use --device cpu")
    return device


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 where ``device`` computes in it, float32 on MPS (which has no float64): for state that a
    method keeps in high precision where it can."""
    return torch.float32 if device.type == "mps" else torch.float64


def decomposition_device(device: torch.device) -> torch.device:
    """Where ``torch.linalg`` decompositions (SVD, eigh) of tensors on ``device`` run: the CPU for MPS,
    which has no kernels for them, else ``device``."""
    return torch.device("cpu") if device.type == "mps" else device


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s first parameter (else buffer) lives; the CPU for a module without any."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def on_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of ``tensors`` (as safetensors writes them), keys unchanged."""
    return {key: value.detach().cpu().contiguous() for key, value in tensors.items()}


def device_record(requested: str | None, device: torch.device) -> dict[str, Any]:
    """What run.json keeps under "device": what was asked, what ran, and the GPU's name."""
    record: dict[str, Any] = {"requested": requested or "auto", "device": str(device)}
    if device.type == "cuda":
        record["name"] = torch.cuda.get_device_name(device)
    return record
