"""Baseline families: for every registered family its shape, dtype, documented support, reproducibility,
independence from batching and use of the generator; and integrated gradients from each family."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import SHAPES, make_inputs, make_linear, make_net
from xaibench.attribution import attribute
from xaibench.attribution.baselines import BASELINES, Blur, Gaussian, baseline_family
from xaibench.attribution.blur import gaussian_blur
from xaibench.attribution.draws import sample_seeds
from xaibench.attribution.path import PathIntegratedGradients, quadrature, straight_path_integral
from xaibench.attribution.reference import simple_baseline
from xaibench.core.errors import IncompatibleError, InputError, UnknownNameError

TARGET = torch.tensor([0, 1, 2, 1])
COUNT = 3
CASES = [(name, modality) for name, cls in BASELINES.items() for modality in cls.modalities]


def references(modality: str, n: int = 5) -> torch.Tensor:
    return make_inputs(modality, n=n, seed=11)


def family(name: str, modality: str):  # noqa: ANN201 - the registered class varies
    return baseline_family(name, references(modality))


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def seeds_of(seed: int, n: int = 4) -> list[int]:
    return sample_seeds(torch.Generator().manual_seed(seed), n)


def spread(x: torch.Tensor) -> torch.Tensor:
    """Inputs with per-channel ranges that differ, so per-sample and per-channel statistics differ."""
    scale = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
    return x * scale - 0.5 if x.ndim > 2 else x * 3 - 1


def channel_view(draws: torch.Tensor) -> torch.Tensor:
    """(N, count, C, D) with C = 1 for tabular draws (N, count, F)."""
    return draws.reshape(*draws.shape[:2], draws.shape[2] if draws.ndim > 3 else 1, -1)


def test_registry_lists_every_family_with_metadata() -> None:
    expected = {"zero", "black", "white", "mean", "constant", "uniform", "gaussian", "blur",
                "train_sample", "train_mean"}  # fmt: skip
    assert set(BASELINES.list()) == expected
    for name, cls in BASELINES.items():
        assert cls.name == name and cls.description
        assert isinstance(cls.stochastic, bool) and isinstance(cls.needs_references, bool)
    assert {n for n, c in BASELINES.items() if c.needs_references} == {"train_sample", "train_mean"}
    random = {"constant", "uniform", "gaussian", "blur", "train_sample"}
    assert {n for n, c in BASELINES.items() if c.stochastic} == random


@pytest.mark.parametrize(("name", "modality"), CASES)
def test_shape_dtype_reproducibility_and_generator_use(name: str, modality: str) -> None:
    fam, x = family(name, modality), spread(make_inputs(modality))
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    draws = fam.sample(x, generator, COUNT)
    assert draws.shape == (4, COUNT, *SHAPES[modality]) and draws.dtype == x.dtype
    assert torch.isfinite(draws).all()
    assert torch.equal(generator.get_state(), state) != fam.stochastic  # deterministic: untouched
    assert torch.equal(fam.sample(x, torch.Generator().manual_seed(3), COUNT), draws)
    other = fam.sample(x, torch.Generator().manual_seed(4), COUNT)
    assert torch.equal(other, draws) != fam.stochastic
    assert fam.sample(x.double(), torch.Generator().manual_seed(3), 1).dtype == torch.float64


@pytest.mark.parametrize(("name", "modality"), CASES)
def test_draws_do_not_depend_on_batching(name: str, modality: str) -> None:
    fam, x = family(name, modality), spread(make_inputs(modality))
    seeds = seeds_of(5)
    whole = fam.sample(x, torch.Generator().manual_seed(5), COUNT)
    halves = torch.cat([fam.draw(x[:1], generators(seeds[:1]), COUNT),
                        fam.draw(x[1:], generators(seeds[1:]), COUNT)])  # fmt: skip
    torch.testing.assert_close(halves, whole, rtol=0, atol=1e-6)
    # a sample's draws depend on its seed only: the same row alone gives the same baselines
    torch.testing.assert_close(fam.draw(x[2:3], generators(seeds[2:3]), COUNT), whole[2:3], rtol=0, atol=1e-6)


def test_deterministic_families_are_exact(modality: str) -> None:
    x, refs = spread(make_inputs(modality)), references(modality)
    g = torch.Generator()
    assert torch.equal(baseline_family("zero").sample(x, g, COUNT), torch.zeros(4, COUNT, *x.shape[1:]))
    for kind in ("black", "white", "mean"):
        expected = simple_baseline(x, kind).unsqueeze(1).expand(-1, COUNT, *x.shape[1:])
        assert torch.equal(baseline_family(kind).sample(x, g, COUNT), expected)
    train_mean = baseline_family("train_mean", refs).sample(x, g, COUNT)
    torch.testing.assert_close(train_mean, refs.mean(0).expand_as(train_mean), rtol=0, atol=1e-7)


def test_constant_is_one_value_per_channel_in_its_range(modality: str) -> None:
    x = spread(make_inputs(modality))
    draws = channel_view(baseline_family("constant").sample(x, torch.Generator().manual_seed(1), 50))
    values = draws[..., :1]
    assert torch.equal(draws, values.expand_as(draws))  # constant over each channel's positions
    flat = channel_view(x.unsqueeze(1))
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    assert ((values >= low) & (values <= high)).all()
    # 50 draws in a channel's range cover most of it (each gap is below a third with certainty ~1 - 1e-8)
    assert ((values.amin(1, keepdim=True) - low) < (high - low) / 3).all()
    assert ((high - values.amax(1, keepdim=True)) < (high - low) / 3).all()
    if x.ndim > 2:  # channels draw independently: their positions within their ranges differ
        unit = (values - low) / (high - low)
        assert not torch.allclose(unit[:, :, 0], unit[:, :, 1])


def test_uniform_fills_each_channels_range(modality: str) -> None:
    x = spread(make_inputs(modality))
    draws = channel_view(baseline_family("uniform").sample(x, torch.Generator().manual_seed(2), 400))
    flat = channel_view(x.unsqueeze(1))
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    assert ((draws >= low) & (draws <= high)).all()
    # mean and variance of U[low, high) over 400 draws x elements, within ~6 standard errors
    unit = (draws - low) / (high - low)
    per_channel = unit.transpose(1, 2).flatten(2)
    assert (per_channel.mean(-1) - 0.5).abs().max() < 6 * math.sqrt(1 / 12 / per_channel.shape[-1])
    assert (per_channel.var(-1) - 1 / 12).abs().max() < 0.01


def diffusion_schedule() -> torch.Tensor:
    """abar_t for betas linspace(1e-4, 0.02, 500), written out independently of the module."""
    betas = [1e-4 + (0.02 - 1e-4) * t / 499 for t in range(500)]
    return torch.tensor([math.prod(1 - b for b in betas[: t + 1]) for t in range(500)], dtype=torch.float64)


def test_gaussian_is_ddpm_noise_rescaled_per_channel(modality: str) -> None:
    x, seeds = spread(make_inputs(modality)).double(), seeds_of(6)
    draws = Gaussian().draw(x, generators(seeds), COUNT)
    schedule = diffusion_schedule()
    levels = Gaussian().levels(generators(seeds), 40)
    nearest = (levels[..., None] - schedule).abs().min(-1).values
    assert (nearest < 1e-12).all()  # every level is one of the schedule's products (up to rounding)
    assert levels.min() >= schedule[-1] and levels.max() <= schedule[0]
    for i, gen in enumerate(generators(seeds)):  # the documented draws, one sample at a time
        t = torch.randint(500, (COUNT,), generator=gen)
        eps = torch.randn((COUNT, *x.shape[1:]), generator=gen, dtype=x.dtype)
        abar = schedule[t].view(-1, *([1] * (x.ndim - 1)))
        z = channel_view((abar.sqrt() * x[i] + (1 - abar).sqrt() * eps).unsqueeze(0))
        z = (z - z.amin(-1, keepdim=True)) / (z.amax(-1, keepdim=True) - z.amin(-1, keepdim=True))
        flat = channel_view(x[i : i + 1].unsqueeze(1))
        low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
        expected = (low + z * (high - low)).reshape(COUNT, *x.shape[1:])
        torch.testing.assert_close(draws[i], expected, rtol=0, atol=1e-12)
    # the rescale maps each channel's extremes onto the input channel's extremes
    flat, drawn = channel_view(x.unsqueeze(1)), channel_view(draws)
    torch.testing.assert_close(drawn.amin(-1), flat.amin(-1).expand(-1, COUNT, -1))
    torch.testing.assert_close(drawn.amax(-1), flat.amax(-1).expand(-1, COUNT, -1))


@pytest.mark.parametrize("modality", ["image", "sequence"])
def test_blur_is_gaussian_blur_at_the_drawn_sigma(modality: str) -> None:
    x, seeds = spread(make_inputs(modality)), seeds_of(7)
    draws = Blur().draw(x, generators(seeds), COUNT)
    sigmas = Blur().sigmas(x, generators(seeds), COUNT)
    side = max(x.shape[2:])
    assert (sigmas >= 3 / 224 * side).all() and (sigmas <= 50 / 224 * side).all()
    for i in range(4):
        for j in range(COUNT):
            expected = gaussian_blur(x[i : i + 1], float(sigmas[i, j]))[0]
            torch.testing.assert_close(draws[i, j], expected, rtol=0, atol=1e-6)
    narrow = Blur(sigma_min=1.0, sigma_max=1.5).sigmas(x, generators(seeds), 100)
    assert (narrow >= 1.0).all() and (narrow <= 1.5).all() and narrow.max() - narrow.min() > 0.4
    with pytest.raises(InputError, match="sigma_min <= sigma_max"):
        Blur(sigma_min=2.0, sigma_max=1.0).sample(x, torch.Generator(), 1)


def test_blur_refuses_tabular_inputs() -> None:
    with pytest.raises(IncompatibleError, match="does not apply to tabular"):
        Blur().sample(make_inputs("tabular"), torch.Generator(), 1)


def test_train_sample_draws_reference_rows(modality: str) -> None:
    x, refs, seeds = make_inputs(modality), references(modality), seeds_of(8)
    draws = baseline_family("train_sample", refs).draw(x, generators(seeds), 20)
    for i, gen in enumerate(generators(seeds)):
        picks = torch.randint(refs.shape[0], (20,), generator=gen)
        assert torch.equal(draws[i], refs[picks])
    rows = draws.flatten(0, 1).flatten(1)
    matches = (rows[:, None, :] == refs.flatten(1)[None]).all(-1)
    assert matches.any(1).all()


def test_train_families_need_references_of_the_inputs_shape() -> None:
    x = make_inputs("image")
    for name in ("train_sample", "train_mean"):
        with pytest.raises(InputError, match="needs references"):
            baseline_family(name)
        with pytest.raises(InputError, match="references must have shape"):
            baseline_family(name, torch.zeros(3, 6)).sample(x, torch.Generator(), 1)
    with pytest.raises(UnknownNameError, match="did you mean 'blur'"):
        baseline_family("blurr")
    with pytest.raises(InputError, match="count must be at least 1"):
        baseline_family("zero").sample(x, None, 0)
    with pytest.raises(InputError, match="needs a generator"):
        baseline_family("uniform").sample(x, None, 1)


# ---------------------------------------------------------------------------------------------
# integrated gradients from any family


def integrated(model: torch.nn.Module, x: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
    alphas, weights = quadrature("gausslegendre", 8)
    return straight_path_integral(model, x, baselines, TARGET, alphas, weights)


def test_simple_baselines_give_the_same_integrated_gradients(modality: str) -> None:
    model, x = make_net(modality), make_inputs(modality)
    assert not PathIntegratedGradients.stochastic  # the default (zero) stays deterministic
    for kind in ("zero", "black", "mean"):
        generator = torch.Generator().manual_seed(0)
        state = generator.get_state()
        ours = attribute("path_integrated_gradients", model, x, target=TARGET, n_steps=8, baseline=kind,
                         generator=generator)  # fmt: skip
        assert torch.equal(ours, integrated(model, x, simple_baseline(x, kind)))
        assert torch.equal(generator.get_state(), state)


def test_blur_baseline_is_reproducible_and_batch_invariant() -> None:
    model, x = make_net("image"), make_inputs("image")

    def run(seed: int, batch_size: int | None = None) -> torch.Tensor:
        return attribute("path_integrated_gradients", model, x, target=TARGET, n_steps=8, baseline="blur",
                         generator=torch.Generator().manual_seed(seed), batch_size=batch_size)  # fmt: skip

    first = run(0)
    assert torch.equal(run(0), first)
    torch.testing.assert_close(run(0, batch_size=3), first)
    assert not torch.equal(run(1), first)
    drawn = Blur().sample(x, torch.Generator().manual_seed(0), 1)
    torch.testing.assert_close(first, integrated(model, x, drawn), rtol=0, atol=1e-7)


@pytest.mark.parametrize(("name", "modality"), CASES)
def test_completeness_on_a_linear_model(name: str, modality: str) -> None:
    model, x, refs = make_linear(modality), spread(make_inputs(modality)), references(modality)
    out = attribute("path_integrated_gradients", model, x, target=TARGET, n_steps=4, baseline=name,
                    references=refs, generator=torch.Generator().manual_seed(9))  # fmt: skip
    start = baseline_family(name, refs).sample(x, torch.Generator().manual_seed(9))[:, 0]
    with torch.no_grad():
        change = (model(x) - model(start)).gather(1, TARGET[:, None])[:, 0]
    torch.testing.assert_close(out.flatten(1).sum(1), change, rtol=1e-5, atol=1e-5)
    weight = torch.stack([model.weight(int(t)) for t in TARGET])
    torch.testing.assert_close(out, weight * (x - start), rtol=1e-5, atol=1e-6)


def test_path_method_needs_references_for_train_families() -> None:
    model, x = make_net("tabular"), make_inputs("tabular")
    with pytest.raises(InputError, match="needs references"):
        attribute("path_integrated_gradients", model, x, target=0, baseline="train_sample")
    with pytest.raises(IncompatibleError, match="does not apply to tabular"):
        attribute("path_integrated_gradients", model, x, target=0, baseline="blur")
    with pytest.raises(UnknownNameError, match="unknown baseline"):
        attribute("path_integrated_gradients", model, x, target=0, baseline="noise")
