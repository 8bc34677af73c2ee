"""Layer-wise relevance propagation (LRP) with rule composites.

LRP (Bach et al., 2015, "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
Relevance Propagation") starts from the target logit as the relevance of the output and hands each
layer's relevance R_k down to the layer's inputs by a rule, layer by layer, to the input features. With
a_j the layer's inputs, z_k its outputs and w_jk, b_k its weights and biases (Montavon, Binder,
Lapuschkin, Samek & Mueller, 2019, "Layer-Wise Relevance Propagation: An Overview"):

- epsilon:  R_j = sum_k a_j w_jk / (z_k + eps sign(z_k)) R_k, with z_k = sum_j a_j w_jk + b_k; eps = 0
  is LRP-0, which equals gradient x input on a ReLU network (Ancona et al., 2018);
- gamma:    the epsilon rule's form with every weight and bias rho(w) = w + gamma w^+ (favours positive
  contributions; lower convolutions); an output z_k < 0 boosts its negative contributions instead
  (zennit's generalised gamma, see ``Gamma``);
- z+ (alpha1beta0): only positive contributions, R_j = sum_k (a_j w_jk)^+ / (sum_j (a_j w_jk)^+ + b_k^+)
  R_k, signed inputs included ((a w)^+ = a^+ w^+ + a^- w^-; Montavon et al., 2017, deep Taylor
  decomposition);
- z^B (box): for the first layer, inputs bounded by l <= x <= h: R_i = sum_j (x_i w_ij - l_i w_ij^+ -
  h_i w_ij^-) / sum_i (...) R_j (Montavon et al., 2017);
- flat: for the first layer, each output's relevance spread evenly over the inputs it reads, whatever
  their values (Lapuschkin et al., 2019, "Unmasking Clever Hans Predictors");

and, whatever the composite: average pooling and the residual additions split relevance in proportion to
the inputs' contributions (the epsilon rule with a stabiliser of 1e-9, zennit's ``Norm``), ReLUs pass it
through unchanged, max pooling sends it to the maximum (its gradient), reshapes route it. Composites
assign the rules of weighted layers by type and position, as zennit's composites do:

- ``epsilon``: epsilon everywhere;
- ``alpha1beta0``: z+ everywhere;
- ``epsilon_plus``: z+ on convolutions, epsilon on dense layers;
- ``epsilon_plus_flat``: as epsilon_plus, the flat rule on the first layer (Kohlbrenner et al., 2020,
  "Towards Best Practice in Explaining Neural Network Decisions with LRP");
- ``epsilon_gamma_box`` (the default): z^B on the first layer, gamma on the other convolutions, epsilon on
  dense layers. The overview recommends for CNNs z^B on the pixels, gamma in the lower layers, epsilon
  in the middle and LRP-0 at the top (its VGG-16 example); assigned by layer type, as zennit's
  EpsilonGammaBox (the composite of zennit's example script) does, that is this composite.

The first layer is each Linear or convolution that no other such layer precedes, dense or convolutional
(zennit's code gives the box only to a first convolution; its documentation says the first linear
layer, as here, so that a dense model's inputs also get their bounds). The box bounds are ``low`` and
``high`` when given (the input domain, e.g. 0 and 1 for pixel values), else each sample's own minimum
and maximum: the input's value range, independent of which other samples share the batch.

Conservation: the input relevances sum to the target logit, except what biases (b_k / z_k of the
relevance at each epsilon layer, b_k^+ at z+ layers, rho(b_k) at gamma layers) and the stabilisers
absorb; on a bias-free network with a small epsilon the sum equals the logit (the box and flat rules
conserve exactly).

The model is first put in canonical form (``xaibench.attribution.canonize``): batch norm folded into the
layer before it, residual additions made explicit, on a deep copy of the model. The relevance of each
sample comes from one forward and one backward pass of that copy: forward hooks wrap each layer's
output in an autograd function whose backward applies the layer's rule to the relevance arriving from
above, so that the gradient the input receives is its relevance.

Differences from captum's ``LRP``, which the tests check against where the definitions coincide (the
epsilon rule; gamma and alpha1beta0 on bias-free layers with non-negative inputs): captum runs two
forward passes per call, rewriting the weights in the first; its ``GammaRule`` leaves the bias as it
is, and its ``Alpha1_Beta0_Rule`` keeps the whole bias in the denominator (a negative bias can flip or
blow up the relevance) and clamps only the weights (wrong for negative inputs); it has neither the flat
nor the z^B rule, no default rule for 1-D layers or Flatten, and differentiates a residual ``+`` (the
relevance counted twice) unless the model is rewritten with its ``Addition_Module``.

Float32 only: under a low-precision ``--dtype`` autograd hands the relevance from layer to layer in the
activations' precision, and relevances of both signs whose sum nearly cancels then lose their sum:
on a random ResNet-18 under bfloat16 autocast the input relevances summed to 0.0090 for a logit of
0.0067. (The rules themselves are computed in float32 even under autocast, so a direct call under
autocast still runs.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xaibench.attribution.base import METHODS, Method
from xaibench.attribution.canonize import (
    average_pools,
    canonical_copy,
    is_sum,
    weighted_layers,
)
from xaibench.attribution.chunks import map_chunks
from xaibench.core.errors import InputError, UnknownNameError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = lazy_import("torch")

COMPOSITES = ("epsilon_gamma_box", "epsilon_plus", "epsilon_plus_flat", "epsilon", "alpha1beta0")
#: the denominators' stabiliser of the rules without an epsilon of their own (captum's; zennit's is 1e-6):
#: it only keeps a denominator off 0, which would otherwise cost relevance on small activations
STABILIZER = 1e-9

Inputs = tuple["torch.Tensor", ...]
Rule = Callable[["nn.Module", Inputs, "torch.Tensor"], Inputs]


# ---------------------------------------------------------------------------------------------
# rules: (module, the layer's inputs, the relevance of its output) -> the relevance of each input


def _stabilized(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """z + epsilon sign(z), the sign of 0 taken as +1."""
    return z + epsilon * ((z >= 0).to(z.dtype) * 2 - 1)


def _messages(z: torch.Tensor, leaves: Inputs, relevance: torch.Tensor, epsilon: float) -> Inputs:
    """J^T (relevance / stabilised z) for each leaf that z was computed from; 0 where the denominator is
    exactly 0 (no input contributes to that output, so none can take its relevance)."""
    denominator = _stabilized(z.detach(), epsilon)
    zero = denominator == 0
    share = torch.where(zero, torch.zeros_like(relevance),
                        relevance / torch.where(zero, torch.ones_like(denominator), denominator))
    return torch.autograd.grad(z, leaves, share)


def _affine(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The Linear or convolution ``module`` with other weights (the convolution's padding kept)."""
    if isinstance(module, torch.nn.Linear):
        return torch.nn.functional.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)


@dataclasses.dataclass(frozen=True)
class Epsilon:
    """The epsilon rule on the module's own forward: R_in = x * J^T (R / (z + eps sign z)). With the
    fixed stabiliser it is the proportional split of pooling and residual sums (zennit's Norm)."""

    epsilon: float

    def __call__(self, module: nn.Module, inputs: Inputs, relevance: torch.Tensor) -> Inputs:
        with torch.enable_grad():
            leaves = tuple(x.requires_grad_(True) for x in inputs)
            messages = _messages(module.forward(*leaves), leaves, relevance, self.epsilon)
        return tuple(x.detach() * message for x, message in zip(leaves, messages))


@dataclasses.dataclass(frozen=True)
class Gamma:
    """The gamma rule: R_j = sum_k (c_jk + gamma c_jk^+) / (z_k + gamma z_k^+) R_k, c_jk = a_j w_jk, the
    bias a contribution of its own: with a_j >= 0 the overview's w + gamma w^+, b + gamma b^+ (Montavon
    et al. 2019). An output with z_k < 0 amplifies its negative contributions instead (zennit's
    generalised gamma): the denominator keeps z_k's sign and |z_k| at least, where the positive boost
    would drive it through 0. Only such outputs differ from the overview's rule, and behind a ReLU they
    carry no relevance; in a residual block the convolution before the sum feeds it signed outputs."""

    gamma: float

    def __call__(self, module: nn.Module, inputs: Inputs, relevance: torch.Tensor) -> Inputs:
        (x,) = inputs
        weight, bias = module.weight, module.bias
        with torch.enable_grad():
            positive = x.clamp(min=0).requires_grad_(True)  # leaves of their own, before x requires grad
            negative = x.clamp(max=0).requires_grad_(True)
            leaves = (x.requires_grad_(True), positive, negative)
            z = _affine(module, x, weight, bias)
            raised = _affine(module, positive, weight.clamp(min=0), None if bias is None else bias.clamp(min=0)) \
                + _affine(module, negative, weight.clamp(max=0), None)
            lowered = _affine(module, positive, weight.clamp(max=0), None if bias is None else bias.clamp(max=0)) \
                + _affine(module, negative, weight.clamp(min=0), None)
            boosted = z + self.gamma * torch.where(z.detach() >= 0, raised, lowered)
            messages = _messages(boosted, leaves, relevance, STABILIZER)
        return (sum(leaf.detach() * message for leaf, message in zip(leaves, messages)),)


@dataclasses.dataclass(frozen=True)
class ZPlus:
    """z+ / alpha1beta0: only the positive contributions (x w)^+ = x^+ w^+ + x^- w^- and b^+."""

    def __call__(self, module: nn.Module, inputs: Inputs, relevance: torch.Tensor) -> Inputs:
        (x,) = inputs
        weight, bias = module.weight, module.bias
        with torch.enable_grad():
            positive = x.clamp(min=0).requires_grad_(True)
            negative = x.clamp(max=0).requires_grad_(True)
            z = _affine(module, positive, weight.clamp(min=0), None if bias is None else bias.clamp(min=0)) \
                + _affine(module, negative, weight.clamp(max=0), None)
            from_positive, from_negative = _messages(z, (positive, negative), relevance, STABILIZER)
        return (positive.detach() * from_positive + negative.detach() * from_negative,)


@dataclasses.dataclass(frozen=True)
class Flat:
    """The flat rule: inputs and weights taken as 1, no bias: each output's relevance is split evenly over
    the inputs it reads (its receptive field)."""

    def __call__(self, module: nn.Module, inputs: Inputs, relevance: torch.Tensor) -> Inputs:
        (x,) = inputs
        with torch.enable_grad():
            ones = torch.ones_like(x).requires_grad_(True)
            (message,) = _messages(_affine(module, ones, torch.ones_like(module.weight), None), (ones,),
                                   relevance, STABILIZER)
        return (message,)


@dataclasses.dataclass(frozen=True)
class ZBox:
    """The z^B rule for inputs in [low, high]: R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / z_j R_j
    with z_j the sum over i of the numerators (no bias: it cancels between the three terms). A bound of
    None is each sample's own minimum or maximum over its features."""

    low: float | None
    high: float | None

    def __call__(self, module: nn.Module, inputs: Inputs, relevance: torch.Tensor) -> Inputs:
        (x,) = inputs
        weight = module.weight
        with torch.enable_grad():
            x.requires_grad_(True)
            low = self._bound(x, self.low, torch.amin).requires_grad_(True)
            high = self._bound(x, self.high, torch.amax).requires_grad_(True)
            z = _affine(module, x, weight, None) - _affine(module, low, weight.clamp(min=0), None) \
                - _affine(module, high, weight.clamp(max=0), None)
            from_x, from_low, from_high = _messages(z, (x, low, high), relevance, STABILIZER)
        # from_low and from_high carry the minus signs of z
        return (x.detach() * from_x + low.detach() * from_low + high.detach() * from_high,)

    @staticmethod
    def _bound(x: torch.Tensor, value: float | None, reduce: Callable[..., torch.Tensor]) -> torch.Tensor:
        if value is not None:
            return torch.full_like(x, value)
        per_sample = reduce(x.detach().flatten(1), dim=1).reshape(-1, *([1] * (x.ndim - 1)))
        return per_sample + torch.zeros_like(x)


def passing(module: nn.Module, inputs: Inputs, relevance: torch.Tensor) -> Inputs:
    """ReLU: the relevance passes unchanged (zennit's Pass)."""
    return (relevance,)


def layer_rule(composite: str, module: nn.Module, first: bool, params: Any) -> Rule:
    """The rule that ``composite`` gives a Linear or convolution, the first layer or not."""
    convolution = not isinstance(module, torch.nn.Linear)
    if first and composite == "epsilon_plus_flat":
        return Flat()
    if first and composite == "epsilon_gamma_box":
        return ZBox(params.low, params.high)
    if composite == "alpha1beta0" or (convolution and composite in ("epsilon_plus", "epsilon_plus_flat")):
        return ZPlus()
    if convolution and composite == "epsilon_gamma_box":
        return Gamma(params.gamma)
    return Epsilon(params.epsilon)


# ---------------------------------------------------------------------------------------------
# propagation


_PROPAGATION: list[type] = []  # built on first use: importing this module must not import torch


def _propagation() -> type:
    """An autograd function: the identity on a layer's output going forward, the layer's rule coming back."""
    if not _PROPAGATION:

        class Propagation(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, rule: Rule, module: nn.Module, output: torch.Tensor,
                        *inputs: torch.Tensor) -> torch.Tensor:
                ctx.rule, ctx.module = rule, module
                ctx.save_for_backward(*inputs)
                return output

            @staticmethod
            def backward(ctx: Any, relevance: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
                inputs = ctx.saved_tensors
                # float32 whatever the autocast of the forward pass: the rules divide by small z
                with torch.autocast(relevance.device.type, enabled=False):
                    propagated = ctx.rule(ctx.module, tuple(x.detach().float() for x in inputs),
                                          relevance.float())
                return (None, None, None, *(r.to(x.dtype) for r, x in zip(propagated, inputs, strict=True)))

        _PROPAGATION.append(Propagation)
    return _PROPAGATION[0]


def rule_hook(rule: Rule) -> Callable[..., torch.Tensor]:
    """A forward hook that makes a module's backward pass apply ``rule`` to the relevance."""

    def propagate(module: nn.Module, inputs: Inputs, output: torch.Tensor) -> torch.Tensor:
        return _propagation().apply(rule, module, output.detach(), *inputs)

    return propagate


def layer_rules(canonical: Any, composite: str, params: Any) -> dict[str, Rule]:
    """The rule of each module of the canonical model that has one, by name; routing layers (reshapes,
    max pooling, dropout) have none: their gradient is the rule."""
    rules: dict[str, Rule] = {}
    for name in canonical.modules:
        module = canonical.model.get_submodule(name)
        if type(module) in weighted_layers():
            rules[name] = layer_rule(composite, module, name in canonical.first, params)
        elif type(module) in average_pools() or is_sum(module):
            rules[name] = Epsilon(STABILIZER)
        elif type(module) is torch.nn.ReLU:
            rules[name] = passing
    return rules


def register_rules(canonical: Any, composite: str, params: Any) -> list[Any]:
    """Forward hooks on the canonical model's modules that apply ``composite``'s rules; returns the handles."""
    return [canonical.model.get_submodule(name).register_forward_hook(rule_hook(rule))
            for name, rule in layer_rules(canonical, composite, params).items()]


def relevance(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Input relevance of the target logits, one forward and one backward pass of a hooked model."""
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        picked = model(x).gather(1, target[:, None])
        (relevance_in,) = torch.autograd.grad(picked, x, grad_outputs=picked.detach())
    return relevance_in


@METHODS.register("lrp")
class LRP(Method):
    """Layer-wise relevance propagation (Bach et al., 2015) with the rule composites of Montavon et al.
    (2019) and zennit, on a canonized copy of the model (see the module docstring)."""

    modalities = ("image", "tabular", "sequence")  # not text: the composites have no rules for attention and layer norms
    float32_only = True  # relevance handed between layers in low precision loses its sum (module docstring)
    description = "layer-wise relevance propagation with rule composites (Bach et al. 2015; Montavon et al. 2019)"

    @dataclasses.dataclass(frozen=True)
    class Params:
        """composite: epsilon_gamma_box (z^B first layer, gamma on convolutions, epsilon on dense layers),
        epsilon_plus, epsilon_plus_flat, epsilon or alpha1beta0; epsilon: the epsilon rule's stabiliser
        (0 gives LRP-0); gamma: the gamma rule's weight on positive parameters; low, high: bounds of the
        input domain for the z^B rule (None: each sample's minimum and maximum)."""

        composite: str = "epsilon_gamma_box"
        epsilon: float = 1e-6
        gamma: float = 0.25
        low: float | None = None
        high: float | None = None

    def _attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        params: Params,
        batch_size: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        _check(params, inputs)
        canonical = canonical_copy(model)
        target = target.to(inputs.device)
        handles = register_rules(canonical, params.composite, params)
        try:
            return map_chunks(inputs, batch_size,
                              lambda rows: relevance(canonical.model, inputs[rows], target[rows]))
        finally:
            for handle in handles:
                handle.remove()


def _check(params: LRP.Params, inputs: torch.Tensor) -> None:
    if params.composite not in COMPOSITES:
        raise UnknownNameError.for_name("composite", params.composite, list(COMPOSITES), where="method 'lrp'")
    if params.epsilon < 0 or params.gamma < 0:
        raise InputError(f"lrp's epsilon and gamma must be at least 0, got {params.epsilon} and {params.gamma}")
    if params.low is not None and params.high is not None and params.low >= params.high:
        raise InputError(f"lrp's low bound ({params.low}) must be below its high bound ({params.high})")
    if params.low is not None and params.low > float(inputs.min()):
        raise InputError(f"lrp's low bound {params.low} is above the inputs' smallest value "
                         f"{float(inputs.min()):.4g}; pass the lower end of the input domain")
    if params.high is not None and params.high < float(inputs.max()):
        raise InputError(f"lrp's high bound {params.high} is below the inputs' largest value "
                         f"{float(inputs.max()):.4g}; pass the upper end of the input domain")
