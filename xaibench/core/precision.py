"""``--dtype``: the precision of a job's forward and backward passes.

float32 (the default) runs the model as it is. bfloat16 and float16 run the passes of methods and
metrics under ``torch.autocast`` on the job's device: matrix products and convolutions in the low
precision, reductions and losses in float32, inputs, gradients with respect to them and results in
float32. Methods and metrics whose result is an exact identity (DeepLift's summation to delta, the
axiomatic metrics' completeness checks) declare ``float32_only`` and are refused with another dtype:
their answer would be judged against a float32 identity it cannot meet. Influence functions and
concept extraction have no ``--dtype``: their eigendecompositions and factorisations run in float32 and
float64 by design.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

PRECISIONS = ("float32", "bfloat16", "float16")


def check_precision(name: str, parts: Iterable[Any] = ()) -> str:
    """``name`` when it is a known precision that every method or metric class in ``parts`` accepts.

    Raises:
        InputError: an unknown name, or a float32-only part with a lower precision.
    """
    if name not in PRECISIONS:
        raise InputError(f"--dtype must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name != "float32":
        exact = [part.name for part in parts if getattr(part, "float32_only", False)]
        if exact:
            verb = "needs" if len(exact) == 1 else "need"
            raise InputError(f"--dtype {name}: {', '.join(exact)} {verb} float32 (an exact identity that "
                             "low-precision passes cannot meet); run with --dtype float32")
    return name


@contextmanager
def autocast(name: str, device: torch.device) -> Iterator[None]:
    """Passes in the block run in precision ``name`` on ``device`` (nothing changes for float32)."""
    if name == "float32":
        with nullcontext():
            yield
        return
    with torch.autocast(device_type=device.type, dtype=getattr(torch, name)):
        yield
