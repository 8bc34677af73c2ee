"""Relative stability metrics (Agarwal et al., 2022, "Rethinking Stability for Attribution-based
Explanations", arXiv 2203.06877): the relative change of the explanation divided by the change of the
input (RIS), of the logits (ROS) or of an internal representation (RRS), maximised over perturbations
that keep the predicted class.

For a perturbed input x' with explanation e(x'), the numerator is ||(e(x) - e(x')) / e(x)||_2, the
division element-wise with zero elements of e(x) replaced by ``eps_min`` (as Quantus does). The
denominators: ``max(||(x - x') / x||_2, eps_min)`` (RIS); ``max(||h(x) - h(x')||_2, eps_min)`` with h
the logits (ROS: an absolute change, as Quantus implements the paper's definition);
``max(||(L(x) - L(x')) / L(x)||_2, eps_min)`` with L an internal representation (RRS); zero elements of
x and L(x) are replaced by ``eps_min``. Perturbations are Quantus's: x + u with u ~ U(0.02, 0.2) per
element (a one-sided shift: Quantus passes upper_bound=0.2 and keeps the noise function's lower bound
0.02). The explainer explains each copy for the sample's target; e(x) is the explanation being scored.

Differences from Quantus: the score is the maximum over the perturbations that keep the predicted
class, NaN only when none does; Quantus marks the others NaN and takes ``np.max``, so one changed
prediction makes the whole sample NaN. Denominators are clamped at ``eps_min`` as the paper writes
(Quantus adds ``eps_min`` only to exact zeros). Quantus draws 200 perturbations; 10 here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.robustness import perturbed_explanations, sample_norm, uniform_perturbation

from xaibench.attribution.layers import find_layer
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.models.layers import require_hooks

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")


@dataclasses.dataclass(frozen=True)
class StabilityParams:
    """samples: perturbed copies per input; low, high: the noise added to every element is drawn from
    U(low, high) (Quantus's bounds); eps_min: the smallest denominator, and the value that replaces
    zeros in element-wise divisions."""

    samples: int = 10
    low: float = 0.02
    high: float = 0.2
    eps_min: float = 1e-6


def relative_norm(reference: torch.Tensor, other: torch.Tensor, eps_min: float, dims: int) -> torch.Tensor:
    """``||(reference - other) / reference||_2`` over the last ``dims`` axes, zeros of ``reference``
    replaced by ``eps_min`` in the division; float64."""
    reference = reference.double()
    safe = torch.where(reference == 0, torch.full_like(reference, eps_min), reference)
    return sample_norm((reference - other.double()) / safe, dims)


@contextmanager
def captured_outputs(modules: list[torch.nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Collects the flattened tensor outputs of ``modules`` during forward passes inside the block;
    the hooks are always removed on exit."""
    outputs: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.detach().flatten(1).double())

    handles = [module.register_forward_hook(keep) for module in modules]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class RelativeStability(Metric):
    """The shared computation; subclasses say what changes in the denominator (``_quantity``)."""

    category = "robustness"
    higher_is_better = False
    needs_explainer = True
    stochastic = True
    #: whether the denominator is the relative change of the quantity (RIS, RRS) or its change (ROS)
    relative: ClassVar[bool] = True
    Params = StabilityParams

    def _quantity(self, batch: MetricInputs, params: StabilityParams,
                  x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (rows, classes) and the compared quantity (rows, D) of the rows ``x``, no gradients."""
        raise NotImplementedError

    def _forward(self, batch: MetricInputs, params: StabilityParams,
                 x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self._quantity(batch, params, x[rows]) for rows in row_slices(x.shape[0], batch.batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _compute(self, batch: MetricInputs, params: StabilityParams,
                 generator: torch.Generator) -> MetricResult:
        _check(params, self.name)
        logits, quantity = self._forward(batch, params, batch.inputs)
        predicted = logits.argmax(dim=1)
        ratios = torch.empty((batch.n, params.samples), dtype=torch.float64, device="cpu")
        perturb = uniform_perturbation(params.low, params.high, params.samples)
        chunks = perturbed_explanations(batch, params.samples, perturb, generator)
        for samples, points, explanations in chunks:
            ratios[samples] = self._ratios(batch, params, points, explanations, batch.attributions[samples],
                                           predicted[samples], quantity[samples]).cpu()
        return MetricResult(scores=_nan_max(ratios))

    def _ratios(self, batch: MetricInputs, params: StabilityParams, points: torch.Tensor,
                explanations: torch.Tensor, attributions: torch.Tensor, predicted: torch.Tensor,
                quantity: torch.Tensor) -> torch.Tensor:
        """The objective per perturbed copy of a chunk of samples, (s, K); NaN where the predicted
        class changed. ``points`` and ``explanations`` are (s, K, *S), the rest per sample."""
        numerator = relative_norm(attributions.unsqueeze(1), explanations, params.eps_min, points.ndim - 2)
        new_logits, new_quantity = self._forward(batch, params, points.flatten(0, 1))
        before = quantity.repeat_interleave(params.samples, dim=0)
        change = (relative_norm(before, new_quantity, params.eps_min, 1) if self.relative
                  else sample_norm(before - new_quantity, 1))
        ratio = numerator / change.view_as(numerator).clamp_min(params.eps_min)
        kept = new_logits.argmax(dim=1).view_as(numerator) == predicted[:, None]
        return torch.where(kept, ratio, torch.full_like(ratio, float("nan")))


def _check(params: StabilityParams, name: str) -> None:
    if params.samples < 1 or params.eps_min <= 0 or params.high < params.low:
        raise InputError(f"{name} needs samples >= 1, eps_min > 0 and high >= low")


def _nan_max(values: torch.Tensor) -> torch.Tensor:
    """Maximum over the last axis ignoring NaN; NaN where all are NaN."""
    finite = ~values.isnan()
    best = torch.where(finite, values, torch.full_like(values, -float("inf"))).amax(dim=-1)
    return torch.where(finite.any(dim=-1), best, torch.full_like(best, float("nan")))


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).double()


@METRICS.register("relative_input_stability")
class RelativeInputStability(RelativeStability):
    """Relative input stability, RIS (Agarwal et al., 2022; Quantus RelativeInputStability): the
    maximum over perturbations x' that keep the predicted class of ||(e(x) - e(x')) / e(x)||_2 /
    max(||(x - x') / x||_2, eps_min). Lower is better. Conventions and differences from Quantus: see
    the module docstring."""

    description = "max relative explanation change / relative input change (Agarwal et al. 2022)"

    def _quantity(self, batch: MetricInputs, params: StabilityParams,
                  x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _logits(batch.model, x), x.flatten(1).double()


@METRICS.register("relative_output_stability")
class RelativeOutputStability(RelativeStability):
    """Relative output stability, ROS (Agarwal et al., 2022; Quantus RelativeOutputStability): the
    maximum over perturbations x' that keep the predicted class of ||(e(x) - e(x')) / e(x)||_2 /
    max(||h(x) - h(x')||_2, eps_min), h the logits. Lower is better. Conventions and differences from
    Quantus: see the module docstring."""

    description = "max relative explanation change / logit change (Agarwal et al. 2022)"
    relative = False

    def _quantity(self, batch: MetricInputs, params: StabilityParams,
                  x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = _logits(batch.model, x)
        return logits, logits


@METRICS.register("relative_representation_stability")
class RelativeRepresentationStability(RelativeStability):
    """Relative representation stability, RRS (Agarwal et al., 2022; Quantus
    RelativeRepresentationStability): the maximum over perturbations x' that keep the predicted class of
    ||(e(x) - e(x')) / e(x)||_2 / max(||(L(x) - L(x')) / L(x)||_2, eps_min). Lower is better.

    L(x) is the output of the module named ``layer`` (dotted, as in ``named_modules``), captured with a
    forward hook. The paper leaves the representation open; by default, as Quantus does, L(x) is the
    concatenation of the outputs of every leaf module (Quantus takes every module that is not a
    Sequential container, the same set for Sequential models). Other conventions and differences from
    Quantus: see the module docstring.
    """

    description = "max relative explanation change / relative representation change (Agarwal et al. 2022)"

    @dataclasses.dataclass(frozen=True)
    class Params(StabilityParams):
        """As the other relative stability metrics; layer: the module whose output is the
        representation; None for the outputs of all leaf modules."""

        layer: str | None = None

    def _quantity(self, batch: MetricInputs, params: Params,
                  x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with captured_outputs(_representation_modules(batch.model, params.layer)) as outputs:
            logits = _logits(batch.model, x)
        if not outputs:
            raise InputError(f"{self.name}: the chosen layers produced no tensor output")
        return logits, torch.cat(outputs, dim=1)


def _representation_modules(model: torch.nn.Module, layer: str | None) -> list[torch.nn.Module]:
    require_hooks(model)
    if layer is not None:
        return [find_layer(model, layer)[1]]
    return [module for name, module in model.named_modules() if name and not any(module.children())]
