"""Running a per-sample attribution in chunks of rows, with progress, or sample by sample with seeds;
calling captum with the CPU as default device."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from xaibench.attribution.draws import sample_seeds, seeded
from xaibench.core.batches import row_slices
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


# captum's notices about its own bookkeeping (it enables input gradients and sets hooks itself): not
# something a user can act on.
_CAPTUM_NOTICES = (
    r"Input Tensor \d+ did not already require gradients",
    r"Setting forward, backward hooks and attributes on non-linear",
    r"Setting backward hooks on ReLU activations",
)


@contextmanager
def quiet_captum() -> Iterator[None]:
    """Hide captum's bookkeeping warnings (other warnings still show)."""
    with warnings.catch_warnings():
        for notice in _CAPTUM_NOTICES:
            warnings.filterwarnings("ignore", message=notice, category=UserWarning)
        yield


def captum_attribute(explainer: Any, /, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``explainer.attribute(*args, **kwargs)`` of a captum method, with the CPU as the default device.

    captum creates its own tensors without a device (integrated gradients' step sizes, Lime's and
    Kernel SHAP's masks, Shapley sampling's permutations) and moves them to the inputs' device itself;
    its random draws come from the default device's generator. Under the CPU default, as captum expects,
    a caller's ``torch.set_default_device`` changes neither where they land nor what a seed draws.
    """
    if torch.get_default_device().type == "cpu":  # the usual case: no device mode on every torch call
        return explainer.attribute(*args, **kwargs)
    with torch.device("cpu"):
        return explainer.attribute(*args, **kwargs)


def map_chunks(
    inputs: torch.Tensor, rows_per_chunk: int | None, attribute: Callable[[slice], torch.Tensor]
) -> torch.Tensor:
    """``attribute(rows)`` for consecutive row slices of ``inputs``, assembled into one tensor.

    Reports each finished chunk's sample count to ``xaibench.core.progress``.
    """
    out = torch.empty_like(inputs)
    for rows in row_slices(inputs.shape[0], rows_per_chunk):
        with quiet_captum():
            out[rows] = attribute(rows).detach()
        advance(rows.stop - rows.start)
    return out


def map_seeded_samples(
    inputs: torch.Tensor, generator: torch.Generator, attribute: Callable[[slice], torch.Tensor]
) -> torch.Tensor:
    """``attribute(rows)`` one sample at a time, each under its own seed of torch's global RNG.

    For captum methods that draw from the global RNG: one seed per sample from ``generator`` makes the
    result reproducible and independent of how the samples are batched.
    """
    seeds = sample_seeds(generator, inputs.shape[0])
    out = torch.empty_like(inputs)
    for i, seed in enumerate(seeds):
        with seeded(seed), quiet_captum():
            out[i : i + 1] = attribute(slice(i, i + 1)).detach()
        advance(1)
    return out
