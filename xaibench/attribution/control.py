"""Control attributions: what a method should beat."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xaibench._lazy import lazy_import
from xaibench.attribution.base import METHODS, Method, row_slices
from xaibench.errors import IncompatibleError
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


@METHODS.register("coefficients")
class Coefficients(Method):
    """A linear model's coefficients for the target class: the ground truth of the agreement metrics on
    a logistic regression (OpenXAI, Agarwal et al. 2022, and the LLM-explainer study of Kroeger et al.
    2023 take a logistic regression's coefficients as the true importances).

    With logits W x + b it returns, for target t, the gradient of the target's margin over the mean of
    the other logits, W_t - mean_{j != t} W_j: for two classes W_t - W_other, the coefficient vector of
    the log-odds. The model must be affine in its input: the gradient is checked to be the same at the
    input and at zero, else the method refuses (on a non-linear model this is no ground truth).
    """

    category = "control"
    description = "a linear model's coefficients for the target class, the agreement ground truth"

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Method.Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        out = torch.empty_like(inputs)
        for rows in row_slices(inputs.shape[0], batch_size):
            at_input = _margin_gradient(model, inputs[rows], target[rows])
            at_zero = _margin_gradient(model, torch.zeros_like(inputs[rows]), target[rows])
            if not torch.allclose(at_input, at_zero, rtol=1e-4, atol=1e-6 * float(at_zero.abs().max()) + 1e-8):
                raise IncompatibleError("coefficients are a ground truth for linear models only; this model's "
                                        "gradient changes with the input")
            out[rows] = at_input
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
