"""smooth_mprt and efficient_mprt (Hedström et al., 2024): exact values where the explanations are known
(a linear chain's gradient, explainers that ignore the model, hand-made histograms), the noise each
sample is explained on, batch-size invariance, seeds, and equality with Quantus 0.6.0.

Quantus randomises layers with ``reset_parameters`` under ``torch.manual_seed`` and draws sMPRT's noise
from numpy's global RNG, neither of which xaibench does; the cross-checks therefore give Quantus our
randomised models (``get_random_layer_generator`` replaced, as for mprt) and, for sMPRT, our noise (its
``np.random.randn`` replays the noise our explainer was given) and our explainer (sMPRT calls
``quantus.explain`` whatever explain_func it is given). Everything after the draws is Quantus's own.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn
from xaibench.metrics.base import METRICS, compute
from xaibench.metrics.randomisation import cascading_randomisation, parameterised_layers
from xaibench.metrics.randomisation_variants import histogram_entropy

from tests.conftest import make_inputs, make_net
from tests.metrics.test_robustness import signed_saliency
from xaibench.attribution.draws import sample_seeds, shared_seed
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError

K = 4  # explanations averaged per input in the smooth_mprt tests


class Recorder:
    """Wraps an explainer and keeps, per call, a copy of the model, the inputs and the explanation."""

    def __init__(self, explainer=signed_saliency) -> None:
        self.explainer = explainer
        self.calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def __call__(self, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        explanation = self.explainer(model, inputs, target)
        self.calls.append((copy.deepcopy(model), inputs.clone(), explanation.clone()))
        return explanation

    def models(self, per_model: int) -> list[nn.Module]:
        """The models explained, in order, for a run that explains each one ``per_model`` times."""
        return [model for model, _, _ in self.calls[::per_model]]


def quantus_explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object) -> np.ndarray:
    """Our explainer as Quantus calls it (sMPRT's noisy copies come as float64)."""
    return signed_saliency(model, torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets)).numpy()


def identity(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return inputs.clone()


def setting(modality: str = "image", n: int = 3):
    model, x = make_net(modality), make_inputs(modality, n)
    t = model(x).argmax(1)
    return model, x, t, signed_saliency(model, x, t)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(scipy.stats.spearmanr(a.double().flatten().numpy(), b.double().flatten().numpy())[0])


def changed_layers(model: nn.Module, original: nn.Module) -> list[str]:
    before = dict(original.named_parameters())
    return sorted({name.rsplit(".", 1)[0] for name, p in model.named_parameters()
                   if not torch.equal(p, before[name])})


# ---------------------------------------------------------------------------------------------
# the entropy and the randomisation order


def test_histogram_entropy_of_hand_made_maps() -> None:
    maps = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0],  # 4 bins of width 0.75: 2, 4, 1, 1
                         [5.0] * 8,  # constant: one bin
                         [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])  # the maximum is in the last bin
    expected = torch.tensor([1.75 * math.log(2), 0.0, math.log(2)], dtype=torch.float64)
    torch.testing.assert_close(histogram_entropy(maps, 4), expected, rtol=1e-12, atol=1e-12)
    # two bins of width 1.5: six values in the first, 2 and 3 in the last; one bin: no information
    torch.testing.assert_close(histogram_entropy(maps[:1], 2), torch.tensor([-(0.75 * math.log(0.75)
                               + 0.25 * math.log(0.25))], dtype=torch.float64), rtol=1e-12, atol=0)
    assert torch.equal(histogram_entropy(maps, 1), torch.zeros(3, dtype=torch.float64))


def on_and_below_edges(rows: np.ndarray, bins: int, generator: np.random.Generator) -> np.ndarray:
    """``rows`` with 100 values per row replaced by interior bin edges (numpy's, float32) and by the
    float32 just below them, where the bin a division gives is one too high without numpy's check."""
    rows = rows.copy()
    for row in rows:
        edges = np.histogram_bin_edges(row[100:], bins)[generator.integers(1, bins, 50)]  # row's own edges
        row[:100] = np.concatenate([edges, np.nextafter(edges, np.float32(-np.inf))])
    return rows


def test_histogram_entropy_equals_quantus_discrete_entropy_on_bin_edges() -> None:
    """Values on and just below the bin edges (integers 0..100 in 100 bins, sevenths, a map's own
    extremes, numpy's float32 edges) land in the bins numpy puts them in: the entropies are Quantus's
    (numpy's histogram, scipy's entropy)."""
    from quantus.functions.complexity_func import discrete_entropy

    generator = torch.Generator().manual_seed(0)
    maps = torch.cat([torch.randint(0, 101, (4, 300), generator=generator).float(),
                      torch.round(torch.randn((4, 300), generator=generator) * 7) / 7,
                      torch.randn((4, 300), generator=generator) * 1e-3 + 2.0,
                      torch.full((1, 300), -3.0)])
    for bins in (100, 7):
        edges = on_and_below_edges(torch.randn((20, 300), generator=generator).numpy(), bins,
                                   np.random.default_rng(bins))
        rows = torch.cat([maps, torch.from_numpy(edges)])
        theirs = [discrete_entropy(a=row, x=row, n_bins=bins) for row in rows.numpy()]
        np.testing.assert_allclose(histogram_entropy(rows, bins).numpy(), theirs, rtol=1e-12, atol=1e-15)


def test_bottom_up_randomisation_starts_at_the_input_in_quantus_order() -> None:
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model = make_net("image")
    wrapped = PyTorchModel(model, channel_first=True, softmax=False, device="cpu")
    theirs = [name for name, _ in wrapped.get_random_layer_generator(order="bottom_up")]
    steps = [(name, copy.deepcopy(randomised)) for name, randomised
             in cascading_randomisation(model, torch.Generator().manual_seed(1), "bottom_up")]
    assert [name for name, _ in steps] == theirs
    layers = [name for name, _ in parameterised_layers(model)]
    for i, (_, randomised) in enumerate(steps):  # cumulative from the input
        assert changed_layers(randomised, model) == sorted(layers[: i + 1])
    with pytest.raises(UnknownNameError, match="layer order 'sideways'"):
        cascading_randomisation(model, torch.Generator(), "sideways")  # refused before any draw
    with pytest.raises(IncompatibleError):
        cascading_randomisation(nn.ReLU(), torch.Generator())


# ---------------------------------------------------------------------------------------------
# smooth MPRT: exact values


def test_smooth_mprt_of_a_linear_chain_correlates_the_weight_products() -> None:
    """d logit_c / dx of x -> W2 (W1 x + b1) + b2 is (W2 W1)[c] wherever x is: every noisy copy has
    that explanation, so each denoised map is (W2' W1')[c] of the model it was explained on, and the
    curve is the Spearman correlation of |(W2 W1)[c]| with |(W2' W1')[c]| after each layer. The
    attribution being scored does not enter the score."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 3)).eval()
    x, t = torch.rand((3, 16), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2])
    recorder = Recorder()
    result = compute("smooth_mprt", model, x, torch.rand_like(x), target=t, explainer=recorder,
                     n_samples=K, generator=torch.Generator().manual_seed(3))
    original, *randomised = recorder.models(K)
    assert [changed_layers(m, model) for m in randomised] == [["0"], ["0", "1"]]  # bottom-up

    def gradient(m: nn.Module) -> torch.Tensor:
        return (m[1].weight @ m[0].weight).detach()[t]

    expected = [[spearman(gradient(original)[i].abs(), gradient(m)[i].abs()) for m in randomised]
                for i in range(3)]
    torch.testing.assert_close(result.curve, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.scores, result.curve.mean(1), rtol=0, atol=0)
    assert torch.equal(result.curve_x, torch.tensor([1.0, 2.0], dtype=torch.float64))
    other = compute("smooth_mprt", model, x, torch.zeros_like(x), target=t, explainer=signed_saliency,
                    n_samples=K, generator=torch.Generator().manual_seed(3))
    assert torch.equal(other.curve, result.curve)


def test_smooth_mprt_explains_x_plus_range_scaled_noise_then_x_on_every_model() -> None:
    """Copy k < K - 1 of sample i is x_i + noise * (max x_i - min x_i) * eps_ik, eps_ik the k-th
    randn draw of a generator seeded with sample i's seed (drawn after the randomisation's seed);
    copy K - 1 is x_i. The same copies are explained on the original and every randomised model."""
    model, x, t, a = setting("image")
    recorder = Recorder(identity)
    compute("smooth_mprt", model, x, a, target=t, explainer=recorder, n_samples=K, noise=0.2,
            generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    shared_seed(generator)
    draws = [torch.Generator().manual_seed(seed) for seed in sample_seeds(generator, 3)]
    eps = [torch.stack([torch.randn(x.shape[1:], generator=g) for g in draws]) for _ in range(K - 1)]
    scale = 0.2 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    expected = [*(x + scale * eps[k] for k in range(K - 1)), x]
    states = len(parameterised_layers(model)) + 1
    assert len(recorder.calls) == states * K
    for i, (_, inputs, _) in enumerate(recorder.calls):
        torch.testing.assert_close(inputs, expected[i % K], rtol=0, atol=0)


def test_model_independent_explanations_score_one_and_zero(modality: str) -> None:
    """An explainer that ignores the model: its denoised maps are the same for every model (the same
    noise), so smooth_mprt is 1 at every layer; its map of the randomised model is the scored one, so
    efficient_mprt is 0."""
    model, x = make_net(modality), make_inputs(modality, 3)
    smooth = compute("smooth_mprt", model, x, x, target=0, explainer=identity, n_samples=K)
    layers = len(parameterised_layers(model))
    torch.testing.assert_close(smooth.curve, torch.ones(3, layers, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    efficient = compute("efficient_mprt", model, x, x, target=0, explainer=identity)
    assert torch.equal(efficient.scores, torch.zeros(3, dtype=torch.float64))


def test_smooth_mprt_of_one_noise_free_copy_from_the_output_is_mprt() -> None:
    model, x, t, a = setting("sequence")
    generator = torch.Generator().manual_seed(2)
    smooth = compute("smooth_mprt", model, x, a, target=t, explainer=signed_saliency, n_samples=1,
                     order="top_down", generator=generator)
    mprt = compute("mprt", model, x, a, target=t, explainer=signed_saliency,
                   generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(smooth.curve, mprt.curve, rtol=1e-12, atol=1e-12)
    bottom_up = compute("smooth_mprt", model, x, a, target=t, explainer=signed_saliency, n_samples=1,
                        generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(bottom_up.curve, mprt.curve)


# ---------------------------------------------------------------------------------------------
# efficient MPRT: exact values


def test_efficient_mprt_is_the_relative_entropy_rise_from_the_scored_map() -> None:
    """The scored map takes 2 values equally often (H = ln 2), the explainer's map of the randomised
    model 4 values (H = ln 4): the rise is (ln 4 - ln 2) / ln 2 = 1. The explainer is asked only about
    the model with every layer randomised; a constant scored map (H = 0) scores NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.rand((2, 8), generator=torch.Generator().manual_seed(1))
    scored = torch.tensor([[0.0, 1.0] * 4, [3.0] * 8])
    recorder = Recorder(lambda m, inputs, target: torch.arange(8.0).remainder(4).expand_as(inputs).clone())
    result = compute("efficient_mprt", model, x, scored, target=0, explainer=recorder)
    assert result.scores[0].item() == pytest.approx(1.0, rel=1e-12) and torch.isnan(result.scores[1])
    ((explained, _, _),) = recorder.calls
    assert changed_layers(explained, model) == sorted(name for name, _ in parameterised_layers(model))


@pytest.mark.parametrize("absolute", [False, True])
def test_efficient_mprt_matches_quantus_on_the_same_randomised_model(absolute: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import quantus
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model, x, t, a = setting("image")
    ours = compute("efficient_mprt", model, x, a, target=t, explainer=signed_saliency, abs=absolute,
                   generator=torch.Generator().manual_seed(5))

    def same_models(self: PyTorchModel, order: str, seed: int):
        return cascading_randomisation(self.model, torch.Generator().manual_seed(5), order)

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", same_models)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.EfficientMPRT(abs=absolute, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a.numpy(),
            explain_func=quantus_explain, device="cpu")
    np.testing.assert_allclose(ours.scores.numpy(), theirs, rtol=1e-10)
    assert np.abs(theirs).min() > 1e-3  # not a trivial agreement at zero


# ---------------------------------------------------------------------------------------------
# smooth MPRT against Quantus


def quantus_smooth_mprt(model, x, t, a, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Quantus's SmoothMPRT (K samples, noise 0.1, bottom-up) on the models and noise ``recorder`` saw."""
    import quantus
    from quantus.helpers.model.pytorch_model import PyTorchModel

    names = [name for name, _ in parameterised_layers(model)]
    randomised = recorder.models(K)[1:]
    std = 0.1 * (x.numpy().max(axis=(1, 2, 3), keepdims=True) - x.numpy().min(axis=(1, 2, 3), keepdims=True))
    noise = [(inputs.double() - x.double()).numpy() / std for _, inputs, _ in recorder.calls[: K - 1]]
    calls = iter(range(10**6))

    def replayed_randn(*shape: int) -> np.ndarray:
        draw = noise[next(calls) % (K - 1)]  # the same K - 1 draws for every model, as ours
        assert draw.shape == shape
        return draw

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator",
                        lambda self, order, seed: iter(zip(names, randomised)))
    monkeypatch.setattr(np.random, "randn", replayed_randn)
    monkeypatch.setattr(quantus, "explain", quantus_explain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.SmoothMPRT(nr_samples=K, noise_magnitude=0.1, disable_warnings=True)
        return metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=a,
                      explain_func=quantus_explain, device="cpu")


def test_smooth_mprt_matches_quantus_given_the_same_noise_and_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a_batch Quantus denoises the original model's explanation too and compares it with the
    denoised randomised ones: our definition, and our curve. Given a_batch it compares that a_batch,
    not denoised, with them instead."""
    model, x, t, a = setting("image")
    recorder = Recorder()
    ours = compute("smooth_mprt", model, x, a, target=t, explainer=recorder, n_samples=K,
                   generator=torch.Generator().manual_seed(6))
    names = [name for name, _ in parameterised_layers(model)]
    theirs = quantus_smooth_mprt(model, x, t, None, recorder, monkeypatch)
    assert list(theirs) == ["original", *names]
    np.testing.assert_allclose(theirs["original"], 1.0, rtol=1e-12)  # the same noise, the same map
    np.testing.assert_allclose(ours.curve.numpy(), np.array([theirs[n] for n in names]).T, rtol=1e-6)

    given = quantus_smooth_mprt(model, x, t, a.numpy(), recorder, monkeypatch)
    outputs = torch.stack([out for _, _, out in recorder.calls]).view(len(names) + 1, K, *x.shape)
    denoised = outputs.double().mean(1)
    expected = [[spearman(a[i].abs(), denoised[s + 1, i].abs()) for s in range(len(names))] for i in range(3)]
    np.testing.assert_allclose(np.array([given[n] for n in names]).T, expected, rtol=1e-6)
    assert not np.allclose(ours.curve.numpy(), expected, rtol=1e-2)


# ---------------------------------------------------------------------------------------------
# batching, seeds, parameters, metadata


@pytest.mark.parametrize(("name", "params"), [("smooth_mprt", {"n_samples": K}), ("efficient_mprt", {})])
def test_batch_size_invariance_with_calls_of_at_most_batch_size_rows(name: str, params: dict) -> None:
    """Every call explains at most batch_size rows; without a batch size one call holds one copy of
    each of the N samples, never several copies of the batch."""
    model, x, t, a = setting("image", n=5)
    results = {}
    for batch_size in (None, 1, 2):
        recorder = Recorder()
        results[batch_size] = compute(name, model, x, a, target=t, explainer=recorder, batch_size=batch_size,
                                      generator=torch.Generator().manual_seed(7), **params)
        rows = {len(inputs) for _, inputs, _ in recorder.calls}
        assert rows == ({5} if batch_size is None else {batch_size} | ({1} if batch_size == 2 else set()))
    for batch_size in (1, 2):  # the contract's tolerance: kernels may round differently per row count
        torch.testing.assert_close(results[batch_size].scores, results[None].scores, rtol=1e-4, atol=1e-5)
        if results[None].curve is not None:
            torch.testing.assert_close(results[batch_size].curve, results[None].curve, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "params"), [("smooth_mprt", {"n_samples": K}), ("efficient_mprt", {})])
def test_a_seed_reproduces_the_result_and_another_seed_changes_it(name: str, params: dict) -> None:
    model, x, t, a = setting("sequence")

    def run(seed: int) -> torch.Tensor:
        return compute(name, model, x, a, target=t, explainer=signed_saliency,
                       generator=torch.Generator().manual_seed(seed), **params).scores

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


def test_parameters_are_checked() -> None:
    model, x, t, a = setting("tabular")
    for params in ({"n_samples": 0}, {"noise": -0.1}):
        with pytest.raises(InputError):
            compute("smooth_mprt", model, x, a, target=t, explainer=signed_saliency, **params)
    with pytest.raises(UnknownNameError, match="layer order"):
        compute("smooth_mprt", model, x, a, target=t, explainer=signed_saliency, order="sideways")
    with pytest.raises(InputError, match="bins"):
        compute("efficient_mprt", model, x, a, target=t, explainer=signed_saliency, bins=0)


def test_metadata_and_defaults_are_the_papers() -> None:
    smooth, efficient = METRICS.get("smooth_mprt"), METRICS.get("efficient_mprt")
    for cls in (smooth, efficient):
        assert cls.category == "randomisation" and cls.needs_explainer and cls.stochastic
    assert not smooth.higher_is_better and efficient.higher_is_better
    assert smooth.Params() == smooth.Params(n_samples=50, noise=0.1, order="bottom_up", abs=True)
    assert efficient.Params() == efficient.Params(bins=100, abs=False)
    assert smooth.curve_label is not None and efficient.curve_label is None
