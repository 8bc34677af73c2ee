"""The contract every registered metric must pass, driven by ``METRICS.list()``.

A metric registered anywhere is picked up here: for each modality it declares, on the small toy nets,
with its default parameters, it must return one float64 score per sample (and a curve matching its
x axis when it declares one), reproduce itself for a seed, give the same result for every batch size,
keep each forward pass within ``batch_size`` rows, draw from its generator exactly when it says it
is stochastic, and carry complete metadata.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from xaibench.metrics import CATEGORIES, METRICS, MetricResult, compute
from xaibench.metrics.base import spatial_shape

from tests.conftest import SHAPES, make_inputs, make_net
from xaibench.attribution import attribute
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError

N = 4
TARGET = torch.tensor([0, 1, 2, 1])
#: the attribution metrics; concept metrics have their own contract (tests/metrics/test_concept.py)
ATTRIBUTION = [name for name in METRICS.list() if not METRICS.get(name).concept]
CASES = [(name, modality) for name in ATTRIBUTION for modality in sorted(SHAPES)
         if modality in METRICS.get(name).modalities]


class RowCounter(nn.Module):
    """Wraps a model and records the largest number of rows it was given in one forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.most_rows = 0
        self.input_modality = getattr(model, "input_modality", None)  # a text model stays one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.most_rows = max(self.most_rows, x.shape[0])
        return self.model(x)

    def token_vectors(self) -> torch.Tensor:  # what the token-substitution metric draws from
        return self.model.token_vectors()

    def substitutes(self) -> torch.Tensor:
        return self.model.substitutes()


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return attribute("saliency", model, x, target=target, batch_size=3)


def inputs_for(modality: str) -> dict:
    """Model, inputs, attributions, masks and a reference for one modality (fixed seeds)."""
    x = make_inputs(modality, n=N)
    model = make_net(modality)
    attributions = attribute("input_x_gradient", model, x, target=TARGET)
    masks = torch.zeros((N, *spatial_shape(x)), dtype=torch.bool)
    masks.view(N, -1)[:, : masks[0].numel() // 3] = True  # non-empty, not full
    reference = attribute("saliency", model, x, target=TARGET)
    return {"model": model, "x": x, "a": attributions, "masks": masks, "reference": reference}


def run(name: str, case: dict, *, model: nn.Module | None = None, seed: int = 0,
        batch_size: int | None = None) -> MetricResult:
    return compute(name, model or case["model"], case["x"], case["a"], target=TARGET,
                   masks=case["masks"], explainer=saliency, reference=case["reference"],
                   batch_size=batch_size, generator=torch.Generator().manual_seed(seed))


def same(a: MetricResult, b: MetricResult) -> bool:
    def close(u: torch.Tensor | None, v: torch.Tensor | None) -> bool:
        if u is None or v is None:
            return u is None and v is None
        # float32 models round differently for different numbers of rows per pass; metrics that
        # divide small differences (average drop) magnify that to ~1e-5 relative
        return u.shape == v.shape and torch.allclose(u, v, rtol=1e-4, atol=1e-5, equal_nan=True)

    return close(a.scores, b.scores) and close(a.curve, b.curve)


@pytest.fixture(scope="module")
def cases() -> dict[str, dict]:
    return {modality: inputs_for(modality) for modality in SHAPES}


def test_registry_holds_the_issue_metrics() -> None:
    required = """deletion insertion pixel_flipping lerf region_perturbation selectivity
    faithfulness_correlation faithfulness_estimate monotonicity monotonicity_correlation sensitivity_n
    infidelity road irof average_drop increase_in_confidence pos neg pgi pgu max_sensitivity
    avg_sensitivity local_lipschitz relative_input_stability relative_output_stability
    relative_representation_stability sparseness complexity effective_complexity mprt random_logit
    pointing_game attribution_localisation relevance_rank_accuracy top_k_intersection mask_auc
    completeness non_sensitivity input_invariance feature_agreement rank_agreement sign_agreement
    signed_rank_agreement rank_correlation pairwise_rank_agreement""".split()
    assert sorted(set(required) - set(METRICS.list())) == []


@pytest.mark.parametrize("name", METRICS.list())
def test_metadata(name: str) -> None:
    cls = METRICS.get(name)
    assert cls.category in CATEGORIES
    assert isinstance(cls.higher_is_better, bool)
    assert cls.description and len(cls.description) < 120 and "\n" not in cls.description
    assert cls.__doc__ and len(cls.__doc__) > 80  # cites the definition
    assert cls.modalities and set(cls.modalities) <= set(SHAPES)
    assert isinstance(cls().direction(cls.Params()), bool)


@pytest.mark.parametrize(("name", "modality"), CASES)
def test_output_shape_determinism_and_batch_invariance(name: str, modality: str, cases: dict) -> None:
    case = cases[modality]
    result = run(name, case)
    assert result.scores.shape == (N,) and result.scores.dtype == torch.float64
    assert not torch.isnan(result.scores).all(), "a metric undefined for every toy sample"
    if METRICS.get(name).curve_label is None:
        assert result.curve is None
    else:
        assert result.curve is not None and result.curve_x is not None
        assert result.curve.shape == (N, result.curve_x.shape[0])
    assert same(result, run(name, case))
    for batch_size in (1, 3):
        counter = RowCounter(case["model"])
        assert same(result, run(name, case, model=counter, batch_size=batch_size)), batch_size
        assert counter.most_rows <= batch_size


@pytest.mark.parametrize(("name", "modality"), CASES)
def test_randomness_only_when_stochastic(name: str, modality: str, cases: dict) -> None:
    """The generator is drawn from exactly when the metric says it is stochastic (outputs alone cannot
    tell: ROAD's top-1 curve may not move on the toy nets whatever the noise)."""
    case = cases[modality]
    generator = torch.Generator().manual_seed(0)
    before = generator.get_state()
    compute(name, case["model"], case["x"], case["a"], target=TARGET, masks=case["masks"],
            explainer=saliency, reference=case["reference"], generator=generator)
    cls = METRICS.get(name)
    # on text the substrate is the mask token, so a metric whose only draw is its uniform substrate draws none
    drawn_substrate = getattr(cls.Params(), "substrate", None) == "uniform"
    assert (not torch.equal(before, generator.get_state())) == (cls.stochastic and not (modality == "text" and drawn_substrate))


@pytest.mark.parametrize("name", ATTRIBUTION)
def test_rejects_bad_input(name: str, cases: dict) -> None:
    cls = METRICS.get(name)
    modality = cls.modalities[0]
    case = cases[modality]
    with pytest.raises(UnknownNameError):
        compute(name, case["model"], case["x"], case["a"], target=TARGET, no_such_parameter=1)
    with pytest.raises(InputError):
        compute(name, case["model"], case["x"], case["a"][:, :1], target=TARGET)
    if cls.needs_masks:
        with pytest.raises(InputError, match="masks"):
            compute(name, case["model"], case["x"], case["a"], target=TARGET)
    other = [m for m in SHAPES if m not in cls.modalities]
    if other:
        x = make_inputs(other[0], n=N)
        with pytest.raises(IncompatibleError):
            compute(name, make_net(other[0]), x, x, target=TARGET)


@pytest.mark.parametrize("name", ATTRIBUTION)
def test_a_row_without_an_answer_scores_nan(name: str, cases: dict) -> None:
    """An explainer that gave no answer for a sample (a NaN row, as an unparsed LLM reply gives) is
    scored NaN there, and every other sample gets the score it gets beside any finite row: the batch
    and its random draws are the same."""
    case = cases[METRICS.get(name).modalities[0]]
    unanswered, zeroed = case["a"].clone(), case["a"].clone()
    unanswered[1], zeroed[1] = float("nan"), 0.0

    def score(attributions: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        return compute(name, case["model"], case["x"], attributions, target=TARGET, masks=case["masks"],
                       explainer=saliency, reference=reference, generator=torch.Generator().manual_seed(0))

    got, beside = score(unanswered, case["reference"]), score(zeroed, case["reference"])
    keep = torch.tensor([True, False, True, True])
    assert torch.isnan(got.scores[1]) and (got.curve is None or torch.isnan(got.curve[1]).all())
    assert same(MetricResult(got.scores[keep], None if got.curve is None else got.curve[keep]),
                MetricResult(beside.scores[keep], None if beside.curve is None else beside.curve[keep]))
    none = score(torch.full_like(case["a"], float("nan")), case["reference"])
    assert torch.isnan(none.scores).all()  # nobody answered: all NaN, no error
    if METRICS.get(name).needs_reference:  # a reference without an answer is no reference either
        reference = case["reference"].clone()
        reference[2] = float("nan")
        assert torch.isnan(score(case["a"], reference).scores[2])
