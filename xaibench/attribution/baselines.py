"""Baseline families: samplers of path starts ("baselines") for path methods and for BEE's arms.

BEE (Barkan, Elisha, Weill & Koenigstein, AAAI 2025, "Metric-Adapted Explanations via Baseline
Exploration-Exploitation") integrates gradients from baselines drawn from a mixture of families and
learns per metric which family to draw from. Each family here is a class registered in ``BASELINES``
with metadata (``stochastic``, ``needs_references``, ``modalities``, ``description``) and one sampler,
batched over inputs:

    family.sample(x, generator, count) -> (N, count, *S)

``count`` draws per input (BEE draws many). A stochastic family takes one seed per sample from
``generator`` (``sample_seeds``) and makes all of a sample's draws from a generator of its own, so a
sample's baselines depend only on its seed, never on the batch it comes in; ``draw`` takes those
per-sample generators directly (for callers that draw chunk by chunk). Deterministic families never
touch the generator. Families that build baselines from training data take a ``references`` tensor
(R, *S) in model space, supplied by the caller.

Statistics "per channel" are over axis 1 of images (N, C, H, W) and sequences (N, C, L); a tabular
sample (F,) counts as one channel. Unlike BEE's code, which builds baselines of an intermediate
activation, these are baselines of the model's input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from xaibench.attribution.base import modality_of
from xaibench.attribution.blur import gaussian_blur
from xaibench.attribution.draws import (
    draw_indices,
    draw_normal,
    draw_uniform,
    sample_generators,
    sample_seeds,
)
from xaibench.attribution.reference import simple_baseline
from xaibench.core.errors import IncompatibleError, InputError
from xaibench.core.lazy import lazy_import
from xaibench.core.registry import Registry
from xaibench.models.meta import MODALITIES

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

BASELINES: Registry[type[BaselineFamily]] = Registry("baseline")

# DDPM's linear noise schedule (Ho et al., NeurIPS 2020), as BEE's "normal" arm uses it.
DIFFUSION_BETAS = (1e-4, 0.02)
DIFFUSION_STEPS = 500
# BEE's blur arm draws sigma in 3..50 on 224-pixel images; the default range scales with the image.
BLUR_SIGMA_PER_PIXEL = (3.0 / 224.0, 50.0 / 224.0)


class BaselineFamily:
    """Base class of baseline families; subclasses set the metadata and implement ``_draw``.

    Metadata (class attributes): ``stochastic`` (draws from the generator), ``needs_references``
    (built from training samples), ``modalities`` it applies to, ``description`` (one line).
    """

    name: ClassVar[str]
    stochastic: ClassVar[bool] = False
    needs_references: ClassVar[bool] = False
    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    description: ClassVar[str] = ""

    def sample(self, x: torch.Tensor, generator: torch.Generator | None, count: int = 1) -> torch.Tensor:
        """``count`` baselines per input of ``x`` (N, *S): a fresh tensor (N, count, *S) in x's dtype.

        Args:
            x: the inputs, batch first, in model space.
            generator: gives one seed per sample (stochastic families only; others ignore it).
            count: baselines per input.

        Raises:
            InputError: for count < 1, or a stochastic family without a generator.
            IncompatibleError: for a modality the family does not apply to.
        """
        generators: list[torch.Generator] = []
        if self.stochastic:
            if generator is None:
                raise InputError(f"baseline {self.name!r} is random and needs a generator")
            generators = sample_generators(sample_seeds(generator, x.shape[0]), slice(None))
        return self.draw(x, generators, count)

    def draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int = 1) -> torch.Tensor:
        """Like ``sample``, with the per-sample generators given: sample i draws only from
        ``generators[i]`` (stochastic families need one per sample; others ignore them)."""
        if count < 1:
            raise InputError(f"baseline count must be at least 1, got {count}")
        if (modality := modality_of(x)) not in self.modalities:
            raise IncompatibleError(f"baseline {self.name!r} does not apply to {modality} inputs")
        if self.stochastic and len(generators) != x.shape[0]:
            raise InputError(f"baseline {self.name!r} needs one generator per sample")
        return self._draw(x, generators, count).contiguous()

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        raise NotImplementedError


def baseline_family(name: str, references: object = None) -> BaselineFamily:
    """The family called ``name``, given ``references`` (R, *S) when it needs them.

    Raises:
        UnknownNameError: for an unknown family (with the closest name).
        InputError: for a family that needs references when none are given.
    """
    cls = BASELINES.get(name)
    return cls(references) if cls.needs_references else cls()


def names_need_references(names: object) -> bool:
    """Whether a comma-separated list of family names (``-p baseline=...``, ``-p arms=...``) names a
    family drawn from training samples; unknown names do not count (they fail where they are used)."""
    listed = [n.strip() for n in str(names or "").split(",")]
    return any(n in BASELINES and BASELINES.get(n).needs_references for n in listed)


def repeated(baseline: torch.Tensor, count: int) -> torch.Tensor:
    """(N, *S) -> (N, count, *S): the same baseline ``count`` times (a broadcast view)."""
    return baseline.unsqueeze(1).expand(-1, count, *baseline.shape[1:])


def channel_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel minimum and maximum of x, each shaped (N, 1, C, 1) (C = 1 for tabular)."""
    flat = channels(x.unsqueeze(1))
    return flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)


def channels(draws: torch.Tensor) -> torch.Tensor:
    """A view (N, count, C, D) of draws (N, count, *S): channels apart, each channel's elements flat."""
    n_channels = draws.shape[2] if draws.ndim > 3 else 1
    return draws.reshape(*draws.shape[:2], n_channels, -1)


@BASELINES.register("zero", description="the all-zero input")
class Zero(BaselineFamily):
    """Every element exactly 0 (integrated gradients' usual baseline)."""

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        return torch.zeros((x.shape[0], count, *x.shape[1:]), dtype=x.dtype, device=x.device)


class _SimpleConstant(BaselineFamily):
    """reference.simple_baseline's constant inputs, kept as families so ``baseline=black`` still works."""

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        return repeated(simple_baseline(x, self.name), count)


@BASELINES.register("black", description="the sample's minimum over all elements, everywhere")
class Black(_SimpleConstant):
    """Every element ``min(x)`` of the sample (all channels)."""


@BASELINES.register("white", description="the sample's maximum over all elements, everywhere")
class White(_SimpleConstant):
    """Every element ``max(x)`` of the sample (all channels)."""


@BASELINES.register("mean", description="the sample's mean over all elements, everywhere")
class Mean(_SimpleConstant):
    """Every element ``mean(x)`` of the sample (all channels)."""


@BASELINES.register("constant", stochastic=True, description="one random constant per channel (BEE)")
class Constant(BaselineFamily):
    """BEE's constant arm: per draw and channel c, one value ``v_c ~ U[min_c(x), max_c(x))`` of that
    sample, constant over the channel's positions. Each sample draws ``rand((count, C))``."""

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        low, high = channel_range(x)
        n_channels = low.shape[2]
        u = draw_uniform(generators, (count, n_channels), x.dtype).to(x.device).unsqueeze(-1)
        values = low + u * (high - low)  # (N, count, C, 1)
        return values.expand(*values.shape[:3], channels(x.unsqueeze(1)).shape[-1]).reshape(
            x.shape[0], count, *x.shape[1:]
        )


@BASELINES.register("uniform", stochastic=True, description="uniform noise in each channel's range (BEE)")
class Uniform(BaselineFamily):
    """Uniform noise: every element of channel c independently ``U[min_c(x), max_c(x))`` of that sample.

    BEE's uniform arm mixes the input with U[0, 1) noise at a diffusion noise level (almost pure noise)
    and rescales each channel to its min/max; this draws the noise directly in each channel's range.
    The range rather than U(0, 1) keeps the baseline in the input's own value domain whatever the
    model's normalisation (standardised images span about [-2, 2.6], not [0, 1]). Each sample draws
    ``rand((count, *S))``.
    """

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        low, high = channel_range(x)
        u = draw_uniform(generators, (count, *x.shape[1:]), x.dtype).to(x.device)
        return channels(u).mul_(high - low).add_(low).reshape(u.shape)


def diffusion_levels() -> torch.Tensor:
    """``abar_t = prod_{s <= t} (1 - beta_s)`` of the linear schedule, float64 (DIFFUSION_STEPS,) on the
    CPU, where the draws that index it are made."""
    betas = torch.linspace(*DIFFUSION_BETAS, DIFFUSION_STEPS, dtype=torch.float64, device="cpu")
    return torch.cumprod(1.0 - betas, 0)


@BASELINES.register("gaussian", stochastic=True, description="input noised at a random diffusion level (BEE)")
class Gaussian(BaselineFamily):
    """BEE's normal arm: the input noised as in DDPM's forward process (Ho et al., NeurIPS 2020), then
    rescaled to the sample's range per channel.

    Per draw: a step t uniform in 0..499, ``abar = diffusion_levels()[t]`` (betas linspace(1e-4, 0.02,
    500), so abar runs from 0.9999 down to 0.0064), ``eps ~ N(0, 1)`` per element,
    ``z = sqrt(abar) x + sqrt(1 - abar) eps``, then each channel c of z mapped linearly onto
    ``[min_c(x), max_c(x)]`` (a constant channel of z onto ``min_c(x)``).
    REFERENCES reports BEE's code as ``(1 - abar) eps``; this follows DDPM's definition,
    ``sqrt(1 - abar)``, under which z has unit variance for standardised x. Each sample draws, in this
    order, ``randint(500, (count,))`` then ``randn((count, *S))``.
    """

    def levels(self, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        """The noise levels abar, (N, count) float64: the first draws each sample makes."""
        return diffusion_levels()[draw_indices(generators, DIFFUSION_STEPS, count)]

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        abar = self.levels(generators, count).to(x.device, x.dtype).view(x.shape[0], count, 1, 1)
        eps = channels(draw_normal(generators, (count, *x.shape[1:]), x.dtype).to(x.device))
        noised = abar.sqrt() * channels(x.unsqueeze(1)) + (1 - abar).sqrt() * eps  # (N, count, C, D)
        low, high = channel_range(x)
        z_low, z_high = noised.amin(-1, keepdim=True), noised.amax(-1, keepdim=True)
        unit = (noised - z_low) / (z_high - z_low).clamp_min(torch.finfo(x.dtype).tiny)
        return (low + unit * (high - low)).reshape(x.shape[0], count, *x.shape[1:])


@BASELINES.register("blur", stochastic=True, modalities=("image", "sequence"),
                    description="the input blurred with a random sigma (BEE)")  # fmt: skip
class Blur(BaselineFamily):
    """BEE's blur arm: ``gaussian_blur(x, sigma)`` (reflect boundaries, per channel), one sigma per draw
    ``sigma ~ U[sigma_min, sigma_max)`` in pixels. Images and sequences only.

    Args:
        sigma_min, sigma_max: the range in pixels; None scales BEE's 3..50 on 224-pixel images to the
            longest spatial side (3/224 and 50/224 of it: 0.11..1.8 on 8 pixels, 0.38..6.25 on 28).

    Each sample draws ``rand((count,))`` in float64.
    """

    def __init__(self, sigma_min: float | None = None, sigma_max: float | None = None) -> None:
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma_range(self, x: torch.Tensor) -> tuple[float, float]:
        """(sigma_min, sigma_max) in pixels for inputs ``x``.

        Raises:
            InputError: unless 0 <= sigma_min <= sigma_max.
        """
        side = max(x.shape[2:])
        low = BLUR_SIGMA_PER_PIXEL[0] * side if self.sigma_min is None else self.sigma_min
        high = BLUR_SIGMA_PER_PIXEL[1] * side if self.sigma_max is None else self.sigma_max
        if not 0 <= low <= high:
            raise InputError(f"blur baselines need 0 <= sigma_min <= sigma_max, got {low} and {high}")
        return low, high

    def sigmas(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        """The blur widths, (N, count) float64: the draws each sample makes."""
        low, high = self.sigma_range(x)
        return low + (high - low) * draw_uniform(generators, (count,), torch.float64)

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        return gaussian_blur(x, self.sigmas(x, generators, count))


class _FromReferences(BaselineFamily):
    """Families built from training samples ``references`` (R, *S), in model space."""

    needs_references = True

    def __init__(self, references: object = None) -> None:
        if not isinstance(references, torch.Tensor) or references.ndim < 2 or references.shape[0] == 0:
            raise InputError(f"baseline {self.name!r} needs references: a tensor of training samples")
        self.references = references.detach()

    def references_for(self, x: torch.Tensor) -> torch.Tensor:
        """The references in x's dtype and device, after checking their sample shape."""
        if self.references.shape[1:] != x.shape[1:]:
            raise InputError(
                f"references must have shape (R, {', '.join(map(str, x.shape[1:]))}), "
                f"got {tuple(self.references.shape)}"
            )
        return self.references.to(x.device, x.dtype)


@BASELINES.register("train_sample", stochastic=True, needs_references=True,
                    description="a random training sample (expected gradients, BEE)")  # fmt: skip
class TrainSample(_FromReferences):
    """BEE's train arm and expected gradients' baseline (Erion et al., Nature Machine Intelligence 2021):
    per draw, a reference row chosen uniformly (with replacement). Each sample draws ``randint(R,
    (count,))``."""

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        return self.references_for(x)[draw_indices(generators, self.references.shape[0], count).to(x.device)]


@BASELINES.register("train_mean", needs_references=True, description="the mean training sample")
class TrainMean(_FromReferences):
    """The element-wise mean of the references, the same for every input."""

    def _draw(self, x: torch.Tensor, generators: Sequence[torch.Generator], count: int) -> torch.Tensor:
        mean = self.references_for(x).mean(0)
        return mean.expand(x.shape[0], count, *mean.shape)
