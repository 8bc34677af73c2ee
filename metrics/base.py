"""The metric contract and the metric registry.

A metric is a class registered in ``METRICS`` with metadata as class attributes and a frozen ``Params``
dataclass declaring its parameters, like a method. ``Metric.compute`` validates what it is given and
returns a ``MetricResult``: one score per sample and, for metrics that have one, the curve behind it.

Metrics are pure, batched torch: randomness only from the ``generator`` argument, drawn per sample
(``sample_seeds``) so that results do not depend on ``batch_size``, the one knob that bounds how many
rows go through the model in one forward pass.

torch is imported lazily so that listing metrics does not import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from xaibench.attribution.base import as_target, input_modality, parse_params
from xaibench.attribution.draws import outside_shard
from xaibench.core.errors import IncompatibleError, InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.registry import Registry
from xaibench.models.meta import MODALITIES

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

CATEGORIES = ("faithfulness", "robustness", "complexity", "randomisation", "localisation", "axiomatic",
              "agreement", "concept")

METRICS: Registry[type[Metric]] = Registry(
    "metric",
    modules=tuple(f"xaibench.metrics.{m}" for m in (
        "curves", "confidence", "road", "irof", "correlation", "infidelity", "robustness", "stability",
        "randomisation", "randomisation_variants", "complexity", "localisation", "axiomatic", "agreement",
        "concept", "information_curves", "eraser", "token_substitution")),
)

#: explainer(model, inputs, target) -> attributions with the inputs' shape; robustness and randomisation
#: metrics call it on perturbed inputs, other targets or a randomised model.
Explainer = Callable[["torch.nn.Module", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """What a metric returns.

    Attributes:
        scores: one value per sample (N,), float64 on the CPU. NaN where the metric is undefined for a
            sample (e.g. a correlation of constant values); reports skip NaN and count them.
        curve: (N, K) values along the metric's x axis, for curve metrics; None otherwise.
        curve_x: (K,) the x axis shared by all samples (e.g. fraction of features removed).
    """

    scores: torch.Tensor
    curve: torch.Tensor | None = None
    curve_x: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class MetricInputs:
    """Validated inputs handed to ``Metric._compute``.

    Attributes:
        model: returns logits (N, classes); in eval mode.
        inputs: (N, *S) float32, what the model takes (normalised).
        attributions: (N, *S) float32, the explanation being scored.
        target: (N,) int64, the explained class per sample.
        masks: (N, *spatial) bool ground-truth masks (images (N, H, W), sequences (N, L), tabular
            (N, F)), or None.
        explainer: recomputes explanations (see ``Explainer``), or None.
        reference: (N, *S) a ground-truth or reference attribution for agreement metrics, or None.
        batch_size: the most rows per forward pass; None for one pass.
    """

    model: torch.nn.Module | None
    inputs: torch.Tensor
    attributions: torch.Tensor
    target: torch.Tensor
    masks: torch.Tensor | None = None
    explainer: Explainer | None = None
    reference: torch.Tensor | None = None
    batch_size: int | None = None

    @property
    def n(self) -> int:
        return self.inputs.shape[0]

    @property
    def modality(self) -> str:
        return input_modality(self.model, self.inputs)


class Metric:
    """Base class of metrics. Subclasses set the metadata and implement ``_compute``.

    Metadata (class attributes): ``category`` (one of CATEGORIES), ``higher_is_better`` (the score's
    direction), what it needs (``needs_model``, ``needs_explainer``, ``needs_masks``,
    ``needs_reference``), ``modalities`` it applies to, ``stochastic`` (uses the generator),
    ``curve_label`` (the x axis of its curve, None without a curve), ``description`` (one line),
    ``concept`` (True for the concept metrics of ``xaibench.metrics.concept``, which score a concept
    decomposition through ``compute_concepts`` and refuse ``compute``).
    """

    name: ClassVar[str]
    category: ClassVar[str] = "faithfulness"
    higher_is_better: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True
    needs_explainer: ClassVar[bool] = False
    needs_masks: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    stochastic: ClassVar[bool] = False
    curve_label: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    concept: ClassVar[bool] = False
    float32_only: ClassVar[bool] = False  # refused under --dtype bfloat16/float16 (xaibench.core.precision)

    @dataclasses.dataclass(frozen=True)
    class Params:
        """No parameters."""

    def compute(
        self,
        model: torch.nn.Module | None,
        inputs: torch.Tensor,
        attributions: torch.Tensor,
        *,
        target: torch.Tensor | int,
        masks: torch.Tensor | None = None,
        explainer: Explainer | None = None,
        reference: torch.Tensor | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        **params: Any,
    ) -> MetricResult:
        """Score ``attributions`` of ``inputs`` (N, *S) towards ``target``; see ``MetricInputs``.

        Args:
            generator: the only source of randomness; a fixed default seed when None.
            **params: metric parameters; strings are converted to the declared types.

        On text (``xaibench.models.text``) a metric's substrate is "zero", the mask token, unless one is
        asked for: the others (an input's minimum, mean, blur) are no token.

        A sample whose attribution (or reference) row is not finite is one the explainer gave no answer
        for (an LLM reply that could not be parsed): it scores NaN, which summaries leave out and count.
        The batch is scored whole (with zeros in those rows), so every other sample sees the random
        draws it would see without them.

        Raises:
            InputError: shapes that do not match, NaN inputs, a bad parameter, a missing requirement.
            IncompatibleError: a modality the metric does not apply to.
        """
        missing = _unanswered(inputs, attributions, reference)
        if missing is not None:  # score the whole batch with zeros there, so the draws stay the same
            filled = [None if t is None else t.masked_fill(_rows_of(missing, t), 0.0) for t in (attributions, reference)]
            result = self.compute(model, inputs, filled[0], target=target, masks=masks, explainer=explainer,
                                  reference=filled[1], batch_size=batch_size, generator=generator, **params)
            return _without(result, missing)
        if input_modality(model, inputs) == "text" and "substrate" not in params and _declares(self.Params, "substrate"):
            params = {**params, "substrate": "zero"}  # removed tokens become the substrate token
        parsed = parse_params(self.Params, params, owner=f"metric {self.name!r}")
        batch = self._validate(model, inputs, attributions, target, masks, explainer, reference, batch_size)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        if model is not None:
            model.eval()
        result = self._compute(batch, parsed, generator)
        return _checked(result, batch.n, self.name)

    def _compute(self, batch: MetricInputs, params: Any, generator: torch.Generator) -> MetricResult:
        raise NotImplementedError

    def direction(self, params: Any) -> bool:
        """Whether higher scores are better for these parameters (a metric whose direction depends on
        a parameter, such as the removal order, overrides this); reports rank by it."""
        return self.higher_is_better

    def _validate(self, model: Any, inputs: torch.Tensor, attributions: torch.Tensor, target: Any,
                  masks: Any, explainer: Any, reference: Any, batch_size: int | None) -> MetricInputs:
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        if inputs.ndim < 2 or inputs.shape[0] == 0:
            raise InputError(f"inputs must be a non-empty batch, got shape {tuple(inputs.shape)}")
        if attributions.shape != inputs.shape:
            raise InputError(f"attributions {tuple(attributions.shape)} do not match inputs "
                             f"{tuple(inputs.shape)}")
        if not (torch.isfinite(inputs).all() and torch.isfinite(attributions).all()):
            raise InputError("inputs or attributions contain NaN or infinite values")
        if (modality := input_modality(model, inputs)) not in self.modalities:
            raise IncompatibleError(f"metric {self.name} does not apply to {modality} inputs")
        for needed, value, what in ((self.needs_model, model, "a model"),
                                    (self.needs_explainer, explainer, "an explainer"),
                                    (self.needs_masks, masks, "ground-truth masks"),
                                    (self.needs_reference, reference, "a reference attribution")):
            if needed and value is None:
                raise InputError(f"metric {self.name} needs {what}")
        return MetricInputs(
            model=model, inputs=inputs.detach().float(), attributions=attributions.detach().float(),
            target=as_target(target, inputs.shape[0]), masks=_masks(masks, inputs),
            explainer=_outside_shard(explainer), reference=_reference(reference, inputs), batch_size=batch_size)


def compute(metric: str, model: Any, inputs: torch.Tensor, attributions: torch.Tensor, /,
            **kwargs: Any) -> MetricResult:
    """Functional form: ``compute("deletion", model, x, a, target=y, substrate="blur")``."""
    return METRICS.get(metric)().compute(model, inputs, attributions, **kwargs)


def _declares(params_cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(params_cls))


def spatial_shape(inputs: torch.Tensor) -> tuple[int, ...]:
    """The per-sample shape of masks and channel-summed maps: (H, W), (L,) or (F,)."""
    return tuple(inputs.shape[1:]) if inputs.ndim == 2 else tuple(inputs.shape[2:])


def _masks(masks: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor | None:
    if masks is None:
        return None
    expected = (inputs.shape[0], *spatial_shape(inputs))
    if tuple(masks.shape) != expected:
        raise InputError(f"masks must have shape {expected}, got {tuple(masks.shape)}")
    return masks.bool()


def _reference(reference: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor | None:
    if reference is None:
        return None
    if reference.shape != inputs.shape:
        raise InputError(f"reference attributions {tuple(reference.shape)} do not match inputs "
                         f"{tuple(inputs.shape)}")
    return reference.detach().float()


def _outside_shard(explainer: Explainer | None) -> Explainer | None:
    """The explainer as a metric calls it on perturbed copies: a batch of its own, never the samples'
    block of a run spread over processes (so a method such as BEE never gathers across processes from
    inside a metric, whose batches may differ from process to process)."""
    if explainer is None:
        return None

    def explain(model: Any, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with outside_shard():
            return explainer(model, inputs, target)

    return explain


def _unanswered(inputs: torch.Tensor, attributions: torch.Tensor, reference: Any) -> torch.Tensor | None:
    """(N,) True for the rows whose attribution or reference is not finite; None when there are none
    (or when the shapes are wrong, which validation reports)."""
    rows = None
    for tensor in (attributions, reference):
        if isinstance(tensor, torch.Tensor) and tensor.shape == inputs.shape and inputs.ndim >= 2:
            bad = ~torch.isfinite(tensor.flatten(1)).all(dim=1)
            rows = bad if rows is None else rows | bad
    return rows if rows is not None and bool(rows.any()) else None


def _rows_of(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``rows`` (N,) broadcast over the sample dimensions of ``like`` (N, *S)."""
    return rows.to(like.device).view(-1, *([1] * (like.ndim - 1)))


def _without(result: MetricResult, rows: torch.Tensor) -> MetricResult:
    scores = result.scores.masked_fill(rows, float("nan"))
    curve = None if result.curve is None else result.curve.masked_fill(rows[:, None], float("nan"))
    return MetricResult(scores=scores, curve=curve, curve_x=result.curve_x)


def _checked(result: MetricResult, n: int, name: str) -> MetricResult:
    # a wrong shape is a bug in the metric, not a user error
    if result.scores.shape != (n,):
        raise AssertionError(f"{name} returned scores of shape {tuple(result.scores.shape)} for {n} samples")
    if result.curve is not None and (result.curve.ndim != 2 or result.curve.shape[0] != n):
        raise AssertionError(f"{name} returned a curve of shape {tuple(result.curve.shape)}")
    return MetricResult(
        scores=result.scores.detach().double().cpu(),
        curve=None if result.curve is None else result.curve.detach().double().cpu(),
        curve_x=None if result.curve_x is None else result.curve_x.detach().double().cpu())
