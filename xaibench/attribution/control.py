"""Control attributions: what a method should beat."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench._lazy import lazy_import
from xaibench.attribution.base import METHODS, Method
from xaibench.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@METHODS.register("random")
class Random(Method):
    """Standard normal noise of the input's shape: the chance level for every metric (the random
    baseline of Adebayo et al., 2018 and of the BEE and LLM-explainer comparisons).
    """

    category = "control"
    needs_gradients = False
    stochastic = True
    description = "standard normal noise, a chance-level control"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Method.Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        # Drawn all at once on the CPU generator, so the batching cannot change the values.
        noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)
        advance(inputs.shape[0])
        return noise.to(inputs.device)
