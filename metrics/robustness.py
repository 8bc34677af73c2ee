"""Robustness metrics: how much an explanation changes when the input changes slightly.

Each metric draws ``samples`` perturbed copies of every input, recomputes the explanation of each copy
with the explainer and compares it with the explanation being scored. The copies of a few samples go
to the explainer together, in calls of at most ``batch_size`` rows (``perturbed_explanations``, which
the stability metrics share). A sample's noise comes from its own generator seeded from the metric's
generator, so scores do not depend on ``batch_size``. Norms are L2 norms over all elements of a sample
(Quantus's Frobenius norm of the flattened map), computed in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.perturb import explain_rows

from xaibench.attribution.draws import draw_normal, draw_uniform, sample_generators, sample_seeds
from xaibench.attribution.path import sample_chunks
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

#: perturb(inputs of a chunk of samples (s, *S), one generator per sample) -> copies (s, K, *S)
Perturb = Callable[["torch.Tensor", "list[torch.Generator]"], "torch.Tensor"]


# ---------------------------------------------------------------------------------------------
# shared machinery


def perturbed_explanations(batch: MetricInputs, copies: int, perturb: Perturb,
                           generator: torch.Generator) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """For chunks of samples: the slice, the perturbed copies (s, K, *S) and their explanations.

    Each sample draws its copies from its own generator (one seed per sample from ``generator``); the
    explanations are towards the sample's target.
    """
    seeds = sample_seeds(generator, batch.n)
    for samples in sample_chunks(batch.n, copies, batch.batch_size):
        points = perturb(batch.inputs[samples], sample_generators(seeds, samples))
        rows = batch.target[samples].repeat_interleave(copies)
        explanations = explain_rows(batch, batch.model, points.flatten(0, 1), rows)
        yield samples, points, explanations.view_as(points)
        advance(samples.stop - samples.start)


def uniform_perturbation(low: float, high: float, copies: int) -> Perturb:
    """``x + u`` with every element of ``u`` drawn from U(low, high)."""

    def perturb(inputs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        unit = draw_uniform(generators, (copies, *inputs.shape[1:]), inputs.dtype).to(inputs.device)
        return inputs.unsqueeze(1) + unit.mul_(high - low).add_(low)

    return perturb


def gaussian_perturbation(std: float, copies: int) -> Perturb:
    """``x + n`` with every element of ``n`` drawn from N(0, std^2)."""

    def perturb(inputs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        noise = draw_normal(generators, (copies, *inputs.shape[1:]), inputs.dtype).to(inputs.device)
        return inputs.unsqueeze(1) + noise.mul_(std)

    return perturb


def sample_norm(values: torch.Tensor, sample_dims: int) -> torch.Tensor:
    """L2 norm over the last ``sample_dims`` axes, in float64."""
    return values.double().flatten(-sample_dims).norm(dim=-1)


def _require_samples(samples: int, name: str) -> None:
    if samples < 1:
        raise InputError(f"{name} needs samples >= 1, got {samples}")


# ---------------------------------------------------------------------------------------------
# sensitivity


@dataclasses.dataclass(frozen=True)
class SensitivityParams:
    """samples: perturbed copies per input; radius: the noise is uniform in [-radius, radius] per
    element (an L-infinity ball; Quantus's default radius)."""

    samples: int = 10
    radius: float = 0.2


def relative_changes(batch: MetricInputs, params: SensitivityParams,
                     generator: torch.Generator) -> torch.Tensor:
    """``||e(x) - e(x')|| / ||e(x)||`` per perturbation, (N, samples); NaN rows where e(x) = 0."""
    _require_samples(params.samples, "sensitivity")
    if params.radius <= 0:
        raise InputError(f"sensitivity needs radius > 0, got {params.radius}")
    dims = batch.inputs.ndim - 1
    base_norm = sample_norm(batch.attributions, dims)
    out = torch.empty((batch.n, params.samples), dtype=torch.float64, device="cpu")
    perturb = uniform_perturbation(-params.radius, params.radius, params.samples)
    for samples, _, explanations in perturbed_explanations(batch, params.samples, perturb, generator):
        change = sample_norm(explanations - batch.attributions[samples].unsqueeze(1), dims)
        out[samples] = (change / base_norm[samples, None]).cpu()
    # the relative change of an all-zero explanation is undefined
    return torch.where(base_norm[:, None].cpu() > 0, out, torch.full_like(out, float("nan")))


@METRICS.register("max_sensitivity")
class MaxSensitivity(Metric):
    """Max-sensitivity (Yeh et al., 2019, "On the (In)fidelity and Sensitivity of Explanations",
    NeurIPS): the maximum over ``samples`` inputs x' drawn uniformly from the L-infinity ball of
    ``radius`` around x of the relative change ||e(x) - e(x')||_2 / ||e(x)||_2, where e(x) is the
    explanation being scored and e(x') the explainer's explanation of x' for the same target. Lower
    is better.

    As Quantus (MaxSensitivity) and captum (``sensitivity_max``) compute it: the paper's unnormalised
    ||e(x) - e(x')|| is divided by ||e(x)|| so that the score does not depend on the explanation's
    scale. Quantus's radius 0.2 (captum's is 0.02) with 10 samples (Quantus draws 200). Where
    ||e(x)|| = 0 the score is NaN, the relative change being undefined: captum divides by 1 there
    and Quantus by 0 (inf, or NaN when e(x') = 0 too).
    """

    category = "robustness"
    higher_is_better = False
    needs_explainer = True
    stochastic = True
    description = "max relative change of the explanation under uniform noise (Yeh et al. 2019)"
    Params = SensitivityParams

    def _compute(self, batch: MetricInputs, params: SensitivityParams,
                 generator: torch.Generator) -> MetricResult:
        return MetricResult(scores=relative_changes(batch, params, generator).amax(dim=1))


@METRICS.register("avg_sensitivity")
class AvgSensitivity(Metric):
    """Avg-sensitivity (Yeh et al., 2019, NeurIPS): as ``max_sensitivity`` (same perturbations, norms
    and conventions; Quantus's AvgSensitivity), the mean instead of the maximum of the relative
    change ||e(x) - e(x')||_2 / ||e(x)||_2 over the perturbed inputs. Lower is better.
    """

    category = "robustness"
    higher_is_better = False
    needs_explainer = True
    stochastic = True
    description = "mean relative change of the explanation under uniform noise (Yeh et al. 2019)"
    Params = SensitivityParams

    def _compute(self, batch: MetricInputs, params: SensitivityParams,
                 generator: torch.Generator) -> MetricResult:
        return MetricResult(scores=relative_changes(batch, params, generator).mean(dim=1))


# ---------------------------------------------------------------------------------------------
# local Lipschitz estimate


@METRICS.register("local_lipschitz")
class LocalLipschitz(Metric):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018, "On the Robustness of Interpretability
    Methods", ICML WHI workshop): the maximum over ``samples`` inputs x' = x + N(0, std^2) noise of
    ||e(x) - e(x')||_2 / ||x - x'||_2, where e(x) is the explanation being scored and e(x') the
    explainer's explanation of x' for the same target. Lower is better. Quantus's noise (std 0.1) with
    10 samples (Quantus draws 200); unlike Quantus's default (normalise=True) the explanations are
    not rescaled by their maximum, so the estimate is in the explanation's own units, and no 1e-10 is
    added to the denominator (std > 0 makes ||x - x'|| positive).
    """

    category = "robustness"
    higher_is_better = False
    needs_explainer = True
    stochastic = True
    description = "max ||e(x)-e(x')|| / ||x-x'|| under Gaussian noise (Alvarez-Melis & Jaakkola 2018)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """samples: perturbed copies per input; std: standard deviation of the Gaussian noise."""

        samples: int = 10
        std: float = 0.1

    def _compute(self, batch: MetricInputs, params: Params, generator: torch.Generator) -> MetricResult:
        _require_samples(params.samples, self.name)
        if params.std <= 0:
            raise InputError(f"{self.name} needs std > 0, got {params.std}")
        dims = batch.inputs.ndim - 1
        out = torch.empty((batch.n, params.samples), dtype=torch.float64, device="cpu")
        perturb = gaussian_perturbation(params.std, params.samples)
        chunks = perturbed_explanations(batch, params.samples, perturb, generator)
        for samples, points, explanations in chunks:
            change = sample_norm(explanations - batch.attributions[samples].unsqueeze(1), dims)
            distance = sample_norm(points - batch.inputs[samples].unsqueeze(1), dims)
            out[samples] = (change / distance).cpu()
        return MetricResult(scores=out.amax(dim=1))
