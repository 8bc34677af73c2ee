"""Control attributions: what a method should beat."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.draws import draw_normal, sample_generators, sample_seeds
from xaibench.core.batches import row_slices
from xaibench.core.errors import IncompatibleError, InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

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
        # Each sample from a generator of its own: neither the batching nor a shard changes the values.
        generators = sample_generators(sample_seeds(generator, inputs.shape[0]), slice(None))
        noise = draw_normal(generators, inputs.shape[1:], inputs.dtype)
        advance(inputs.shape[0])
        return noise.to(inputs.device)


@METHODS.register("coefficients")
class Coefficients(Method):
    """A linear model's coefficients for the target class: the ground truth of the agreement metrics on
    a logistic regression (OpenXAI, Agarwal et al. 2022, and the LLM-explainer study of Kroeger et al.
    2023 take a logistic regression's coefficients as the true importances).

    With logits W x + b it returns, for target t, the gradient of the target's margin over the mean of
    the other logits, W_t - mean_{j != t} W_j: for two classes W_t - W_other, the coefficient vector of
    the log-odds. ``scale=range`` multiplies each by its feature's range over the training data: the
    importance a perturbation by a share of every feature's range reveals, which is what the llm
    method's neighbourhood shows (on inputs min-max scaled before training, as in the paper, the two
    orders agree).

    The model must be affine in its input: the gradient is checked to be the same at the inputs, at
    zero, at the inputs negated and ten times larger, and at large random points (a fixed seed, not the
    caller's generator), else the method refuses, since on a non-linear model this is no ground truth.
    A check on a few points is not a proof, but a ReLU network passes it only by accident.
    """

    modalities = ("image", "tabular", "sequence")  # not text: a linear model's coefficients
    category = "control"
    description = "a linear model's coefficients for the target class, the agreement ground truth"
    reference_count = None  # scale=range: the range over all the training data

    @dataclasses.dataclass(frozen=True)
    class Params:
        """scale: none (per unit of the model's input) or range (times each feature's training range)."""

        scale: str = "none"
        references: object = None

    def wants_references(self, params: dict[str, Any]) -> bool:
        return str(params.get("scale", "none")) == "range"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Any,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if params.scale not in ("none", "range"):
            raise InputError(f"scale must be none or range, got {params.scale!r}")
        span = torch.ones(inputs.shape[1:], device=inputs.device)
        if params.scale == "range":
            if params.references is None:
                raise InputError("scale=range needs training samples (xaibench explain and evaluate supply them)")
            references = params.references.to(inputs).flatten(1)
            span = (references.max(dim=0).values - references.min(dim=0).values).view(inputs.shape[1:])
        probes = torch.Generator().manual_seed(0)
        out = torch.empty_like(inputs)
        for rows in row_slices(inputs.shape[0], batch_size):
            x, t = inputs[rows], target[rows]
            gradient = _margin_gradient(model, x, t)
            size = 10 * (1 + float(x.abs().max()))
            probe = torch.randn(x.shape, generator=probes, device="cpu").to(x)  # drawn on the CPU, as every draw
            for point in (torch.zeros_like(x), -x, 10 * x, size * probe):
                other = _margin_gradient(model, point, t)
                if not torch.allclose(gradient, other, rtol=1e-4, atol=1e-6 * float(gradient.abs().max()) + 1e-8):
                    raise IncompatibleError("coefficients are a ground truth for linear models only; this "
                                            "model's gradient changes with the input")
            out[rows] = gradient * span.to(gradient)
            advance(rows.stop - rows.start)
        return out


def _margin_gradient(model: torch.nn.Module, points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = points.detach().requires_grad_(True)
        logits = model(x)
        picked = logits.gather(1, target[:, None])[:, 0]
        others = (logits.sum(dim=1) - picked) / max(logits.shape[1] - 1, 1)
        (grad,) = torch.autograd.grad((picked - others).sum(), x)
    return grad
