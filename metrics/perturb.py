"""Perturbation machinery shared by the faithfulness metrics.

Feature units: a metric removes *groups* of input elements. A group is one pixel (all channels) or a
square patch of an image, one step or a segment of a sequence, one tabular feature (``group_ids``, the
same grouping as the perturbation methods use). A group's relevance is the sum of the attribution over
its elements, all channels included.

Scoring: ``perturbed_scores`` evaluates many perturbed copies of each sample, building them chunk by
chunk so that no forward pass holds more than ``batch_size`` rows and memory stays bounded by it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xaibench.metrics.base import MetricInputs

from xaibench.attribution.blur import gaussian_blur
from xaibench.attribution.draws import sample_generators, sample_seeds
from xaibench.attribution.masks import feature_mask
from xaibench.attribution.path import sample_chunks
from xaibench.attribution.reference import SIMPLE_BASELINES, simple_baseline
from xaibench.core.batches import row_slices
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import
from xaibench.core.progress import advance

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

OUTPUTS = ("probability", "logit", "top1")
SUBSTRATES = (*SIMPLE_BASELINES, "blur", "uniform")
ORDERS = ("morf", "lerf", "random")


# ---------------------------------------------------------------------------------------------
# model scores


def class_scores(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """Per row of ``x``: the target class's softmax probability, its logit, or top1 (1.0 when the
    target is the predicted class, else 0.0). No gradients."""
    if output not in OUTPUTS:
        raise UnknownNameError.for_name("output", output, list(OUTPUTS))
    with torch.no_grad():
        logits = model(x).float()
    target = target.to(logits.device)
    if output == "top1":
        return (logits.argmax(dim=1) == target).float()
    if output == "probability":
        logits = logits.softmax(dim=1)
    return logits.gather(1, target[:, None]).squeeze(1)


def batched_scores(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, output: str,
                   batch_size: int | None) -> torch.Tensor:
    """``class_scores`` in row chunks of at most ``batch_size``."""
    return torch.cat([class_scores(model, x[rows], target[rows], output)
                      for rows in row_slices(x.shape[0], batch_size)])


def explain_rows(batch: MetricInputs, model: torch.nn.Module, points: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    """``batch.explainer`` on ``points`` (rows, *S) in calls of at most ``batch_size`` rows: what the
    robustness, randomisation and invariance metrics use to re-explain."""
    return torch.cat([batch.explainer(model, points[rows], target[rows]).detach().to(points)
                      for rows in row_slices(points.shape[0], batch.batch_size)])


def perturbed_scores(batch: MetricInputs, copies: int, build: Callable[[slice], torch.Tensor],
                     output: str) -> torch.Tensor:
    """Target scores of ``copies`` perturbed versions of every sample, (N, copies).

    Args:
        build: ``build(samples)`` returns the perturbed inputs of a slice of samples,
            (len, copies, *S); it is called chunk by chunk so that memory stays bounded.
        output: "probability" (softmax), "logit" or "top1" (see ``class_scores``).
    """
    out = torch.empty((batch.n, copies), dtype=torch.float32, device="cpu")
    for samples in sample_chunks(batch.n, copies, batch.batch_size):
        points = build(samples)
        rows = batch.target[samples].repeat_interleave(copies)
        scores = batched_scores(batch.model, points.flatten(0, 1), rows, output, batch.batch_size)
        out[samples] = scores.view(-1, copies).cpu()
        advance(samples.stop - samples.start)
    return out


def blockwise_scores(batch: MetricInputs, copies: int, build: Callable[[slice, slice], torch.Tensor],
                     output: str) -> torch.Tensor:
    """``perturbed_scores`` in blocks of at most ``batch_size`` copies, (N, copies).

    For many copies per sample (a removal curve of thousands of steps): memory stays bounded by
    ``batch_size`` rows even when one sample's copies would exceed it.

    Args:
        build: ``build(samples, block)`` returns the copies ``block`` of the samples, (s, len, *S).
    """
    blocks = [perturbed_scores(batch, block.stop - block.start,
                               lambda samples, block=block: build(samples, block), output)
              for block in row_slices(copies, batch.batch_size)]
    return torch.cat(blocks, dim=1)


# ---------------------------------------------------------------------------------------------
# feature groups and orderings


def group_ids(inputs: torch.Tensor, patch: int = 1) -> torch.Tensor:
    """Group id of every element, (1, *S): pixels / patches, steps / segments, features."""
    return feature_mask(inputs, patch)


def group_relevance(attributions: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Sum of the attribution over each group, (N, G), in float64."""
    flat_ids = ids.flatten(1).expand(attributions.shape[0], -1)
    out = torch.zeros((attributions.shape[0], int(ids.max()) + 1), dtype=torch.float64,
                      device=attributions.device)
    return out.scatter_add_(1, flat_ids, attributions.flatten(1).double())


def removal_ranks(relevance: torch.Tensor, order: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Position of each group in the removal order, (N, G): 0 is removed first.

    morf: most relevant first; lerf: least relevant first; random: a random order per sample, each
    from a generator of its own seeded from ``generator`` (the same whatever the batch or shard). Ties
    keep the lower group index first (a stable sort), so the order is deterministic.
    """
    if order not in ORDERS:
        raise UnknownNameError.for_name("order", order, list(ORDERS))
    if order == "random":
        if generator is None:
            raise InputError("a random order needs a generator")
        keys = torch.stack([torch.rand(relevance.shape[1], generator=g, dtype=torch.float64, device="cpu")
                            for g in sample_generators(sample_seeds(generator, relevance.shape[0]), slice(None))])
        sequence = keys.to(relevance.device).argsort(dim=1)
    else:
        sequence = relevance.argsort(dim=1, descending=(order == "morf"), stable=True)
    ranks = torch.empty_like(sequence)
    positions = torch.arange(sequence.shape[1], device=sequence.device).expand_as(sequence)
    return ranks.scatter_(1, sequence, positions)


def element_ranks(ranks: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Spread group ranks (n, G) over the elements of the sample shape: (n, *S)."""
    flat = ranks.gather(1, ids.flatten(1).expand(ranks.shape[0], -1))
    return flat.view(ranks.shape[0], *ids.shape[1:])


def cumulative_masks(ranks: torch.Tensor, ids: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool (n, K, *S): element removed at step k when its group is among the first ``counts[k]``."""
    per_element = element_ranks(ranks, ids).unsqueeze(1)
    shape = (1, -1) + (1,) * (per_element.ndim - 2)
    return per_element < counts.view(shape).to(per_element.device)


def step_counts(n_groups: int, per_step: int) -> torch.Tensor:
    """Groups removed after each step when ``per_step`` go at a time: 0, s, 2s, ..., n_groups."""
    if per_step < 1:
        raise InputError(f"features per step must be at least 1, got {per_step}")
    counts = list(range(0, n_groups, per_step)) + [n_groups]
    return torch.tensor(counts, dtype=torch.long, device="cpu")


# ---------------------------------------------------------------------------------------------
# substrates


def substrate(inputs: torch.Tensor, kind: str, *, generator: torch.Generator | None = None,
              blur_sigma: float = 5.0) -> torch.Tensor:
    """What removed elements are replaced with, with the inputs' shape.

    zero, black (per-sample minimum), white (maximum), mean (per-sample mean): constants as Quantus
    defines them; blur: a Gaussian blur of the sample (images and sequences, RISE's substrate);
    uniform: U(0, 1) noise, drawn per sample from ``generator`` (one seed per sample, so the draw does
    not depend on batching).
    """
    if kind not in SUBSTRATES:
        raise UnknownNameError.for_name("substrate", kind, list(SUBSTRATES))
    if kind in SIMPLE_BASELINES:
        return simple_baseline(inputs, kind)
    if kind == "blur":
        if inputs.ndim < 3:
            raise InputError("the blur substrate needs images or sequences, not tabular inputs")
        return gaussian_blur(inputs, float(blur_sigma))
    if generator is None:
        raise InputError("the uniform substrate needs a generator")
    generators = sample_generators(sample_seeds(generator, inputs.shape[0]), slice(None))
    return torch.stack([torch.rand(inputs.shape[1:], generator=g, device="cpu") for g in generators]).to(inputs)
