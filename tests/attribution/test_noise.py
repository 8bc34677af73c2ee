"""SmoothGrad, VarGrad, GradientSHAP and expected gradients: closed forms on linear models, plain loops
over the same draws on non-linear ones, batch-size invariance and determinism, and memory bounded by the
chunk of samples rather than by the number of samples."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.conftest import SHAPES, make_inputs, make_linear, make_net
from xaibench.attribution.base import Method
from xaibench.attribution.draws import sample_seeds
from xaibench.attribution.noise import ExpectedGradients, GradientShap, SmoothGrad, VarGrad
from xaibench.core.errors import InputError

TARGET = torch.tensor([0, 1, 2, 1])
ALL = {
    "smoothgrad": SmoothGrad,
    "vargrad": VarGrad,
    "gradient_shap": GradientShap,
    "expected_gradients": ExpectedGradients,
}


def references(modality: str, n: int = 3) -> torch.Tensor:
    return torch.rand((n, *SHAPES[modality]), generator=torch.Generator().manual_seed(9))


def extra_params(name: str, modality: str) -> dict[str, object]:
    return {"references": references(modality)} if name == "expected_gradients" else {}


def gradient(model: torch.nn.Module, point: torch.Tensor) -> torch.Tensor:
    point = point.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(point).gather(1, TARGET[:, None]).sum(), point)
    return grad


def generators(seed: int, n: int = 4) -> list[torch.Generator]:
    """The per-sample generators a method builds from ``Generator().manual_seed(seed)``."""
    seeds = sample_seeds(torch.Generator().manual_seed(seed), n)
    return [torch.Generator().manual_seed(s) for s in seeds]


def per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.view(-1, *([1] * (ndim - 1)))


def test_smoothgrad_on_linear_model_is_the_weight_and_vargrad_is_zero(modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    w = model.weight(2).expand_as(x)
    torch.testing.assert_close(SmoothGrad().attribute(model, x, target=2, abs=False), w, rtol=1e-6, atol=0)
    torch.testing.assert_close(SmoothGrad().attribute(model, x, target=2), w.abs(), rtol=1e-6, atol=0)
    assert torch.equal(VarGrad().attribute(model, x, target=2), torch.zeros_like(x))


@pytest.mark.parametrize("use_abs", [False, True])
def test_smoothgrad_and_vargrad_equal_a_loop_over_the_same_draws(modality: str, use_abs: bool) -> None:
    # each sample's noise is one randn((n, *S)) from its own generator, scaled by stdev * (max - min)
    model, x = make_net(modality), make_inputs(modality)
    noise = torch.stack([torch.randn((6, *SHAPES[modality]), generator=g) for g in generators(3)])
    scale = per_sample(0.2 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)), x.ndim)
    grads = torch.stack([gradient(model, x + scale * noise[:, j]) for j in range(6)], dim=1)
    grads = grads.abs() if use_abs else grads
    kwargs = {"target": TARGET, "n_samples": 6, "stdev": 0.2, "abs": use_abs}
    smooth = SmoothGrad().attribute(model, x, generator=torch.Generator().manual_seed(3), **kwargs)
    var = VarGrad().attribute(model, x, generator=torch.Generator().manual_seed(3), **kwargs)
    torch.testing.assert_close(smooth, grads.mean(1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(var, grads.var(1, correction=0), rtol=1e-4, atol=1e-10)


def test_gradient_shap_and_expected_gradients_on_linear_model_with_one_baseline(modality: str) -> None:
    model, x = make_linear(modality), make_inputs(modality)
    w = model.weight(1)
    mean = per_sample(x.flatten(1).mean(1), x.ndim)
    torch.testing.assert_close(GradientShap().attribute(model, x, target=1, baselines="mean"), w * (x - mean))
    reference = references(modality, n=1)
    out = ExpectedGradients().attribute(model, x, target=1, references=reference)
    torch.testing.assert_close(out, w * (x - reference), rtol=1e-6, atol=1e-7)


def test_expected_gradients_equals_a_loop_over_the_same_draws(modality: str) -> None:
    # per sample, from its own generator: reference indices (n,), then positions alpha (n, 1)
    model, x, refs = make_net(modality), make_inputs(modality), references(modality)
    draws = [(torch.randint(3, (5,), generator=g), torch.rand((5, 1), generator=g)) for g in generators(4)]
    picks, alphas = (torch.stack(parts) for parts in zip(*draws))
    terms = []
    for j in range(5):
        baseline, alpha = refs[picks[:, j]], per_sample(alphas[:, j, 0], x.ndim)
        terms.append(gradient(model, baseline + alpha * (x - baseline)) * (x - baseline))
    generator = torch.Generator().manual_seed(4)
    out = ExpectedGradients().attribute(
        model, x, target=TARGET, references=refs, n_samples=5, generator=generator
    )
    torch.testing.assert_close(out, torch.stack(terms).mean(0), rtol=1e-5, atol=1e-8)


def test_gradient_shap_with_input_noise_on_linear_model() -> None:
    # per sample, from its own generator: baseline kinds (n,), alphas (n, 1), noise (n, *S);
    # linear F: w * mean(x~ - b)
    model, x = make_linear("image"), make_inputs("image")
    picks, noise = [], []
    for g in generators(8):
        picks.append(torch.randint(2, (7,), generator=g))
        torch.rand((7, 1), generator=g)
        noise.append(torch.randn((7, *SHAPES["image"]), generator=g))
    picks, noise = torch.stack(picks), torch.stack(noise)
    scale = per_sample(0.1 * (x.flatten(1).amax(1) - x.flatten(1).amin(1)), x.ndim)
    white = per_sample(x.flatten(1).amax(1), x.ndim)
    chosen = picks.view(4, 7, 1, 1, 1) * white[:, None]  # kind 1 is white, kind 0 is zero
    expected = model.weight(0) * (x[:, None] + scale[:, None] * noise - chosen).mean(1)
    out = GradientShap().attribute(
        model, x, target=0, baselines="zero,white", n_samples=7, stdev=0.1,
        generator=torch.Generator().manual_seed(8),
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(ALL))
def test_batch_size_invariance_and_determinism(name: str) -> None:
    method: Method = ALL[name]()
    model, x = make_net("image"), make_inputs("image", n=5)
    params = {"n_samples": 6, **extra_params(name, "image")}

    def run(seed: int, batch_size: int | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return method.attribute(model, x, target=2, batch_size=batch_size, generator=generator, **params)

    full = run(0, None)
    assert torch.equal(run(0, None), full)
    assert not torch.equal(run(1, None), full)
    for batch_size in (2, 7):
        torch.testing.assert_close(run(0, batch_size), full)


MEMORY_PARAMS = {
    "smoothgrad": {},
    "vargrad": {},
    "gradient_shap": {"baselines": "zero,white,mean", "stdev": 0.1},  # a pool of 3 baselines and noise
    "expected_gradients": {"references": references("image")},
}


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an aten operation returns (factories, views included)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


@pytest.mark.parametrize("name", sorted(ALL))
def test_memory_is_bounded_by_the_chunk_not_by_the_number_of_samples(name: str) -> None:
    # 16 samples, 4 draws each, batch_size 4: one sample (4 rows) per chunk. Every tensor the method
    # builds, random draws included, must then stay within the size of the inputs themselves (16
    # samples), while drawing the noise, baselines or positions for all samples at once builds at least
    # 16 x 4 samples' worth. The same probe with batch_size None sees those whole-batch tensors, which
    # shows that it would catch them.
    model, x = make_net("image"), make_inputs("image", n=16)
    params = {"n_samples": 4, **MEMORY_PARAMS[name]}

    def largest(batch_size: int | None) -> int:
        probe = LargestTensor()
        with probe:
            ALL[name]().attribute(model, x, target=1, batch_size=batch_size, **params)
        return probe.largest

    assert largest(4) <= x.numel()
    assert largest(None) >= 4 * x.numel()


@pytest.mark.parametrize("name", sorted(ALL))
def test_draws_are_bit_identical_for_every_batch_size(name: str) -> None:
    # the points reaching the model, in order, are the same bits whatever the chunking
    model, x = make_net("image"), make_inputs("image", n=5)
    params = {"n_samples": 3, **MEMORY_PARAMS[name]}

    def points(batch_size: int | None) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
        try:
            generator = torch.Generator().manual_seed(0)
            ALL[name]().attribute(model, x, target=1, batch_size=batch_size, generator=generator, **params)
        finally:
            handle.remove()
        return torch.cat(seen)

    full = points(None)
    assert full.shape == (5 * 3, *x.shape[1:])
    for batch_size in (1, 2, 7):
        assert torch.equal(points(batch_size), full)


def test_metadata_and_bad_parameters() -> None:
    assert ExpectedGradients.needs_references and not GradientShap.needs_references
    assert all(cls.stochastic for cls in ALL.values())
    model, x = make_net("tabular"), make_inputs("tabular")
    with pytest.raises(InputError, match="needs references"):
        ExpectedGradients().attribute(model, x, target=0)
    with pytest.raises(InputError, match=r"shape \(N_ref, 6\)"):
        ExpectedGradients().attribute(model, x, target=0, references=torch.zeros(3, 5))
    with pytest.raises(InputError, match="n_samples >= 1"):
        SmoothGrad().attribute(model, x, target=0, n_samples=0)
    with pytest.raises(InputError, match="at least one baseline"):
        GradientShap().attribute(model, x, target=0, baselines=" , ")
    # string parameters (from the command line) are converted to the declared types
    signed = SmoothGrad().attribute(make_linear("tabular"), x, target=0, abs="false")
    assert bool((signed < 0).any())
