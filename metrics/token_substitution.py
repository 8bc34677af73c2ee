"""Robustness of text explanations under token substitutions that keep the prediction.

Noise in embedding space (``avg_sensitivity`` and kin) makes inputs that are no text. Here each perturbed
copy of a text has ``tokens`` of its content tokens, at positions drawn uniformly without replacement,
replaced by tokens drawn uniformly from the vocabulary (special tokens left out), in the spirit of the
prediction-preserving perturbations of Alvarez-Melis & Jaakkola (2018) and Yeh et al. (2019). Copies
whose predicted class differs from the original text's are discarded, so only explanations of texts the
model reads the same way are compared. A copy's sensitivity is ||a(x') - a(x)||_2 / ||a(x)||_2 over the
token scores (each attribution summed over the embedding); a sample's score is the maximum over its kept
copies (``reduce=max``, as max-sensitivity) or their mean, NaN when no copy kept the prediction (left out
of summaries and counted). Lower is better.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.robustness import Perturb, perturbed_explanations

from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

REDUCTIONS = ("max", "mean")


@dataclasses.dataclass(frozen=True)
class SubstitutionParams:
    """samples: perturbed copies per text; tokens: content tokens substituted in each copy; reduce:
    max or mean over the copies that keep the prediction."""

    samples: int = 10
    tokens: int = 1
    reduce: str = "max"


def substituted(vectors: torch.Tensor, choices: torch.Tensor, copies: int, tokens: int) -> Perturb:
    """A perturbation for ``perturbed_explanations``: ``tokens`` positions of each copy set to the vectors
    of tokens drawn from ``choices`` (ids into ``vectors``, (V, D))."""

    def perturb(inputs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        length = inputs.shape[-1]
        out = inputs.unsqueeze(1).repeat(1, copies, 1, 1)  # (s, K, D, L)
        for i, generator in enumerate(generators):  # the draws only: one generator per sample
            positions = torch.rand((copies, length), generator=generator, device="cpu").argsort(dim=1)[:, :tokens]
            picks = choices[torch.randint(choices.numel(), (copies, tokens), generator=generator, device="cpu")]
            rows = torch.arange(copies, device="cpu")[:, None].expand(-1, tokens)
            out[i, rows.to(out.device), :, positions.to(out.device)] = vectors[picks.to(vectors.device)].to(out)
        return out

    return perturb


@METRICS.register("substitution_sensitivity")
class SubstitutionSensitivity(Metric):
    """Change of a text's token scores when a few tokens are substituted and the prediction is kept; see
    the module docstring. Lower is better."""

    category = "robustness"
    higher_is_better = False
    modalities = ("text",)
    needs_explainer = True
    stochastic = True
    description = "Max relative change of token scores under random token substitutions that keep the prediction."
    Params = SubstitutionParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.reduce not in REDUCTIONS:
            raise UnknownNameError.for_name("reduce", params.reduce, list(REDUCTIONS), where=f"metric {self.name!r}")
        length = batch.inputs.shape[-1]
        if params.samples < 1 or not 1 <= params.tokens <= length:
            raise InputError(f"samples must be at least 1 and tokens between 1 and the text length {length}")
        model = batch.model
        perturb = substituted(model.token_vectors(), model.substitutes(), params.samples, params.tokens)
        original = batch.attributions.sum(dim=1).double()  # token scores (N, L)
        labels = _predictions_of(model, batch.inputs.unsqueeze(1), batch.batch_size).squeeze(1)
        scores = torch.full((batch.n,), float("nan"), dtype=torch.float64, device="cpu")
        for samples, points, explanations in perturbed_explanations(batch, params.samples, perturb, generator):
            kept = _predictions_of(model, points, batch.batch_size) == labels[samples, None].to(points.device)
            change = (explanations.sum(dim=2).double() - original[samples, None]).flatten(2).norm(dim=2)
            relative = (change / original[samples].norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu()
            relative = relative.masked_fill(~kept.cpu(), float("nan"))
            reduced = relative.nan_to_num(-1.0).amax(dim=1) if params.reduce == "max" else relative.nanmean(dim=1)
            scores[samples] = reduced.masked_fill(~kept.any(dim=1).cpu(), float("nan"))
        return MetricResult(scores)


def _predictions_of(model: torch.nn.Module, points: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    """Predicted class of each copy (s, K, *S) -> (s, K), in passes of at most ``batch_size`` rows."""
    flat = points.flatten(0, 1)
    with torch.no_grad():
        labels = torch.cat([model(flat[rows]).argmax(dim=1) for rows in row_slices(flat.shape[0], batch_size)])
    return labels.view(points.shape[:2])
