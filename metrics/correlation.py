"""Correlation-style faithfulness: faithfulness correlation and estimate, monotonicity (Arya; Nguyen's
correlation) and sensitivity-n. Each compares the relevance of groups of input elements
(``perturb.group_ids``; a group's relevance is the sum of its attribution) with how the target score
changes when the groups are replaced. Copies are scored through ``perturb.perturbed_scores``; step
metrics build at most ``batch_size`` copies at a time. Random draws come from one generator per sample
(``sample_seeds``), kept across steps, so they do not depend on ``batch_size``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from xaibench.metrics.base import METRICS, Metric, MetricInputs, MetricResult
from xaibench.metrics.perturb import (
    batched_scores,
    blockwise_scores,
    group_ids,
    group_relevance,
    perturbed_scores,
    removal_ranks,
    substrate,
)
from xaibench.metrics.stats import pearson, spearman

from xaibench.attribution.draws import draw_uniform, sample_generators, sample_seeds
from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

DEFAULT_STEPS = 64  # features_in_step=None: ceil(groups / 64) groups per step
QUANTUS_SUBSET_SIZE = 224  # Quantus's FaithfulnessCorrelation default, the cap of ours


# ---------------------------------------------------------------------------------------------
# helpers shared with infidelity.py


def element_mask(group_mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Spread a per-copy group mask (s, K, G) over the elements: bool (s, K, *S)."""
    flat = group_mask[..., ids.flatten().to(group_mask.device)]
    return flat.view(*group_mask.shape[:2], *ids.shape[1:])


def substituted(inside: torch.Tensor, outside: torch.Tensor, group_mask: torch.Tensor,
                ids: torch.Tensor) -> torch.Tensor:
    """Copies (s, K, *S) taking ``inside`` on the masked groups and ``outside`` elsewhere.

    ``inside`` and ``outside`` are one tensor per sample (s, *S) or one per copy (s, K, *S).
    """
    mask = element_mask(group_mask, ids).to(outside.device)
    per_copy = mask.ndim
    inside = inside if inside.ndim == per_copy else inside.unsqueeze(1)
    outside = outside if outside.ndim == per_copy else outside.unsqueeze(1)
    return torch.where(mask, inside, outside)


def unperturbed_scores(batch: MetricInputs, output: str) -> torch.Tensor:
    """f(x) of every sample, (N,) on the CPU."""
    return batched_scores(batch.model, batch.inputs, batch.target, output, batch.batch_size).cpu()


def per_sample_generators(generator: torch.Generator, n: int) -> list[torch.Generator]:
    """One generator per sample, seeded from ``generator``: draws that do not depend on batching."""
    return sample_generators(sample_seeds(generator, n), slice(None))


@dataclasses.dataclass(frozen=True)
class Chunks:
    """Groups in a relevance order, ``features_in_step`` to a chunk: ids (1, *S), relevance (N, G),
    of_group (N, G) the chunk of every group (0 first), count chunks (the last may be smaller)."""

    ids: torch.Tensor
    relevance: torch.Tensor
    of_group: torch.Tensor
    count: int

    @classmethod
    def of(cls, batch: MetricInputs, params: Any, order: str, use_abs: bool = False) -> Chunks:
        """Chunks of ``params.patch`` groups in ``order`` (morf / lerf) of the relevance of the
        attributions (of their absolute values with ``use_abs``); features_in_step=None makes
        ceil(G / DEFAULT_STEPS) groups a chunk."""
        ids = group_ids(batch.inputs, params.patch)
        relevance = group_relevance(batch.attributions.abs() if use_abs else batch.attributions, ids)
        n_groups = relevance.shape[1]
        per_step = params.features_in_step
        if per_step is None:
            per_step = math.ceil(n_groups / DEFAULT_STEPS)
        if per_step < 1:
            raise InputError(f"features_in_step must be at least 1, got {per_step}")
        ranks = removal_ranks(relevance, order)
        return cls(ids, relevance, ranks // per_step, math.ceil(n_groups / per_step))

    def sums(self) -> torch.Tensor:
        """Relevance summed over the groups of each chunk, (N, count) on the CPU."""
        out = torch.zeros((self.relevance.shape[0], self.count), dtype=torch.float64,
                          device=self.relevance.device)
        return out.scatter_add_(1, self.of_group, self.relevance).cpu()

    def steps(self, block: slice) -> torch.Tensor:
        """Chunk indices of ``block``, shaped (1, len, 1) to compare with ``of_group[:, None, :]``."""
        return torch.arange(block.start, block.stop, device=self.of_group.device)[None, :, None]


def random_subsets(generators: Sequence[torch.Generator], runs: int, n_groups: int,
                   size: int) -> torch.Tensor:
    """Bool (s, runs, G): per sample, ``runs`` subsets of ``size`` groups drawn uniformly without
    replacement (the ``size`` smallest of U(0, 1) keys, drawn as ``rand((runs, G))``)."""
    keys = draw_uniform(generators, (runs, n_groups), torch.float64)
    picks = keys.topk(size, dim=-1, largest=False, sorted=False).indices  # a set: no full sort
    return torch.zeros(keys.shape, dtype=torch.bool, device=keys.device).scatter_(-1, picks, True)


@dataclasses.dataclass(frozen=True)
class SubsetRemoval:
    """Random subsets of groups set to ``fill``, shared by faithfulness correlation and sensitivity-n:
    ``generators`` one per sample, drawn from in call order; ``original`` f(x), (N,)."""

    batch: MetricInputs
    relevance: torch.Tensor
    ids: torch.Tensor
    fill: torch.Tensor
    generators: list[torch.Generator]
    original: torch.Tensor
    output: str

    def correlation(self, runs: int, size: int) -> torch.Tensor:
        """Per sample, the Pearson correlation over ``runs`` random subsets of ``size`` groups between
        the subset's relevance and the score drop f(x) - f(x~), (N,)."""
        sums = torch.empty((self.batch.n, runs), dtype=torch.float64, device="cpu")

        def build(samples: slice) -> torch.Tensor:
            chosen = random_subsets(self.generators[samples], runs, self.relevance.shape[1], size)
            sums[samples] = (self.relevance[samples].cpu().unsqueeze(1) * chosen).sum(-1)
            return substituted(self.fill[samples], self.batch.inputs[samples],
                               chosen.to(self.relevance.device), self.ids)

        drops = self.original[:, None] - perturbed_scores(self.batch, runs, build, self.output)
        return pearson(sums, drops)

    @classmethod
    def prepare(cls, batch: MetricInputs, params: Any, generator: torch.Generator) -> SubsetRemoval:
        """Groups, substrate and per-sample generators from ``params`` (patch, substrate, output)."""
        if params.runs < 2:
            raise InputError(f"a correlation needs runs >= 2, got {params.runs}")
        ids = group_ids(batch.inputs, params.patch)
        fill = substrate(batch.inputs, params.substrate, generator=generator)
        return cls(batch, group_relevance(batch.attributions, ids), ids, fill,
                   per_sample_generators(generator, batch.n), unperturbed_scores(batch, params.output),
                   params.output)


# ---------------------------------------------------------------------------------------------
# metrics


@METRICS.register("faithfulness_correlation")
class FaithfulnessCorrelation(Metric):
    """Faithfulness correlation (Bhatt, Weller & Moura, "Evaluating and Aggregating Feature-based Model
    Explanations", IJCAI 2020), as Quantus's ``FaithfulnessCorrelation`` computes it.

    For ``runs`` random subsets S of ``subset_size`` groups set to the substrate (Quantus's "black":
    the sample's minimum), the Pearson correlation over the runs of the relevance of S with the drop
    of the target logit f(x) - f(x~) (Quantus's default, softmax off). Differences from Quantus:
    groups (a pixel across all channels by default) instead of elements of the flattened input (the
    same for one-channel images); the subset size defaults to a third of the groups capped at
    Quantus's 224, so that it also works for a few tabular features.
    """

    higher_is_better = True
    stochastic = True
    description = "correlation of subset relevance with the output drop on removal (Bhatt 2020)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """runs: random subsets per sample; subset_size: groups per subset (None: a third of the
        groups, at least 1 and at most 224); substrate: what removed groups become (zero, black,
        white, mean, blur, uniform); patch: group side (1: single pixels, steps or features);
        output: the score that drops (logit, probability, top1)."""

        runs: int = 100
        subset_size: int | None = None
        substrate: str = "black"
        patch: int = 1
        output: str = "logit"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        removal = SubsetRemoval.prepare(batch, params, generator)
        n_groups = removal.relevance.shape[1]
        size = (min(QUANTUS_SUBSET_SIZE, max(1, n_groups // 3)) if params.subset_size is None
                else params.subset_size)
        if not 1 <= size <= n_groups:
            raise InputError(f"subset_size must be between 1 and the {n_groups} groups, got {size}")
        return MetricResult(scores=removal.correlation(params.runs, size))


@dataclasses.dataclass(frozen=True)
class StepParams:
    """features_in_step: groups per step (None: ceil(groups / 64), at most 64 steps); substrate: what
    removed groups become (zero, black, white, mean, blur, uniform); patch: group side; output: the
    score read (logit, probability, top1)."""

    features_in_step: int | None = None
    substrate: str = "black"
    patch: int = 1
    output: str = "logit"


@METRICS.register("faithfulness_estimate")
class FaithfulnessEstimate(Metric):
    """Faithfulness estimate (Alvarez-Melis & Jaakkola, "Towards Robust Interpretability with
    Self-Explaining Neural Networks", NeurIPS 2018), as Quantus's ``FaithfulnessEstimate`` computes it.

    Groups in descending relevance, ``features_in_step`` at a time; each chunk alone (not
    cumulatively) is set to the substrate; the score is the Pearson correlation of the chunks'
    relevance with the drops of the target logit f(x) - f(x~): Pearson, as the paper and Quantus's
    code (its docstring says Spearman). Differences from Quantus: groups instead of flattened elements
    (equal for one-channel images); any ``features_in_step`` (Quantus needs a divisor of the size);
    at most 64 chunks by default instead of one per element, to bound the cost on large inputs.
    """

    higher_is_better = True
    description = "correlation of chunk relevance with the drop when each chunk is removed (Alvarez-Melis)"
    Params = StepParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        chunks = Chunks.of(batch, params, "morf")
        fill = substrate(batch.inputs, params.substrate, generator=generator)

        def build(samples: slice, block: slice) -> torch.Tensor:
            alone = chunks.of_group[samples, None, :] == chunks.steps(block)
            return substituted(fill[samples], batch.inputs[samples], alone, chunks.ids)

        drops = unperturbed_scores(batch, params.output)[:, None] - blockwise_scores(
            batch, chunks.count, build, params.output)
        return MetricResult(scores=pearson(chunks.sums(), drops))


@dataclasses.dataclass(frozen=True)
class MonotonicityParams(StepParams):
    """As StepParams; abs: order groups by the relevance of |attribution| (Quantus's default);
    output defaults to the target probability, as Quantus and Arya et al.'s AIX360 code read it."""

    abs: bool = True
    output: str = "probability"


@METRICS.register("monotonicity")
class Monotonicity(Metric):
    """Monotonicity (Arya et al., "One Explanation Does Not Fit All", arXiv 1909.03012, 2019; Quantus
    ``Monotonicity``; the rule of their AIX360 ``monotonicity_metric``).

    From the all-substrate input, groups get their input values back in ascending relevance,
    ``features_in_step`` at a time; the target probability is read after each step (not at the
    start). Score 1.0 if it never decreases (every difference >= 0), else 0.0. Deliberate difference
    from Quantus 0.6.0: it fills the chosen elements of the all-baseline input with the baseline
    again, so the input never changes and every sample scores 1.0 (the tests show it); here groups
    take their input values, as the paper and AIX360 do. Groups, at most 64 steps by default.
    """

    higher_is_better = True
    description = "1 if the prediction never drops as groups are added in ascending relevance (Arya 2019)"
    Params = MonotonicityParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        chunks = Chunks.of(batch, params, "lerf", params.abs)  # chunk 0: least relevant, put back first
        fill = substrate(batch.inputs, params.substrate, generator=generator)

        def build(samples: slice, block: slice) -> torch.Tensor:
            restored = chunks.of_group[samples, None, :] <= chunks.steps(block)
            return substituted(batch.inputs[samples], fill[samples], restored, chunks.ids)

        scores = blockwise_scores(batch, chunks.count, build, params.output)
        return MetricResult(scores=(scores.diff(dim=1) >= 0).all(dim=1).double())


@dataclasses.dataclass(frozen=True)
class MonotonicityCorrelationParams(MonotonicityParams):
    """As MonotonicityParams; samples: perturbations per chunk; substrate "uniform" (the default, as
    Quantus) draws fresh U(0, 1) values for every perturbation, the others are constants."""

    samples: int = 10
    substrate: str = "uniform"


@METRICS.register("monotonicity_correlation")
class MonotonicityCorrelation(Metric):
    """Monotonicity correlation (Nguyen & Martinez, "On Quantitative Aspects of Model Interpretability",
    arXiv 2007.07584, 2020), as Quantus's ``MonotonicityCorrelation`` computes it.

    Groups in ascending relevance (of |attribution| by default), ``features_in_step`` at a time; each
    chunk alone is replaced ``samples`` times by U(0, 1) draws; the score is the Spearman correlation
    of the chunks' relevance with their mean squared change of the target probability. Differences
    from Quantus: its 1/f(x)^2 factor, a per-sample constant no rank correlation sees, is left out;
    every element gets its own draw (Quantus: one value per chunk; the same for one-element chunks);
    groups; at most 64 chunks and 10 samples by default (Quantus: one per element, 100 samples).
    """

    higher_is_better = True
    stochastic = True
    description = "rank correlation of chunk relevance with the output variation under noise (Nguyen 2020)"
    Params = MonotonicityCorrelationParams

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        if params.samples < 1:
            raise InputError(f"monotonicity_correlation needs samples >= 1, got {params.samples}")
        chunks = Chunks.of(batch, params, "lerf", params.abs)
        draw = _replacement(batch, params, generator)
        original = unperturbed_scores(batch, params.output)[:, None]
        variation = torch.empty((batch.n, chunks.count), dtype=torch.float64, device="cpu")
        for step in range(chunks.count):
            def build(samples: slice, step: int = step) -> torch.Tensor:
                chosen = (chunks.of_group[samples] == step).unsqueeze(1).expand(-1, params.samples, -1)
                return substituted(draw(samples), batch.inputs[samples], chosen, chunks.ids)

            scores = perturbed_scores(batch, params.samples, build, params.output)
            variation[:, step] = ((scores - original).double() ** 2).mean(dim=1)
        return MetricResult(scores=spearman(chunks.sums(), variation))


def _replacement(batch: MetricInputs, params: Any,
                 generator: torch.Generator) -> Callable[[slice], torch.Tensor]:
    """``draw(samples)``: replacement values, fresh U(0, 1) per perturbation (s, samples, *S) from
    each sample's generator for "uniform", else the constant substrate (s, *S)."""
    if params.substrate != "uniform":
        fill = substrate(batch.inputs, params.substrate, generator=generator)
        return lambda samples: fill[samples]
    generators = per_sample_generators(generator, batch.n)
    shape = (params.samples, *batch.inputs.shape[1:])
    device, dtype = batch.inputs.device, batch.inputs.dtype
    return lambda samples: draw_uniform(generators[samples], shape, dtype).to(device)


@METRICS.register("sensitivity_n")
class SensitivityN(Metric):
    """Sensitivity-n (Ancona, Ceolini, Öztireli & Gross, "Towards Better Understanding of Gradient-based
    Attribution Methods for Deep Neural Networks", ICLR 2018).

    For each subset size n (``n_sizes`` sizes spaced logarithmically from 1 to ``n_max_percentage``
    of the groups), ``runs`` random subsets of n groups are set to the substrate; per sample and per
    n, the Pearson correlation over the runs between the subsets' relevance and the drop of the
    target logit. The curve is that correlation against n; the score is its mean over n (NaN sizes
    skipped). Deliberate differences from Quantus's ``SensitivityN``: it removes features cumulatively
    in attribution order and correlates, per n, across the samples of a batch (reading only the first
    batch), which gives no per-sample score; here each sample gets the paper's correlation over random
    subsets. The logit is read by default (what attributions explain; Quantus reads probabilities).
    """

    higher_is_better = True
    stochastic = True
    curve_label = "groups removed (n)"
    description = "per-n correlation of subset relevance with the output drop, averaged over n (Ancona 2018)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """runs: random subsets per size and sample; n_sizes: how many subset sizes; n_max_percentage:
        the largest size as a fraction of the groups (Quantus's name); substrate, patch, output: as
        for faithfulness_correlation."""

        runs: int = 50
        n_sizes: int = 8
        n_max_percentage: float = 0.8
        substrate: str = "black"
        patch: int = 1
        output: str = "logit"

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        removal = SubsetRemoval.prepare(batch, params, generator)
        sizes = subset_sizes(removal.relevance.shape[1], params.n_sizes, params.n_max_percentage)
        curve = torch.stack([removal.correlation(params.runs, size) for size in sizes], dim=1)
        return MetricResult(scores=curve.nanmean(dim=1), curve=curve,
                            curve_x=torch.tensor(sizes, dtype=torch.float64, device="cpu"))


def subset_sizes(n_groups: int, n_sizes: int, max_fraction: float) -> list[int]:
    """Distinct subset sizes, log-spaced from 1 to floor(max_fraction * n_groups) (at least 1)."""
    if n_sizes < 1 or not 0 < max_fraction <= 1:
        raise InputError("sensitivity_n needs n_sizes >= 1 and 0 < n_max_percentage <= 1")
    largest = max(1, int(max_fraction * n_groups))
    spaced = torch.logspace(0, math.log10(largest), n_sizes, dtype=torch.float64, device="cpu").round().long()
    return sorted(set(spaced.tolist()))
