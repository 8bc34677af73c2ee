"""Correlation-style faithfulness metrics: cross-checks against Quantus 0.6.0 fed the same random draws,
a transcription of Arya et al.'s AIX360 monotonicity rule, exact values on linear models, and the
Quantus behaviours that xaibench deliberately does not follow (Monotonicity, SensitivityN)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from xaibench.metrics import correlation
from xaibench.metrics.base import compute

from tests.conftest import Linear, make_inputs, make_linear, make_net
from xaibench.core.errors import InputError

quantus = pytest.importorskip("quantus")

TARGET = torch.tensor([0, 1, 2, 1])
#: Quantus with its preprocessing off, so that it scores the attributions it is given.
PLAIN = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}


def one_channel_net(seed: int = 0) -> nn.Module:
    """A small non-linear model of (1, 4, 4) images: one group per element, as Quantus perturbs."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def one_channel_case(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((4, 1, 4, 4), generator=generator)
    return one_channel_net(seed), x, torch.randn(x.shape, generator=generator)


def run_quantus(metric: Any, model: nn.Module, x: torch.Tensor, a: torch.Tensor, **call: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=TARGET.numpy(), a_batch=a.numpy(),
                     device="cpu", **call)
    return np.asarray(out, dtype=np.float64)


def recorded(monkeypatch: pytest.MonkeyPatch, name: str) -> list[torch.Tensor]:
    """Wrap ``correlation.<name>`` so that every value it returns is kept, in call order."""
    calls: list[torch.Tensor] = []
    original = getattr(correlation, name)

    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(original(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(correlation, name, wrapper)
    return calls


def replay(values: Iterator[np.ndarray]) -> Callable[..., np.ndarray]:
    """A stand-in for a numpy random function that returns ``values`` one call at a time."""
    return lambda *args, **kwargs: next(values)


def black_linear_attribution(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """a = w_t * (x - b) with b the per-sample minimum: the exact effect of removing each element."""
    weights = torch.stack([model.weight(int(t)) for t in TARGET[: x.shape[0]]])
    return weights * (x - x.flatten(1).amin(1).view(-1, *([1] * (x.ndim - 1))))


# ---------------------------------------------------------------------------------------------
# cross-checks against Quantus


@pytest.mark.parametrize("features_in_step", [1, 4])
def test_faithfulness_estimate_equals_quantus(features_in_step: int) -> None:
    model, x, a = one_channel_case()
    ours = compute("faithfulness_estimate", model, x, a, target=TARGET, features_in_step=features_in_step)
    metric = quantus.FaithfulnessEstimate(features_in_step=features_in_step, **PLAIN)
    theirs = run_quantus(metric, model, x, a)
    np.testing.assert_allclose(ours.scores.numpy(), theirs, rtol=1e-4)


def test_faithfulness_estimate_equals_quantus_on_tabular_inputs() -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ours = compute("faithfulness_estimate", model, x, a, target=TARGET)
    theirs = run_quantus(quantus.FaithfulnessEstimate(**PLAIN), model, x, a)
    np.testing.assert_allclose(ours.scores.numpy(), theirs, rtol=1e-4)


def test_faithfulness_estimate_takes_chunks_in_descending_relevance() -> None:
    # 7 features in steps of 3: chunks of the 3 most relevant, the next 3, and the least relevant;
    # Quantus needs a divisor of the feature count, where the order cannot change a correlation
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    x = torch.rand((4, 7), generator=torch.Generator().manual_seed(8))
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    ours = compute("faithfulness_estimate", model, x, a, target=TARGET, features_in_step=3)
    with torch.no_grad():
        for i in range(4):
            order = a[i].argsort(descending=True)
            chunks = [order[:3], order[3:6], order[6:]]
            copies = x[i].repeat(3, 1)
            for row, chunk in enumerate(chunks):
                copies[row, chunk] = x[i].min()
            drops = model(x[i : i + 1])[0, TARGET[i]] - model(copies)[:, TARGET[i]]
            sums = torch.stack([a[i, chunk].sum() for chunk in chunks])
            expected = np.corrcoef(sums.numpy(), drops.numpy())[0, 1]
            assert ours.scores[i].item() == pytest.approx(expected, rel=1e-4)


def test_faithfulness_correlation_equals_quantus_on_the_same_subsets(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, a = one_channel_case(1)
    subsets = recorded(monkeypatch, "random_subsets")
    ours = compute("faithfulness_correlation", model, x, a, target=TARGET, runs=12, subset_size=5)
    (chosen,) = subsets  # (N, runs, 16): one chunk of samples when batch_size is None
    # Quantus draws np.random.choice(16, 5) for every run, then every sample
    picks = (np.flatnonzero(chosen[i, r].numpy()) for r in range(12) for i in range(x.shape[0]))
    monkeypatch.setattr(np.random, "choice", replay(picks))
    theirs = run_quantus(quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=5, return_aggregate=False,
                                                         **PLAIN), model, x, a)
    np.testing.assert_allclose(ours.scores.numpy(), theirs, rtol=1e-4)


def test_monotonicity_correlation_equals_quantus_with_a_constant_substrate() -> None:
    model, x, a = one_channel_case(2)
    ours = compute("monotonicity_correlation", model, x, a, target=TARGET, substrate="black", samples=2,
                   features_in_step=2)
    metric = quantus.MonotonicityCorrelation(nr_samples=2, features_in_step=2, perturb_baseline="black",
                                             **{**PLAIN, "abs": True})
    np.testing.assert_allclose(ours.scores.numpy(), run_quantus(metric, model, x, a), rtol=1e-4)


def test_monotonicity_correlation_equals_quantus_on_the_same_uniform_draws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, a = one_channel_case(3)
    draws = recorded(monkeypatch, "draw_uniform")
    ours = compute("monotonicity_correlation", model, x, a, target=TARGET, samples=3, features_in_step=1)
    assert len(draws) == 16  # one (N, samples, 1, 4, 4) draw per step
    # Quantus fills step k's element (k-th smallest |a|) with one uniform value per sample and run
    order = np.argsort(np.abs(a.flatten(1).numpy()), axis=1)
    rows = np.arange(x.shape[0])
    values = (draws[k].flatten(2).numpy()[rows, r, order[:, k]] for k in range(16) for r in range(3))
    monkeypatch.setattr(np.random, "uniform", replay(values))
    metric = quantus.MonotonicityCorrelation(nr_samples=3, **{**PLAIN, "abs": True})
    np.testing.assert_allclose(ours.scores.numpy(), run_quantus(metric, model, x, a), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# monotonicity: Arya et al.'s rule, and Quantus 0.6.0's constant result


def aix360_monotonicity(model: nn.Module, x: torch.Tensor, a: torch.Tensor) -> np.ndarray:
    """Arya et al.'s AIX360 ``monotonicity_metric`` per sample: from the all-baseline input, put
    features back in ascending attribution order; 1 if the target probability never decreases."""
    out = []
    for sample, coefs, target in zip(x.numpy(), a.numpy(), TARGET.tolist()):
        flat, copy = sample.reshape(-1), np.full(sample.size, sample.min(), dtype=np.float32)
        probs = []
        for index in np.argsort(coefs.reshape(-1)):
            copy[index] = flat[index]
            with torch.no_grad():
                logits = model(torch.from_numpy(copy.reshape(1, *sample.shape)))
            probs.append(float(logits.softmax(1)[0, target]))
        out.append(float(np.all(np.diff(probs) >= 0)))
    return np.array(out)


def test_monotonicity_follows_arya_and_quantus_always_scores_one() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.rand((4, 4), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # attributions: the weights of the target class, times the input
        a = model[0].weight[TARGET] * x
    expected = aix360_monotonicity(model, x, a)
    # both outcomes occur, and putting features back in descending order would score differently
    assert 0 < expected.sum() < len(expected)
    assert not np.array_equal(aix360_monotonicity(model, x, -a), expected)
    ours = compute("monotonicity", model, x, a, target=TARGET, abs=False)
    np.testing.assert_array_equal(ours.scores.numpy(), expected)
    # Quantus re-fills the baseline input with the baseline, so the prediction never moves
    assert run_quantus(quantus.Monotonicity(**PLAIN), model, x, a).tolist() == [1.0] * 4


def test_monotonicity_is_one_for_positive_weights_and_zero_when_a_feature_lowers_the_logit() -> None:
    model, x = make_linear("tabular"), make_inputs("tabular")
    with torch.no_grad():
        model.fc.weight.abs_()
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    rising = compute("monotonicity", model, x, a, target=TARGET, output="logit")
    assert rising.scores.tolist() == [1.0] * 4  # any order: every added feature raises the logit
    with torch.no_grad():
        model.fc.weight[:, 3] *= -1  # feature 3 lowers every logit when put back (x > minimum)
    falling = compute("monotonicity", model, x, a, target=TARGET, output="logit")
    assert falling.scores.tolist() == [0.0] * 4


# ---------------------------------------------------------------------------------------------
# exact values on linear models


def test_faithfulness_correlation_and_estimate_are_one_for_exact_linear_attributions(modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    a = black_linear_attribution(model, x)
    if modality == "text":  # removed tokens become the mask token, the zero of the explained space
        a = torch.stack([model.weight(int(t)) for t in TARGET[: x.shape[0]]]) * x
    for name, params in (("faithfulness_correlation", {"runs": 10}), ("faithfulness_estimate", {}),
                         ("sensitivity_n", {"runs": 10})):
        result = compute(name, model, x, a, target=TARGET, **params)
        torch.testing.assert_close(result.scores, torch.ones(4, dtype=torch.float64), rtol=1e-5, atol=0)


def test_monotonicity_correlation_is_one_for_exact_linear_attributions() -> None:
    # removing feature i changes the logit by a_i, so the variation a_i^2 ranks like |a_i|
    model, x = make_linear("tabular"), make_inputs("tabular")
    a = black_linear_attribution(model, x)
    result = compute("monotonicity_correlation", model, x, a, target=TARGET, substrate="black",
                     output="logit")
    torch.testing.assert_close(result.scores, torch.ones(4, dtype=torch.float64), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# sensitivity-n: per-sample correlations, where Quantus correlates across the batch


def test_sensitivity_n_is_the_per_sample_correlation_over_the_same_subsets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    subsets = recorded(monkeypatch, "random_subsets")
    result = compute("sensitivity_n", model, x, a, target=TARGET, runs=6)
    # floor(0.8 * 6) = 4; eight log-spaced sizes from 1 to 4 round to 1, 2, 3 and 4
    assert result.curve_x.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert [int(s[0, 0].sum()) for s in subsets] == [1, 2, 3, 4]
    base = x.amin(1, keepdim=True)
    with torch.no_grad():
        original = model(x).gather(1, TARGET[:, None])
        for column, chosen in enumerate(subsets):
            for i in range(4):
                removed = torch.where(chosen[i], base[i], x[i])
                drops = original[i] - model(removed)[:, TARGET[i]]
                sums = (a[i] * chosen[i]).sum(1)
                expected = np.corrcoef(sums.numpy(), drops.numpy())[0, 1]
                assert result.curve[i, column].item() == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(result.scores, result.curve.mean(1))


def test_quantus_sensitivity_n_correlates_across_samples_not_per_sample() -> None:
    torch.manual_seed(7)
    model = Linear((1, 4, 4)).eval()
    x = torch.rand((4, 1, 4, 4), generator=torch.Generator().manual_seed(7))
    a = black_linear_attribution(model, x)
    ours = compute("sensitivity_n", model, x, a, target=TARGET, runs=10)
    assert ours.scores.tolist() == pytest.approx([1.0] * 4)
    metric = quantus.SensitivityN(return_aggregate=False, **PLAIN)
    theirs = run_quantus(metric, model, x, a, softmax=False)
    # Quantus: one value per cumulative removal step (int(0.8 * 16) = 12), not one per sample: the
    # correlation across the samples between the cumulative drop and the last removed element's
    # attribution alone, which falls below 1 from the second step on even for these attributions
    assert theirs.shape == (12,)
    np.testing.assert_allclose(theirs, quantus_sensitivity_n(model, x, a, steps=12), rtol=1e-4)
    assert np.all(theirs[1:] < 0.999)


def quantus_sensitivity_n(model: nn.Module, x: torch.Tensor, a: torch.Tensor, steps: int) -> np.ndarray:
    """What Quantus's SensitivityN computes, transcribed: elements removed cumulatively (black) in
    descending attribution; per step, Pearson across samples of drop and that step's attribution."""
    flat, relevance = x.flatten(1).clone(), a.flatten(1)
    order = relevance.argsort(dim=1, descending=True)
    rows, black = torch.arange(x.shape[0]), flat.amin(1)
    with torch.no_grad():
        original = model(x)[rows, TARGET]
        out = []
        for step in range(steps):
            flat[rows, order[:, step]] = black
            drops = original - model(flat.view_as(x))[rows, TARGET]
            out.append(np.corrcoef(drops.numpy(), relevance[rows, order[:, step]].numpy())[0, 1])
    return np.array(out)


def test_bad_parameters_are_input_errors() -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    with pytest.raises(InputError):
        compute("faithfulness_correlation", model, x, x, target=TARGET, subset_size=7)
    with pytest.raises(InputError):
        compute("sensitivity_n", model, x, x, target=TARGET, runs=1)
    with pytest.raises(InputError):
        compute("faithfulness_estimate", model, x, x, target=TARGET, features_in_step=0)
